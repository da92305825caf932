#!/usr/bin/env bash
# runner test N times in a row beside H CPU hogs, stopping at the first
# failure: how the suite's independence from host scheduling is measured
# (README, "RCU stall detection that survives host load").
# Usage: scripts/under-load.sh [RUNS=20] [HOGS=2] [runner test options...]
set -u
runs=${1:-20}
hogs=${2:-2}
shift $(( $# < 2 ? $# : 2 ))
cd "$(dirname "$0")/.."
cargo build --quiet --release -p runner || exit 1
pids=()
for _ in $(seq 1 "$hogs"); do
  yes > /dev/null &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null' EXIT INT TERM
log=$(mktemp -d)
for i in $(seq 1 "$runs"); do
  start=$(date +%s%N)
  ./target/release/runner test "$@" > "$log/run$i.log" 2>&1
  rc=$?
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  printf 'run %2d: rc %d, %d.%03d s, load %s: %s\n' "$i" "$rc" $((ms / 1000)) $((ms % 1000)) \
    "$(cut -d' ' -f1 /proc/loadavg)" "$(grep -E '^[0-9]+ passed' "$log/run$i.log")"
  if [ "$rc" -ne 0 ]; then
    echo "under-load: run $i of $runs failed; its output is $log/run$i.log" >&2
    exit 1
  fi
done
echo "under-load: $runs of $runs green beside $hogs hogs (logs in $log)"

#!/usr/bin/env bash
# Fuzzes every target (or the ones named) with the kept corpus as seeds,
# then minimises each corpus (cargo fuzz cmin on edge coverage) so
# fuzz/corpus stays small.
# New inputs are kept in fuzz/corpus/<target>/ (commit them: the workspace
# test adapters/tests/fuzz_corpus.rs replays them on every `cargo test`);
# a crash stops the script and leaves its input in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     each target for SECONDS (default 60)
#   RUNS=10000000 fuzz/run.sh 0 [TARGET...]   each target for RUNS executions
#
# Needs cargo-fuzz (cargo install cargo-fuzz --locked). On a stable Rust
# toolchain RUSTC_BOOTSTRAP=1 (set here) lets it use its nightly flags.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  if [ -n "${RUNS:-}" ]; then limit="-runs=$RUNS"; else limit="-max_total_time=$secs"; fi
  echo "== $t ($limit)"
  cargo fuzz run "$t" "corpus/$t" -- "$limit" -print_final_stats=1 2>&1 \
    | grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|Done)|ERROR|panicked' || true
  [ -z "$(ls -A "artifacts/$t" 2>/dev/null)" ] || { echo "crash: see fuzz/artifacts/$t" >&2; exit 1; }
  # Keep the inputs that reach new edges (not every new hit count: that
  # kept thousands of near-copies), so the committed corpus stays small.
  cargo fuzz cmin "$t" "corpus/$t" -- -use_counters=0 2>&1 | grep -E 'MERGE-OUTER: [0-9]+ new files' || true
  echo "   kept: $(ls "corpus/$t" | wc -l) inputs, $(du -sb "corpus/$t" | cut -f1) bytes"
done
du -sb corpus

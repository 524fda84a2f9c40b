#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang under ASan+UBSan into
# build-fuzz/ (apart from build/), then runs each on its seed corpus for a
# bounded time. Fails on any crash, leak, sanitizer report or broken property;
# the input that did it is saved as build-fuzz/findings/<target>/crash-*.
#
#   scripts/fuzz.sh [TARGET...]     (default: every target of tests/fuzz)
#   CELLFLOW_FUZZ_SECONDS=60        time per target (0: only replay the corpus)
#
# Inputs the fuzzer finds interesting go to build-fuzz/corpus/<target>/ (kept
# between runs); the committed seeds in tests/fuzz/corpus/<target>/ are only read.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${CELLFLOW_FUZZ_SECONDS:-60}
build=build-fuzz
export CCACHE_BASEDIR="$PWD"

if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCELLFLOW_FUZZ=ON -DBUILD_SHARED_LIBS=OFF
fi
cmake --build "$build" -j2

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for src in tests/fuzz/fuzz_*.cpp; do
    name=$(basename "$src" .cpp)
    targets+=("${name#fuzz_}")
  done
fi

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:symbolize=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
status=0
for t in "${targets[@]}"; do
  bin="$build/bin/fuzz_$t"
  seeds="tests/fuzz/corpus/$t"
  work="$build/corpus/$t"
  findings="$build/findings/$t"
  mkdir -p "$work" "$findings"
  args=(-timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1
        -artifact_prefix="$findings/")
  [ -f "tests/fuzz/$t.dict" ] && args+=(-dict="tests/fuzz/$t.dict")
  echo "fuzz: $t for ${seconds}s"
  if [ "$seconds" -gt 0 ]; then
    run=("$bin" "${args[@]}" -max_total_time="$seconds" "$work" "$seeds")
  else
    run=("$bin" "${args[@]}" -runs=0 "$seeds")
  fi
  if ! "${run[@]}" > "$build/fuzz-$t.log" 2>&1; then
    echo "fuzz: $t FAILED (log: $build/fuzz-$t.log; input: $findings/)"
    tail -n 40 "$build/fuzz-$t.log"
    status=1
  else
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ +DONE)' \
      "$build/fuzz-$t.log" | sed "s/^/fuzz: $t: /" || true
  fi
done
exit $status

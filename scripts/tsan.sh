#!/usr/bin/env bash
# ThreadSanitizer run of the thread cases of the test suites.
#
# TSan only sees the synchronization of code it instrumented. Debian's libtbb
# is not instrumented, so every hand-off of data to a TBB task (task_group,
# flow graph, parallel_for) is reported as a data race: hundreds of false
# positives. This script therefore builds the installed oneTBB version from
# Debian's source package with -fsanitize=thread (once, ~2 minutes on two
# cores) and runs the tests with it on LD_LIBRARY_PATH (same soname, same ABI).
#
#   scripts/tsan.sh                 # build (if needed) and run the default filters
#   GRAPH_FILTER='*' CACHE_FILTER='*' scripts/tsan.sh
#
# Environment: BUILD (default build-tsan), TBB_TSAN (where the instrumented
# oneTBB is built, default build-tsan-tbb), JOBS (default 2).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD:-$ROOT/build-tsan}"
TBB_TSAN="${TBB_TSAN:-$ROOT/build-tsan-tbb}"
JOBS="${JOBS:-2}"
GRAPH_FILTER="${GRAPH_FILTER:-Blockwise*}"
CACHE_FILTER="${CACHE_FILTER:-*Threads*:*Sequential*:MetadataLock*}"

tbb_lib_dir() { find "$TBB_TSAN/build" -name 'libtbb.so.12' -printf '%h\n' 2>/dev/null | head -1; }

if [[ -z "$(tbb_lib_dir)" ]]; then
  version="$(dpkg-query -W -f='${source:Version}' libtbb12 2>/dev/null || true)"
  [[ -n "$version" ]] || { echo "tsan.sh: libtbb12 is not installed (scripts/setup.sh)" >&2; exit 1; }
  mkdir -p "$TBB_TSAN/apt/lists/partial"
  # A private apt configuration with deb-src lines: the machine's sources stay untouched.
  cat > "$TBB_TSAN/apt/sources.list" <<'EOF'
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
EOF
  apt_opts=(-o "Dir::Etc::sourcelist=$TBB_TSAN/apt/sources.list" -o "Dir::Etc::sourceparts=-"
            -o "Dir::State::Lists=$TBB_TSAN/apt/lists")
  apt-get "${apt_opts[@]}" -qq update
  (cd "$TBB_TSAN" && apt-get "${apt_opts[@]}" -qq source --download-only "onetbb=$version")
  tar -C "$TBB_TSAN" -xf "$TBB_TSAN"/onetbb_*.orig.tar.*
  src="$(find "$TBB_TSAN" -maxdepth 1 -type d -name 'oneTBB-*' | head -1)"
  cmake -S "$src" -B "$TBB_TSAN/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DTBB_SANITIZE=thread -DTBB_TEST=OFF -DTBB_EXAMPLES=OFF -DTBBMALLOC_BUILD=OFF -DTBB_STRICT=OFF
  cmake --build "$TBB_TSAN/build" -j"$JOBS" --target tbb
fi
TBB_LIB="$(tbb_lib_dir)"

cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCELLFLOW_SANITIZE=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCELLFLOW_BUILD_BENCH=OFF
cmake --build "$BUILD" -j"$JOBS" --target cellflow_cache_tests cellflow_graph_tests

export LD_LIBRARY_PATH="$TBB_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-report_signal_unsafe=0 halt_on_error=0 exitcode=66}"
status=0
"$BUILD/bin/cellflow_graph_tests" --gtest_filter="$GRAPH_FILTER" || status=$?
"$BUILD/bin/cellflow_cache_tests" --gtest_filter="$CACHE_FILTER" || status=$?
exit "$status"

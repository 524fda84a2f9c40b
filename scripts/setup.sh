#!/usr/bin/env bash
# Installs the Debian packages cellflow needs (only the missing ones), then
# configures (once) and builds Release into build/. Idempotent; incremental
# when run again. Works from any directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# libgdcm-tools: ITK's CMake package references GDCM's programs; without them
# every configure prints warnings about missing /usr/bin/gdcm* files.
# python3-dask, -scipy, -joblib: the peers bench/compare_peers.py runs against.
# pybind11-dev, python3-dev, -numpy, -pytest: the Python package (python/) and its tests.
# clang, libclang-rt-14-dev (libFuzzer's runtime): the fuzz targets (scripts/fuzz.sh).
packages=(
  build-essential cmake ninja-build pkg-config ccache
  libgtest-dev libbenchmark-dev libtbb-dev libinsighttoolkit5-dev libfftw3-dev libgdcm-tools
  libboost-graph-dev libcereal-dev libfmt-dev libcli11-dev
  libblosc-dev libzstd-dev libxxhash-dev
  python3-zarr python3-numcodecs python3-jsonschema
  python3-dask python3-scipy python3-joblib
  pybind11-dev python3-pybind11 python3-dev python3-numpy python3-pytest
  clang-format clang-tidy clang libclang-rt-14-dev
  libopenmpi-dev openmpi-bin
)

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update
  "${sudo[@]}" apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
fi

# zarrita (tests/js, pinned by its package-lock.json): the independent Zarr v3
# reader and writer of the interop tests, under Node 20. Reinstalled only when
# the lock file changed since the last install.
if command -v npm >/dev/null 2>&1; then
  if ! cmp -s tests/js/package-lock.json tests/js/node_modules/.cellflow-installed-lock; then
    echo "setup: installing zarrita into tests/js/node_modules"
    (cd tests/js && npm ci --no-audit --no-fund &&
      cp package-lock.json node_modules/.cellflow-installed-lock)
  fi
else
  echo "setup: npm not found: install Node 20 and npm for the Zarr v3 interop tests" >&2
fi

# ccache keys on paths relative to the checkout, so a second clone (CI) reuses
# what the first one compiled.
export CCACHE_BASEDIR="$PWD"
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build build -j2

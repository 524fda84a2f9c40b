#!/usr/bin/env bash
# The store is the one owner of the cache directory (issue "The store"):
#  1. cellflow's own layout names (.cellflow-*, cellflow-cache.json, entry.json,
#     result.bin) are spelled only in cache/include/cellflow/store/layout.hpp;
#  2. the Zarr metadata names (.zattrs/.zarray/.zgroup) appear outside the
#     store only where cellflow reads or writes Zarr that is not the cache
#     (nodes/: read.zarr and the exporters);
#  3. no raw file-system call in cache/ (outside cache/src/store/) or graph/.
# Usage: store_boundary_test.sh SOURCE_DIR
set -uo pipefail
cd "$1" || exit 2
status=0
code=(cache graph nodes tools plugins python/src)
# A name as a path piece: the whole literal, or after/before a '/'.
layout_names='"(/?)(\.cellflow-[a-z-]+|cellflow-cache\.json|entry\.json|result\.bin)(/?)"'
hits=$(grep -rnE --include='*.cpp' --include='*.hpp' "$layout_names" "${code[@]}" 2>/dev/null |
  grep -v '^cache/include/cellflow/store/layout.hpp:' | grep -vE ':[0-9]+:\s*//')
if [ -n "$hits" ]; then
  echo "layout names spelled outside the store (use cellflow/store/layout.hpp):"; echo "$hits"; status=1
fi
zarr_names='"/?\.(zattrs|zarray|zgroup)"'
hits=$(grep -rnE --include='*.cpp' --include='*.hpp' "$zarr_names" cache graph tools plugins python/src 2>/dev/null |
  grep -v '^cache/include/cellflow/store/layout.hpp:' | grep -vE ':[0-9]+:\s*//')
if [ -n "$hits" ]; then
  echo "Zarr metadata names of the cache spelled outside the store:"; echo "$hits"; status=1
fi
raw='(^|[^A-Za-z_:])(::|std::)(open|openat|rename|renameat|unlink|unlinkat|mkdir|mkdirat|access|lstat|fstatat|opendir|flock|fsync|utimensat|remove)\(|fs::(remove|remove_all|create_directories|create_directory|directory_iterator|recursive_directory_iterator|exists|rename|is_directory|is_regular_file|symlink_status|last_write_time)\b'
# files.cpp: write_file_atomic/read_file for files outside the cache (graph
# JSON, --out files, exports); graph_def/op: the user's graph and input paths.
hits=$(grep -rnE --include='*.cpp' --include='*.hpp' "$raw" cache graph 2>/dev/null |
  grep -vE '^cache/src/store/|^cache/src/files.cpp:|^graph/src/op.cpp:' | grep -vE ':[0-9]+:\s*//')
if [ -n "$hits" ]; then
  echo "raw file-system calls in cache/ or graph/ outside the store:"; echo "$hits"; status=1
fi
[ $status -eq 0 ] && echo "store boundary: ok"
exit $status

#!/usr/bin/env bash
# The plugin ABI tag covers plugin.hpp and the headers it includes, not
# comment lines and not headers a plugin never sees.
# Usage: abi_tag_test.sh SOURCE_DIR
set -euo pipefail
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$src/cache/include" "$tmp/cache"
cp -r "$src/graph/include" "$tmp/graph"
cp -r "$src/plugins/include" "$tmp/plugins"
tag() {
  cmake -DOUT="$tmp/tag.hpp" -DROOT="$tmp/plugins/cellflow/plugins/plugin.hpp" \
    "-DINCLUDE_DIRS=$tmp/cache;$tmp/graph;$tmp/plugins" -P "$src/plugins/cmake/abi_tag.cmake"
  grep -o '"[0-9a-f]*"' "$tmp/tag.hpp"
}
base=$(tag)
echo "// a comment" >> "$tmp/cache/cellflow/cache/cache_scan.hpp"
echo "struct NotSeenByPlugins {};" >> "$tmp/cache/cellflow/cache/cache_scan.hpp"
[ "$(tag)" = "$base" ] || { echo "FAIL: a header plugins never include changed the tag"; exit 1; }
sed -i '1i // an edited comment' "$tmp/graph/cellflow/graph/op.hpp"
[ "$(tag)" = "$base" ] || { echo "FAIL: a comment edit changed the tag"; exit 1; }
echo "struct AddedToOp {};" >> "$tmp/graph/cellflow/graph/op.hpp"
[ "$(tag)" != "$base" ] || { echo "FAIL: a code change in op.hpp (included by plugin.hpp) kept the tag"; exit 1; }
echo "abi tag: ok"

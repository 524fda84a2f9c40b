// Umbrella header for users of cellflow: everything needed to build, run and
// read pipelines in C++. Memoization (cereal-heavy) is separate:
// #include "cellflow/cache/memoize.hpp".
#pragma once

#include "cellflow/cache/artifacts.hpp"
#include "cellflow/cache/box.hpp"
#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/cache_tree.hpp"
#include "cellflow/cache/cached_cell_image.hpp"
#include "cellflow/cache/cell_buffer.hpp"
#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/dtype.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/memory_cache.hpp"
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "cellflow/graph/op.hpp"
#include "cellflow/graph/provenance.hpp"
#include "cellflow/graph/registry.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/plugins/loader.hpp"

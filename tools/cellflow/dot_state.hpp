// `cellflow graph GRAPH --dot --cache DIR`: the graph's GraphViz text with
// every node coloured by what DIR holds of it — complete (green), partial
// (yellow) or missing (grey) — and "k/n cells" added to its label. Only reads
// the cache. Not thread-safe (called once from main()).
#pragma once

#include <filesystem>
#include <string>

#include "cellflow/graph/graph.hpp"

namespace cellflow::cli {

/// Rewrites `dot` (Graph::to_dot() of `graph`) with the cache state of each
/// node under `cache_root`. A cache that does not exist yet shows every node
/// missing.
std::string dot_with_cache_state(const Graph& graph, const std::string& dot,
                                 const std::filesystem::path& cache_root);

}  // namespace cellflow::cli

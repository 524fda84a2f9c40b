// Provenance: a cache directory describes itself. Every node folder stores its
// definition in .zattrs "cellflow" ({id, op, version, params, inputs: [{id,
// hash}], dtype, shape, cell_shape, identity?, code?, hash}); walking the input
// hashes rebuilds the graph that produced any node, which can then be
// inspected, re-run or replayed without the original graph file.
// Stateless functions; safe to call while other processes write the cache
// (they only read what is committed, except replay, which computes).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cellflow/cache/artifacts.hpp"
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "cellflow/graph/registry.hpp"

namespace cellflow {

/// True for 32 lowercase hex characters (a node hash or memo key).
bool is_node_hash(std::string_view text);

/// The definition stored for `hash` (.zattrs "cellflow"), or nullopt when the
/// cache has no such node. Throws InvalidArgument for a malformed hash,
/// CorruptionError when .zattrs exists but cannot be read as JSON.
std::optional<Value> stored_definition(const std::filesystem::path& cache_root,
                                       const std::string& hash);

/// The hash a stored definition (.zattrs "cellflow") was stored under, computed
/// again from its op, version, params, dtype, shape, cell_shape, input hashes,
/// identity and code build-id (node_hash()); nullopt when a field is missing or
/// malformed. A definition whose hash is not its folder's name was changed.
std::optional<std::string> definition_hash(const Value& definition);

/// The graph that produces one cached node, rebuilt from stored definitions.
struct CacheProvenance {
  GraphDef def;                               // inputs before users; outputs = {target_id}
  std::string target_id;                      // the id given to the requested node
  std::map<std::string, std::string> hashes;  // node id -> hash stored in the cache
  bool strict_code = false;                   // some node was hashed with its op's build-id
};

/// Walks the stored definitions from `hash` up to the sources. Ids are the
/// stored ids; when two different nodes stored the same id, the later one
/// becomes "<id>_<first 8 hex of its hash>". Throws GraphError naming the hash
/// whose definition is missing or malformed (and the node that needs it).
CacheProvenance graph_from_cache(const std::filesystem::path& cache_root, const std::string& hash);

/// Builds the rebuilt graph and checks that every node hashes to the hash it
/// was stored under. Throws GraphError naming the hash when an op is unknown
/// or its node's hash differs (op version, source data, or code changed).
Graph build_from_cache(const CacheProvenance& provenance, const Registry& registry,
                       std::optional<std::filesystem::path> cache_root = std::nullopt);

struct ReplayResult {
  Graph graph;
  size_t node = 0;  // the replayed node's index in graph
  RunReport report;
};

/// Completes the cached node `hash` from the stored definitions alone:
/// rebuilds and checks its graph, then computes only the missing cells (of
/// the node and of whatever they need). Errors as graph_from_cache / build_from_cache.
ReplayResult replay_from_cache(const std::filesystem::path& cache_root, const std::string& hash,
                               const Registry& registry, const RunOptions& options = {});

/// What one node folder holds (for `cellflow cache show`).
struct CachedNodeSummary {
  std::string hash;
  std::filesystem::path path;
  std::optional<Value> definition;  // nullopt: no readable .zattrs
  bool table = false;               // a table node (rows per cell) rather than an image
  bool complete_marker = false;
  int64_t cells_total = 0;  // 0 when the grid is unknown
  int64_t cells_present = 0;
  uint64_t bytes = 0;  // sum of the sizes of every file in the folder
  std::vector<ArtifactInfo> artifacts;
};

/// Reads the node folder of `hash`. Throws InvalidArgument if the cache has no
/// folder for it (or the hash is malformed).
CachedNodeSummary describe_cached_node(const std::filesystem::path& cache_root,
                                       const std::string& hash);

}  // namespace cellflow

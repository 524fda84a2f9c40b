// Graph: a validated, bound pipeline. Building it checks everything before
// anything is computed (ops, params, inputs, cycles, dtypes and shapes) and
// computes every node's hash. Node images are interned process-wide by
// (cache root, hash), so graphs that share a node share its cells.
// Thread-safe after construction (const methods and image()).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cellflow/cache/cached_cell_image.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "cellflow/graph/op.hpp"
#include "cellflow/graph/registry.hpp"
#include "cellflow/store/env.hpp"

namespace cellflow {

class CacheDirectory;

struct GraphOptions {
  /// Persist to this cache directory; nullopt keeps everything in memory.
  std::optional<std::filesystem::path> cache_root;
  /// Persist through this storage environment instead (e.g. a MemoryEnv in
  /// tests); its root names the cache. Overrides cache_root.
  std::shared_ptr<Env> cache_env;
  /// What a committed cell survives: a process kill (default) or a power cut
  /// (every cell, folder entry and marker fsync'ed; see the README's cost).
  Durability durability = Durability::kProcess;
  /// Adds the ELF build-id of the library implementing each op to its node's
  /// hash (and definition, as "code"), so that any rebuilt library
  /// invalidates its nodes. Default: an op is identified by name + version.
  bool strict_code = false;
};

/// One node of a built graph.
struct GraphNode {
  NodeDef def;
  std::shared_ptr<const Op> op;
  std::shared_ptr<NodeKernel> kernel;
  ImageInfo info;
  std::vector<size_t> inputs;  // indexes into Graph::nodes()
  std::string hash;            // 32 lowercase hex chars
  Value definition;            // what .zattrs["cellflow"] stores
  /// Its cells are stored in the graph's cache (when it has one); otherwise
  /// they live in memory only and are recomputed (a source: read again from
  /// its file) when evicted or needed by another process.
  bool persist = true;
};

class Graph {
 public:
  /// Validates and binds `def`. Throws GraphError / InvalidArgument naming the
  /// source, node and field. Nothing is written anywhere.
  static Graph build(GraphDef def, const Registry& registry, GraphOptions options = {});
  ~Graph();
  Graph(Graph&&) noexcept;
  Graph& operator=(Graph&&) noexcept;

  const GraphDef& def() const;
  const std::vector<GraphNode>& nodes() const;
  /// Index of a node id; throws InvalidArgument if unknown.
  size_t index(const std::string& id) const;
  const GraphNode& node(const std::string& id) const { return nodes()[index(id)]; }
  /// Node indexes in a topological order (inputs before users).
  const std::vector<size_t>& topological_order() const;
  /// The graph's outputs (def().outputs, or the sinks when none are listed).
  std::vector<size_t> outputs() const;
  /// The nodes `targets` depend on, including themselves, in topological order.
  std::vector<size_t> ancestors(const std::vector<size_t>& targets) const;
  const std::optional<std::filesystem::path>& cache_root() const;
  /// GraphViz text.
  std::string to_dot() const;

  /// The node's lazily evaluated image (created on first use; shared by every
  /// graph in the process that has the same node under the same cache root).
  std::shared_ptr<CachedCellImage> image(size_t node) const;
  std::shared_ptr<CachedCellImage> image(const std::string& id) const { return image(index(id)); }
  /// A table node's rows: computes its missing cells, then merges every cell's
  /// rows (NodeKernel::merge_rows). Throws InvalidArgument for an image node.
  Table table(size_t node) const;
  Table table(const std::string& id) const { return table(index(id)); }
  /// Runs the node's prepare() once per process (no-op for non-global ops).
  void prepare(size_t node) const;
  /// The cache directory, if persisting.
  CacheDirectory* cache() const;

 private:
  Graph();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The node's identity: XXH3-128 of its canonical encoding (op, version,
/// canonical params, dtype, shape, cell shape, input hashes in order, the
/// kernel's identity() when it has one, and the op library's build-id under
/// GraphOptions::strict_code).
std::string node_hash(const std::string& op, int version, const Value& params,
                      const ImageInfo& info, const std::vector<std::string>& input_hashes,
                      const std::string& identity = {}, const std::string& code_build_id = {});
/// 32 lowercase hex chars of XXH3-128 over `bytes`.
std::string hash_bytes(std::string_view bytes);

/// Node images are shared process-wide by cache root and hash: every graph
/// (and thread) holding the same node shares one image and its cells. The 256
/// most recently used images also stay alive after the last graph using them
/// is gone, so a pipeline rebuilt in the same process (a memory-only one
/// especially) reuses the cells the memory budget kept instead of recomputing
/// them. This releases those extra holds (images still used by a live Graph
/// stay); returns how many were released.
size_t drop_node_images();

}  // namespace cellflow

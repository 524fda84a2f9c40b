#include "cellflow/graph/graph.hpp"

#include <fmt/format.h>
#include <tbb/task_arena.h>
#include <xxhash.h>

#include <boost/graph/adjacency_list.hpp>
#include <boost/graph/depth_first_search.hpp>
#include <boost/graph/graphviz.hpp>
#include <boost/graph/topological_sort.hpp>
#include <cstring>
#include <list>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "cellflow/cache/artifacts.hpp"
#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/node_use_lock.hpp"
#include "cellflow/cache/parallel.hpp"
#include "cellflow/graph/code_identity.hpp"
#include "cellflow/graph/printable.hpp"
#include "cellflow/graph/suggest.hpp"
#include "cellflow/store/layout.hpp"

namespace cellflow {
namespace fs = std::filesystem;

namespace {
std::vector<std::string> node_ids(const GraphDef& def) {
  std::vector<std::string> ids;
  for (const NodeDef& nd : def.nodes) ids.push_back(nd.id);
  return ids;
}
}  // namespace
namespace {

using BoostGraph = boost::adjacency_list<boost::vecS, boost::vecS, boost::bidirectionalS>;

Value dims_value(const Dims& d) {
  Value::Array a;
  for (int64_t x : d) a.emplace_back(x);
  return Value(std::move(a));
}

// A node's image plus what its cells are computed from. Shared process-wide
// by every graph containing the node (same cache root and hash).
struct NodeImage {
  // The node's in-use lease (cellflow cache gc leaves the node alone while any
  // graph or image of this process holds it); destroyed last.
  NodeUseLock lease;
  std::shared_ptr<NodeKernel> kernel;
  std::vector<std::shared_ptr<NodeImage>> inputs;
  std::vector<ImageInfo> input_infos;
  std::string id;
  std::once_flag prepared;
  std::unique_ptr<CachedCellImage> image;
  // <cache>/<hash>/artifacts/, current while this node computes (null without a cache).
  std::unique_ptr<ArtifactWriter> artifacts;

  void ensure_prepared() {
    if (!kernel->needs_prepare()) return;
    const ScopedArtifacts scope(artifacts.get());
    // Isolated for the reason given in cached_cell_image.cpp; a failed prepare
    // is retried by the next caller.
    std::call_once(prepared, [&] {
      std::vector<CachedCellImage*> in;
      for (const auto& i : inputs) in.push_back(i->image.get());
      tbb::this_task_arena::isolate([&] { with_context("prepare", [&] { kernel->prepare(in); }); });
    });
  }

  CellBuffer compute(const Box& box) {
    ensure_prepared();
    const ScopedArtifacts scope(artifacts.get());
    std::vector<InputRegion> regions;
    regions.reserve(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Box r = kernel->input_region(i, box, input_infos[i]);
      // Kernels get their inputs const: a region that is one cell is shared.
      regions.push_back(InputRegion{r, inputs[i]->image->read_shared(r)});
    }
    if (kernel->output().kind == OutputKind::kTable) {
      const std::string bytes = kernel->compute_rows(box, regions).serialize();
      CellBuffer out = CellBuffer::allocate(DType::kU8, Shape{static_cast<int64_t>(bytes.size())});
      std::memcpy(out.mutable_data(), bytes.data(), bytes.size());
      return out;
    }
    CellBuffer out = CellBuffer::allocate(kernel->output().dtype, box.shape());
    kernel->compute(box, regions, out);
    return out;
  }
};

// The per-process registry of node images, keyed by cache root + hash.
// The process-wide node images, by cache root and hash. Images in use are
// shared (weakly held here); the most recently used kKept memory-only images
// are also held strongly, so a memory-only pipeline rebuilt in the same
// process finds its cells still in memory (as far as the memory budget kept
// them) instead of recomputing them. drop_node_images() releases those holds.
class NodeImages {
 public:
  static NodeImages& global() {
    // Never destroyed: the images it keeps must not be torn down during static
    // destruction, after the memory cache and TBB they use are gone.
    static NodeImages* instance = new NodeImages;
    return *instance;
  }

  template <class Make>
  std::shared_ptr<NodeImage> get_or_create(const std::string& key, bool keep, Make&& make) {
    std::lock_guard lock(mu_);
    std::shared_ptr<NodeImage> sp;
    if (auto it = images_.find(key); it != images_.end()) sp = it->second.lock();
    if (!sp) {
      sp = make();
      images_[key] = sp;
    }
    if (keep) keep_locked(key, sp);
    // Forget expired entries now and then so the map does not grow forever.
    if (images_.size() > 2 * live_hint_ + 64) {
      for (auto it = images_.begin(); it != images_.end();)
        it = it->second.expired() ? images_.erase(it) : std::next(it);
      live_hint_ = images_.size();
    }
    return sp;
  }

  size_t drop() {
    std::list<std::pair<std::string, std::shared_ptr<NodeImage>>> released;
    {
      std::lock_guard lock(mu_);
      released.swap(kept_);
      kept_index_.clear();
    }
    return released.size();  // destroyed here, outside the lock
  }

 private:
  static constexpr size_t kKept = 256;

  void keep_locked(const std::string& key, const std::shared_ptr<NodeImage>& sp) {
    if (auto it = kept_index_.find(key); it != kept_index_.end()) kept_.erase(it->second);
    kept_.emplace_front(key, sp);
    kept_index_[key] = kept_.begin();
    while (kept_.size() > kKept) {
      kept_index_.erase(kept_.back().first);
      kept_.pop_back();
    }
  }

  std::mutex mu_;
  std::unordered_map<std::string, std::weak_ptr<NodeImage>> images_;
  size_t live_hint_ = 0;
  std::list<std::pair<std::string, std::shared_ptr<NodeImage>>> kept_;  // most recent first
  std::unordered_map<std::string,
                     std::list<std::pair<std::string, std::shared_ptr<NodeImage>>>::iterator>
      kept_index_;
};

/// The physical space of node `n` just bound: the op's own when it set one;
/// else its first image input's of the same shape (ops that keep the grid);
/// else voxel space (a plugin op that changes the shape without saying how
/// the grid changes). Image inputs of one shape must lie on one grid.
Space node_space(const GraphNode& n, const std::vector<GraphNode>& nodes) {
  const int rank = n.info.shape.rank();
  const GraphNode* first_of_shape = nullptr;
  for (size_t a = 0; a < n.inputs.size(); ++a) {
    const GraphNode& in_a = nodes[n.inputs[a]];
    if (in_a.info.kind != OutputKind::kImage) continue;
    if (first_of_shape == nullptr && in_a.info.shape == n.info.shape) first_of_shape = &in_a;
    for (size_t b = a + 1; b < n.inputs.size(); ++b) {
      const GraphNode& in_b = nodes[n.inputs[b]];
      if (in_b.info.kind != OutputKind::kImage || !(in_b.info.shape == in_a.info.shape)) continue;
      if (!in_a.info.space.same_grid(in_b.info.space)) {
        throw GraphError(fmt::format(
            "field \"inputs\": \"{}\" and \"{}\" have the same shape but lie on different grids "
            "(spacing {} against {}); resample one onto the other's grid first",
            in_a.def.id, in_b.def.id, in_a.info.space.describe(), in_b.info.space.describe()));
      }
    }
  }
  if (!n.info.space.spacing.empty() || !n.info.space.origin.empty() ||
      !n.info.space.units.empty() || !n.info.space.axis_names.empty())
    return n.info.space.filled(rank);
  if (first_of_shape != nullptr) return first_of_shape->info.space;
  return Space::voxels(rank);
}

}  // namespace

size_t drop_node_images() { return NodeImages::global().drop(); }

std::string hash_bytes(std::string_view bytes) {
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return fmt::format("{:016x}{:016x}", h.high64, h.low64);
}

std::string node_hash(const std::string& op, int version, const Value& params,
                      const ImageInfo& info, const std::vector<std::string>& input_hashes,
                      const std::string& identity, const std::string& code_build_id) {
  Value v = Value::object();
  v.set("op", op);
  v.set("version", version);
  v.set("params", params);
  v.set("dtype", std::string(dtype_name(info.dtype)));
  v.set("shape", dims_value(info.shape));
  v.set("cell_shape", dims_value(info.cell_shape));
  Value::Array inputs;
  for (const auto& h : input_hashes) inputs.emplace_back(h);
  v.set("inputs", Value(std::move(inputs)));
  if (!identity.empty()) v.set("identity", identity);
  if (!code_build_id.empty()) v.set("code", code_build_id);
  return hash_bytes(to_canonical_json(v));
}

struct Graph::Impl {
  GraphDef def;
  std::vector<GraphNode> nodes;
  std::unordered_map<std::string, size_t> by_id;
  std::vector<size_t> topo;
  BoostGraph bg;
  std::optional<fs::path> cache_root;
  std::shared_ptr<Env> cache_env;
  Durability durability = Durability::kProcess;
  std::unique_ptr<CacheDirectory> cache;
  mutable std::mutex mu;
  mutable std::vector<std::shared_ptr<NodeImage>> images;

  std::shared_ptr<NodeImage> node_image(size_t i) const {
    std::lock_guard lock(mu);
    return node_image_locked(i);
  }

  std::shared_ptr<NodeImage> node_image_locked(size_t i) const {
    if (images[i]) return images[i];
    const GraphNode& n = nodes[i];
    std::vector<std::shared_ptr<NodeImage>> inputs;
    for (size_t in : n.inputs) inputs.push_back(node_image_locked(in));
    // Memory-only images are kept past their graphs (their cells exist nowhere
    // else); persisted ones reload from the cache and release their lease.
    const bool stored = cache && n.persist;
    const std::string key = (cache_root ? cache_root->string() : std::string()) + "|" + n.hash +
                            (stored ? "" : "|memory");
    images[i] = NodeImages::global().get_or_create(key, !stored, [&] {
      auto ni = std::make_shared<NodeImage>();
      ni->kernel = n.kernel;
      ni->inputs = inputs;
      for (size_t in : n.inputs) ni->input_infos.push_back(nodes[in].info);
      ni->id = n.def.id;
      const bool table = n.info.kind == OutputKind::kTable;
      std::shared_ptr<CellStore> store;
      if (stored) {
        store = with_context("node \"" + n.def.id + "\"", [&]() -> std::shared_ptr<CellStore> {
          // The lease first: gc must not remove the folder once it is opened.
          ni->lease = NodeUseLock::acquire(cache->env(), n.hash);
          const CellGrid grid(n.info.shape, n.info.cell_shape);
          if (table) return cache->open_table_node(n.hash, to_json_compact(n.definition));
          return cache->open_node(n.hash, n.info.dtype, grid, to_json_compact(n.definition),
                                  n.info.labels ? kNoShuffleForLabels : -1);
        });
      }
      if (stored)
        ni->artifacts = std::make_unique<ArtifactWriter>(cache->env(), layout::artifacts(n.hash));
      NodeImage* raw = ni.get();
      // The image's name is its error-context frame: node "smooth": cell (1,0,2): ...
      ni->image = std::make_unique<CachedCellImage>(
          "node \"" + n.def.id + "\"", CellGrid(n.info.shape, n.info.cell_shape), n.info.dtype,
          [raw](const CellIndex&, const Box& box) { return raw->compute(box); }, std::move(store),
          nullptr, table);
      return ni;
    });
    return images[i];
  }
};

Graph::Graph() : impl_(std::make_unique<Impl>()) {}
Graph::~Graph() = default;
Graph::Graph(Graph&&) noexcept = default;
Graph& Graph::operator=(Graph&&) noexcept = default;

Graph Graph::build(GraphDef def, const Registry& registry, GraphOptions options) {
  Graph g;
  Impl& m = *g.impl_;
  const std::string source = def.source.empty() ? std::string("graph") : def.source;
  const auto fail = [&](const std::string& where, const std::string& what) {
    return GraphError(fmt::format("{}: {}{}", source, where.empty() ? "" : where + ": ", what));
  };
  if (def.nodes.empty()) throw fail("", "the graph has no nodes");

  // Ids, ops and inputs.
  for (size_t i = 0; i < def.nodes.size(); ++i) {
    const NodeDef& nd = def.nodes[i];
    if (!m.by_id.emplace(nd.id, i).second)
      throw fail(fmt::format("node \"{}\"", nd.id), "duplicate node id");
  }
  m.nodes.resize(def.nodes.size());
  m.bg = BoostGraph(def.nodes.size());
  for (size_t i = 0; i < def.nodes.size(); ++i) {
    const NodeDef& nd = def.nodes[i];
    const std::string where = fmt::format("node \"{}\"", nd.id);
    GraphNode& n = m.nodes[i];
    n.def = nd;
    n.op = registry.find(nd.op);
    if (n.op) n.persist = nd.persist.value_or(n.op->persist_by_default());
    if (!n.op) {
      std::vector<std::string> names;
      for (const auto& op : registry.list()) names.emplace_back(op->name());
      throw fail(where, fmt::format("unknown op \"{}\"{} (`cellflow ops` lists the known ops)",
                                    nd.op, did_you_mean(nd.op, names)));
    }
    const int count = static_cast<int>(nd.inputs.size());
    if (count < n.op->min_inputs() || count > n.op->max_inputs()) {
      const std::string expected =
          n.op->min_inputs() == n.op->max_inputs()
              ? std::to_string(n.op->min_inputs())
              : fmt::format("{} to {}", n.op->min_inputs(), n.op->max_inputs());
      throw fail(where, fmt::format("field \"inputs\": op \"{}\" takes {} input(s), got {}", nd.op,
                                    expected, count));
    }
    for (const auto& in : nd.inputs) {
      auto it = m.by_id.find(in);
      if (it == m.by_id.end())
        throw fail(where, fmt::format("field \"inputs\": \"{}\" is not a node of the graph{}", in,
                                      did_you_mean(in, node_ids(def))));
      n.inputs.push_back(it->second);
      boost::add_edge(it->second, i, m.bg);
    }
  }
  for (const auto& out : def.outputs)
    if (!m.by_id.count(out))
      throw fail("field \"outputs\"", fmt::format("\"{}\" is not a node of the graph{}", out,
                                                  did_you_mean(out, node_ids(def))));

  // Cycles: a back edge found by depth-first search closes one.
  struct CycleFinder : boost::default_dfs_visitor {
    std::optional<std::pair<size_t, size_t>>* found;
    void back_edge(BoostGraph::edge_descriptor e, const BoostGraph& bg) const {
      if (!*found) *found = std::make_pair(boost::source(e, bg), boost::target(e, bg));
    }
  };
  std::optional<std::pair<size_t, size_t>> back;
  CycleFinder finder;
  finder.found = &back;
  boost::depth_first_search(m.bg, boost::visitor(finder));
  if (back) {
    throw fail(fmt::format("node \"{}\"", def.nodes[back->second].id),
               fmt::format("field \"inputs\": the graph has a cycle (\"{}\" depends on \"{}\", "
                           "which depends on it)",
                           def.nodes[back->second].id, def.nodes[back->first].id));
  }
  std::vector<size_t> reversed;
  boost::topological_sort(m.bg, std::back_inserter(reversed));
  m.topo.assign(reversed.rbegin(), reversed.rend());

  // Params, binding, output info and hashes, inputs first.
  for (size_t i : m.topo) {
    GraphNode& n = m.nodes[i];
    try {
      const Params params = validate_params(n.op->params(), n.def.params, def.base_dir);
      std::vector<ImageInfo> infos;
      std::vector<std::string> input_hashes;
      for (size_t k = 0; k < n.inputs.size(); ++k) {
        const GraphNode& in = m.nodes[n.inputs[k]];
        if (in.info.kind == OutputKind::kTable && !n.op->accepts_table_inputs())
          throw GraphError(
              fmt::format("field \"inputs\": \"{}\" is a table (op {}), but op \"{}\" takes images",
                          in.def.id, in.def.op, n.def.op));
        infos.push_back(in.info);
        input_hashes.push_back(in.hash);
      }
      n.kernel = std::shared_ptr<NodeKernel>(n.op->bind(params, infos));
      n.info = n.kernel->output();
      n.info.space = node_space(n, m.nodes);
      // A table's cells are stored as serialized rows (bytes), whatever the op declared.
      if (n.info.kind == OutputKind::kTable) n.info.dtype = DType::kU8;
      (void)CellGrid(n.info.shape, n.info.cell_shape);  // validates rank and sizes
      const std::string identity = n.kernel->identity();
      std::optional<CodeIdentity> code;
      if (options.strict_code) {
        code = code_identity(*n.op);
        if (!code || code->build_id.empty())
          throw InvalidArgument(
              fmt::format("--strict-code: op \"{}\" has no ELF build-id (library {}): link it with "
                          "-Wl,--build-id",
                          n.op->name(), code ? code->library : std::string("unknown")));
      }
      n.hash = node_hash(std::string(n.op->name()), n.op->version(), params.value(), n.info,
                         input_hashes, identity, code ? code->build_id : std::string());
      Value d = Value::object();
      d.set("id", n.def.id);
      d.set("op", std::string(n.op->name()));
      d.set("version", n.op->version());
      d.set("params", params.value());
      Value::Array ins;
      for (size_t k = 0; k < n.inputs.size(); ++k) {
        Value in = Value::object();
        in.set("id", n.def.inputs[k]);
        in.set("hash", input_hashes[k]);
        ins.push_back(std::move(in));
      }
      d.set("inputs", Value(std::move(ins)));
      d.set("dtype", std::string(dtype_name(n.info.dtype)));
      d.set("shape", dims_value(n.info.shape));
      d.set("cell_shape", dims_value(n.info.cell_shape));
      if (!identity.empty()) d.set("identity", identity);
      if (code) {
        Value c = Value::object();
        c.set("library", std::filesystem::path(code->library).filename().string());
        c.set("build_id", code->build_id);
        d.set("code", std::move(c));
      }
      d.set("hash", n.hash);
      n.definition = std::move(d);
    } catch (Error& e) {
      e.add_context(fmt::format("node \"{}\"", n.def.id));
      e.add_context(source);
      throw;
    }
  }
  m.def = std::move(def);
  m.cache_root =
      options.cache_env ? std::optional<fs::path>(options.cache_env->root()) : options.cache_root;
  m.cache_env = options.cache_env;
  m.durability = options.durability;
  m.images.resize(m.nodes.size());
  return g;
}

const GraphDef& Graph::def() const { return impl_->def; }
const std::vector<GraphNode>& Graph::nodes() const { return impl_->nodes; }

size_t Graph::index(const std::string& id) const {
  auto it = impl_->by_id.find(id);
  if (it == impl_->by_id.end())
    throw InvalidArgument(fmt::format("\"{}\" is not a node of the graph", id));
  return it->second;
}

const std::vector<size_t>& Graph::topological_order() const { return impl_->topo; }

std::vector<size_t> Graph::outputs() const {
  std::vector<size_t> out;
  for (const auto& id : impl_->def.outputs) out.push_back(index(id));
  if (out.empty()) {
    for (size_t i = 0; i < impl_->nodes.size(); ++i)
      if (boost::out_degree(i, impl_->bg) == 0) out.push_back(i);
  }
  return out;
}

std::vector<size_t> Graph::ancestors(const std::vector<size_t>& targets) const {
  std::vector<char> mark(impl_->nodes.size(), 0);
  std::vector<size_t> stack(targets.begin(), targets.end());
  while (!stack.empty()) {
    const size_t i = stack.back();
    stack.pop_back();
    if (mark[i]) continue;
    mark[i] = 1;
    for (size_t in : impl_->nodes[i].inputs) stack.push_back(in);
  }
  std::vector<size_t> out;
  for (size_t i : impl_->topo)
    if (mark[i]) out.push_back(i);
  return out;
}

const std::optional<fs::path>& Graph::cache_root() const { return impl_->cache_root; }

CacheDirectory* Graph::cache() const {
  std::lock_guard lock(impl_->mu);
  if (!impl_->cache && impl_->cache_env)
    impl_->cache = std::make_unique<CacheDirectory>(impl_->cache_env, impl_->durability);
  else if (!impl_->cache && impl_->cache_root)
    impl_->cache = std::make_unique<CacheDirectory>(*impl_->cache_root, impl_->durability);
  return impl_->cache.get();
}

std::string Graph::to_dot() const {
  const auto& nodes = impl_->nodes;
  std::ostringstream out;
  const auto label = [&](std::ostream& os, size_t v) {
    const GraphNode& n = nodes[v];
    // A table is described as one (its cells hold rows, not u8 voxels).
    std::string output =
        fmt::format("{} {}", dtype_name(n.info.dtype), fmt::join(n.info.shape, "x"));
    if (n.info.kind == OutputKind::kTable) {
      const std::vector<std::string> columns = n.kernel->table_columns();
      output = columns.empty() ? "table" : fmt::format("table, {} columns", columns.size());
    }
    // Ids and ops are anyone's text: escaped, the DOT stays valid.
    os << fmt::format("[label=\"{}\\n{}\\n{}\\n{}\"]", dot_quoted_text(n.def.id),
                      dot_quoted_text(n.def.op), output, n.hash.substr(0, 12));
  };
  boost::write_graphviz(out, impl_->bg, label);
  return out.str();
}

std::shared_ptr<CachedCellImage> Graph::image(size_t node) const {
  if (node >= impl_->nodes.size())
    throw InvalidArgument(fmt::format("node index {} out of range", node));
  cache();  // open the cache directory before the first image needs it
  auto ni = impl_->node_image(node);
  return std::shared_ptr<CachedCellImage>(ni, ni->image.get());
}

Table Graph::table(size_t node) const {
  const GraphNode& n = nodes().at(node);
  if (n.info.kind != OutputKind::kTable)
    throw InvalidArgument(
        fmt::format("node \"{}\" (op {}) produces an image, not a table", n.def.id, n.def.op));
  auto img = image(node);
  const CellGrid& grid = img->grid();
  std::vector<Table> parts(static_cast<size_t>(grid.num_cells()));
  parallel_for_all(grid.num_cells(), [&](int64_t c) {
    const CellIndex cell = grid.cell_at(c);
    const CellBuffer b = img->get(cell);
    parts[static_cast<size_t>(c)] =
        Table::deserialize(std::string_view(reinterpret_cast<const char*>(b.data()), b.num_bytes()),
                           fmt::format("node \"{}\": cell {}", n.def.id, cell.str()));
  });
  return with_context(fmt::format("node \"{}\"", n.def.id),
                      [&] { return n.kernel->merge_rows(std::move(parts)); });
}

void Graph::prepare(size_t node) const { impl_->node_image(node)->ensure_prepared(); }

}  // namespace cellflow

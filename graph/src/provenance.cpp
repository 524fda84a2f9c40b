#include "cellflow/graph/provenance.hpp"

#include <fmt/format.h>

#include <functional>
#include <set>
#include <unordered_map>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/table_store.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/graph/code_identity.hpp"
#include "cellflow/store/cache_files.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

std::string where(const fs::path& root) { return fmt::format("cache {}", root.string()); }

void check_hash(const std::string& hash) {
  if (!is_node_hash(hash))
    throw InvalidArgument(
        fmt::format("\"{}\" is not a node hash (32 lowercase hex characters)", hash));
}

std::string field_string(const Value& def, const char* field) {
  const Value* v = def.find(field);
  return v != nullptr && v->is_string() ? v->as_string() : std::string();
}

std::string describe(const std::string& hash, const Value& def) {
  const std::string id = field_string(def, "id");
  const std::string op = field_string(def, "op");
  return fmt::format("node {} (id \"{}\", op \"{}\")", hash, id, op);
}

std::optional<Shape> shape_field(const Value& def, const char* field) {
  const Value* v = def.find(field);
  if (v == nullptr || !v->is_array() || v->as_array().empty() || v->as_array().size() > kMaxRank)
    return std::nullopt;
  Shape s(static_cast<int>(v->as_array().size()));
  for (size_t i = 0; i < v->as_array().size(); ++i) {
    if (!v->as_array()[i].is_int()) return std::nullopt;
    s[static_cast<int>(i)] = v->as_array()[i].as_int();
  }
  return s;
}

}  // namespace

bool is_node_hash(std::string_view text) {
  if (text.size() != 32) return false;
  for (char c : text)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::optional<Value> stored_definition(const fs::path& cache_root, const std::string& hash) {
  check_hash(hash);
  const auto env = open_existing_cache(cache_root);
  if (!env) return std::nullopt;
  try {
    return read_node_definition(*env, hash);
  } catch (const Error& e) {
    throw CorruptionError(fmt::format("{}: node {}: its definition cannot be read: {}",
                                      where(cache_root), hash, e.what()));
  }
}

std::optional<std::string> definition_hash(const Value& def) {
  if (!def.is_object()) return std::nullopt;
  const Value* op = def.find("op");
  const Value* version = def.find("version");
  const Value* params = def.find("params");
  const Value* dtype = def.find("dtype");
  if (op == nullptr || !op->is_string() || version == nullptr || !version->is_int() ||
      params == nullptr || dtype == nullptr || !dtype->is_string())
    return std::nullopt;
  ImageInfo info;
  const auto parsed = parse_dtype(dtype->as_string());
  const auto shape = shape_field(def, "shape");
  const auto cells = shape_field(def, "cell_shape");
  if (!parsed || !shape || !cells) return std::nullopt;
  info.dtype = *parsed;
  info.shape = *shape;
  info.cell_shape = *cells;
  std::vector<std::string> inputs;
  if (const Value* in = def.find("inputs"); in != nullptr) {
    if (!in->is_array()) return std::nullopt;
    for (const Value& i : in->as_array()) {
      const Value* h = i.is_object() ? i.find("hash") : nullptr;
      if (h == nullptr || !h->is_string()) return std::nullopt;
      inputs.push_back(h->as_string());
    }
  }
  std::string identity;
  if (const Value* id = def.find("identity"); id != nullptr) {
    if (!id->is_string()) return std::nullopt;
    identity = id->as_string();
  }
  std::string build_id;
  if (const Value* code = def.find("code"); code != nullptr) {
    const Value* b = code->is_object() ? code->find("build_id") : nullptr;
    if (b == nullptr || !b->is_string()) return std::nullopt;
    build_id = b->as_string();
  }
  return node_hash(op->as_string(), static_cast<int>(version->as_int()), *params, info, inputs,
                   identity, build_id);
}

CacheProvenance graph_from_cache(const fs::path& cache_root, const std::string& hash) {
  check_hash(hash);
  CacheProvenance out;
  out.def.name = "from-cache-" + hash.substr(0, 8);
  out.def.source = fmt::format("{} (node {})", where(cache_root), hash);
  std::unordered_map<std::string, std::string> id_of_hash;
  std::set<std::string> on_path;  // cycle guard (a hand-edited cache)

  const std::function<void(const std::string&, const std::string&)> visit =
      [&](const std::string& h, const std::string& needed_by) {
        if (id_of_hash.count(h)) return;
        const std::string context =
            needed_by.empty() ? std::string() : fmt::format(", needed by {}", needed_by);
        if (!is_node_hash(h))
          throw GraphError(
              fmt::format("{}: malformed input hash \"{}\"{}", where(cache_root), h, context));
        if (!on_path.insert(h).second)
          throw GraphError(fmt::format("{}: node {}: the stored definitions form a cycle",
                                       where(cache_root), h));
        std::optional<Value> def;
        try {
          def = stored_definition(cache_root, h);
        } catch (const CorruptionError& e) {
          throw GraphError(std::string(e.what()) + context);
        }
        if (!def)
          throw GraphError(fmt::format("{}: node {} has no stored definition ({} is missing){}",
                                       where(cache_root), h,
                                       node_definition_path(cache_root, h).string(), context));
        const std::string self = describe(h, *def);
        const std::string op = field_string(*def, "op");
        if (op.empty())
          throw GraphError(
              fmt::format("{}: {}: the stored definition has no \"op\"", where(cache_root), self));
        const Value* params = def->find("params");
        if (params != nullptr && !params->is_object())
          throw GraphError(fmt::format("{}: {}: the stored \"params\" is not an object",
                                       where(cache_root), self));
        const Value* inputs = def->find("inputs");
        if (inputs != nullptr && !inputs->is_array())
          throw GraphError(
              fmt::format("{}: {}: the stored \"inputs\" is not a list", where(cache_root), self));
        std::vector<std::string> input_hashes;
        if (inputs != nullptr) {
          for (const Value& in : inputs->as_array()) {
            const Value* ih = in.is_object() ? in.find("hash") : nullptr;
            if (ih == nullptr || !ih->is_string())
              throw GraphError(
                  fmt::format("{}: {}: a stored input has no \"hash\"", where(cache_root), self));
            input_hashes.push_back(ih->as_string());
          }
        }
        for (const std::string& ih : input_hashes) visit(ih, self);
        on_path.erase(h);

        std::string id = field_string(*def, "id");
        if (id.empty()) id = "node";
        if (out.hashes.count(id)) {
          for (size_t len = 8; len <= h.size(); len += 8) {
            const std::string candidate = fmt::format("{}_{}", id, h.substr(0, len));
            if (!out.hashes.count(candidate)) {
              id = candidate;
              break;
            }
          }
        }
        id_of_hash[h] = id;
        out.hashes[id] = h;
        if (def->find("code") != nullptr) out.strict_code = true;
        NodeDef nd;
        nd.id = id;
        nd.op = op;
        for (const std::string& ih : input_hashes) nd.inputs.push_back(id_of_hash.at(ih));
        if (params != nullptr) nd.params = *params;
        out.def.nodes.push_back(std::move(nd));
      };
  visit(hash, "");
  out.target_id = id_of_hash.at(hash);
  out.def.outputs = {out.target_id};
  return out;
}

Graph build_from_cache(const CacheProvenance& provenance, const Registry& registry,
                       std::optional<fs::path> cache_root) {
  const std::string& source = provenance.def.source;
  for (const NodeDef& nd : provenance.def.nodes) {
    if (!registry.find(nd.op))
      throw GraphError(fmt::format(
          "{}: node {} (id \"{}\"): unknown op \"{}\" (`cellflow ops` lists the known ops; "
          "load the plugin that provides it)",
          source, provenance.hashes.at(nd.id), nd.id, nd.op));
  }
  GraphOptions options;
  options.cache_root = std::move(cache_root);
  options.strict_code = provenance.strict_code;
  Graph graph = Graph::build(provenance.def, registry, options);
  // Topological order: the first node that differs is the cause of the rest.
  for (size_t i : graph.topological_order()) {
    const GraphNode& n = graph.nodes()[i];
    const std::string& stored = provenance.hashes.at(n.def.id);
    if (n.hash == stored) continue;
    std::string why = "its op, params or inputs hash differently now";
    if (fs::path root = options.cache_root.value_or(fs::path()); !root.empty()) {
      if (auto def = stored_definition(root, stored)) {
        const Value* version = def->find("version");
        const Value* identity = def->find("identity");
        const Value* code = def->find("code");
        const Value* now_identity = n.definition.find("identity");
        const Value* now_code = n.definition.find("code");
        if (version != nullptr && version->is_int() && version->as_int() != n.op->version()) {
          why =
              fmt::format("it was stored by op \"{}\" version {}, the registered op is version {}",
                          n.def.op, version->as_int(), n.op->version());
        } else if ((identity == nullptr) != (now_identity == nullptr) ||
                   (identity != nullptr && !(*identity == *now_identity))) {
          why = fmt::format("its source data changed (stored identity {}, now {})",
                            identity ? to_json_compact(*identity) : "none",
                            now_identity ? to_json_compact(*now_identity) : "none");
        } else if (code != nullptr && now_code != nullptr && !(*code == *now_code)) {
          why = fmt::format("its op's library was rebuilt (stored {}, now {})",
                            to_json_compact(*code), to_json_compact(*now_code));
        }
      }
    }
    throw GraphError(fmt::format("{}: node {} (id \"{}\") rebuilds with hash {}: {}", source,
                                 stored, n.def.id, n.hash, why));
  }
  return graph;
}

ReplayResult replay_from_cache(const fs::path& cache_root, const std::string& hash,
                               const Registry& registry, const RunOptions& options) {
  const CacheProvenance provenance = graph_from_cache(cache_root, hash);
  Graph graph = build_from_cache(provenance, registry, cache_root);
  const size_t node = graph.index(provenance.target_id);
  RunReport report = materialize(graph, {node}, options);
  return ReplayResult{std::move(graph), node, std::move(report)};
}

CachedNodeSummary describe_cached_node(const fs::path& cache_root, const std::string& hash) {
  check_hash(hash);
  CachedNodeSummary s;
  s.hash = hash;
  const auto env = open_existing_cache(cache_root);
  s.path = node_folder_path(cache_root, hash);
  const NodeFolderState state = env ? node_folder_state(*env, hash) : NodeFolderState{};
  if (state.folder != EntryKind::kFolder)
    throw InvalidArgument(
        fmt::format("{}: no node {} (no folder {})", where(cache_root), hash, s.path.string()));
  try {
    s.definition = stored_definition(cache_root, hash);
  } catch (const CorruptionError&) {
    s.definition = std::nullopt;
  }
  s.complete_marker = state.complete_marker;
  const bool image = state.image;
  s.table = state.table;
  if (s.definition) {
    const auto shape = shape_field(*s.definition, "shape");
    const auto cells = shape_field(*s.definition, "cell_shape");
    if (shape && cells && shape->rank() == cells->rank()) {
      try {
        const CellGrid grid(*shape, *cells);
        s.cells_total = grid.num_cells();
        std::shared_ptr<CellStore> store = open_node_cells(env, hash, image);
        s.table = !image;
        for (int64_t c = 0; c < s.cells_total; ++c)
          if (store->contains(grid.cell_at(c))) ++s.cells_present;
      } catch (const Error&) {
        // An unreadable grid or array: state unknown, reported as 0 present.
      }
    }
  }
  s.bytes = node_file_bytes(*env, hash);
  if (state.artifacts) s.artifacts = ArtifactWriter(node_artifacts_path(cache_root, hash)).list();
  return s;
}

}  // namespace cellflow

#include "cellflow/cache/cache_directory.hpp"

#include <fmt/format.h>

#include <atomic>
#include <cstdlib>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/store/cache_files.hpp"
#include "cellflow/store/layout.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

// Metadata is written once per node: it is always made durable, so that a
// power cut never loses what a node is (cells follow the cache's policy).
constexpr Durability kMetadataDurability = Durability::kPowerCut;

// NGFF axis names for ranks 2..5 (time, channel, then space).
Value axes_for_rank(int rank) {
  static const char* const kNames[] = {"t", "c", "z", "y", "x"};
  static const char* const kTypes[] = {"time", "channel", "space", "space", "space"};
  Value::Array axes;
  for (int i = kMaxRank - rank; i < kMaxRank; ++i) {
    Value a = Value::object();
    a.set("name", kNames[i]);
    a.set("type", kTypes[i]);
    axes.push_back(std::move(a));
  }
  return Value(std::move(axes));
}

Dims dims_of(const Value* v) {
  if (v == nullptr || !v->is_array()) throw CorruptionError("its definition has no shape");
  Dims d(static_cast<int>(v->as_array().size()));
  for (int i = 0; i < d.rank(); ++i) d[i] = v->as_array()[static_cast<size_t>(i)].as_int();
  return d;
}

}  // namespace

std::string node_zattrs_json(const std::string& name, int rank,
                             const std::string& definition_json) {
  Value attrs = Value::object();
  if (rank >= 2 && rank <= kMaxRank) {
    Value scale = Value::object();
    scale.set("type", "scale");
    Value::Array ones;
    for (int i = 0; i < rank; ++i) ones.emplace_back(1.0);
    scale.set("scale", Value(std::move(ones)));
    Value dataset = Value::object();
    dataset.set("path", "0");
    dataset.set("coordinateTransformations", Value(Value::Array{std::move(scale)}));
    Value ms = Value::object();
    ms.set("version", "0.4");
    ms.set("name", name);
    ms.set("axes", axes_for_rank(rank));
    ms.set("datasets", Value(Value::Array{std::move(dataset)}));
    attrs.set("multiscales", Value(Value::Array{std::move(ms)}));
  }
  attrs.set("cellflow", parse_json(definition_json, "node definition"));
  return to_json(attrs);
}

std::optional<int> cache_format(Env& env) {
  const auto text = env.read(layout::kFormatFile);
  if (!text) return std::nullopt;
  try {
    const Value v = parse_json(*text, env.describe(layout::kFormatFile));
    if (const Value* f = v.find("format"); f != nullptr && f->is_int())
      return static_cast<int>(f->as_int());
  } catch (const Error&) {
  }
  return -1;
}

int64_t cache_shard_cells(Env& env) {
  try {
    // Damage (a link, a folder, unparsable text) is verify's to report.
    const auto text = env.read(layout::kFormatFile);
    if (!text) return 0;
    const Value v = parse_json(*text, env.describe(layout::kFormatFile));
    const Value* f = v.find("format");
    const Value* n = v.find(layout::kShardCellsKey);
    if (f != nullptr && f->is_int() && f->as_int() == layout::kShardedFormat && n != nullptr &&
        n->is_int() && n->as_int() > 1)
      return n->as_int();
  } catch (const Error&) {
  }
  return 0;
}

bool is_current_cache_format(int format) {
  return format == layout::kFormat || format == layout::kShardedFormat;
}

namespace {

// $CELLFLOW_SHARD_CELLS for a new cache: 0 (not sharded) unless a number > 1.
int64_t requested_shard_cells() {
  const char* v = std::getenv("CELLFLOW_SHARD_CELLS");
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  if (*end != '\0' || n < 0 || n > (1LL << 20))
    throw InvalidArgument(fmt::format(
        "CELLFLOW_SHARD_CELLS=\"{}\": expected the most cells per shard (0: no sharding)", v));
  return n > 1 ? n : 0;
}

}  // namespace

CacheDirectory::CacheDirectory(fs::path root, Durability durability)
    : CacheDirectory(posix_env(root), durability) {}

CacheDirectory::CacheDirectory(std::shared_ptr<Env> env, Durability durability)
    : env_(std::move(env)), durability_(durability) {
  const std::string where = env_->describe(layout::kFormatFile);
  std::optional<int> format = cache_format(*env_);
  const bool created = !format;
  if (!format) {
    const int64_t shard_cells = requested_shard_cells();
    env_->write_new(layout::kFormatFile,
                    shard_cells > 0
                        ? fmt::format("{{\"format\": {}, \"{}\": {}}}\n", layout::kShardedFormat,
                                      layout::kShardCellsKey, shard_cells)
                        : fmt::format("{{\"format\": {}}}\n", layout::kFormat),
                    Durability::kPowerCut);
    format = cache_format(*env_);
  }
  if (format == 1)
    throw InvalidArgument(fmt::format(
        "file {}: this cache was written in cache format 1 by an older cellflow; run "
        "`cellflow cache migrate {}` once to bring it to format {} (every cell is checked and "
        "kept, nothing is recomputed), or use another --cache",
        where, root().string(), layout::kFormat));
  if (format == layout::kShardedFormat) {
    shard_cells_ = cache_shard_cells(*env_);
    if (shard_cells_ == 0)
      throw InvalidArgument(
          fmt::format("file {}: a sharded cache (format {}) without a valid \"{}\"", where,
                      layout::kShardedFormat, layout::kShardCellsKey));
  } else if (format != layout::kFormat)
    throw InvalidArgument(
        fmt::format("file {}: not a cellflow cache of format {} (delete it or use another --cache)",
                    where, layout::kFormat));
  // The shard setting applies to new caches: an existing one that differs keeps its
  // format (its cells are where its format says); said once per process.
  if (const char* v = std::getenv("CELLFLOW_SHARD_CELLS"); !created && v != nullptr && *v != '\0') {
    static std::atomic<bool> warned{false};
    if (requested_shard_cells() != shard_cells_ && !warned.exchange(true)) {
      log_warning(fmt::format(
          "cache {} is {}; the shard setting ({} cells per shard) applies to new caches only: "
          "convert this one with `cellflow cache migrate {} --shard-cells N`",
          root().string(),
          shard_cells_ > 0 ? fmt::format("sharded with {} cells per shard", shard_cells_)
                           : std::string("not sharded"),
          requested_shard_cells(), root().string()));
    }
  }
}

fs::path CacheDirectory::default_root() {
  if (const char* env = std::getenv("CELLFLOW_CACHE"); env != nullptr && *env != '\0') return env;
  return "cellflow-cache";
}

std::shared_ptr<ZarrArray> CacheDirectory::open_node(const std::string& hash, DType dtype,
                                                     const CellGrid& grid,
                                                     const std::string& definition_json,
                                                     int shuffle) {
  auto array = ZarrArray::create(env_, layout::array(hash), hash, dtype, grid, durability_,
                                 shard_cells_, shuffle);
  if (env_->stat(layout::zattrs(hash)).kind == EntryKind::kMissing) {
    // Racing creators write identical content; .zattrs is written only where
    // absent, so keys another writer added to it are never overwritten.
    env_->write_atomic(layout::zgroup(hash), layout::kZgroupText, kMetadataDurability);
    env_->write_new(layout::zattrs(hash), node_zattrs_json(hash, grid.rank(), definition_json),
                    kMetadataDurability);
  }
  // A complete node whose packing was cut short (a killed process) is packed now.
  if (shard_cells_ > 0 && is_complete(hash) && !array->is_packed()) pack_node(hash);
  return array;
}

std::shared_ptr<TableStore> CacheDirectory::open_table_node(const std::string& hash,
                                                            const std::string& definition_json) {
  if (env_->stat(layout::zattrs(hash)).kind == EntryKind::kMissing) {
    env_->write_atomic(layout::zgroup(hash), layout::kZgroupText, kMetadataDurability);
    env_->write_new(layout::zattrs(hash), node_zattrs_json(hash, 0, definition_json),
                    kMetadataDurability);
  }
  return std::make_shared<TableStore>(env_, layout::table(hash), hash, durability_);
}

void CacheDirectory::ensure_node_folder(const std::string& hash) {
  env_->make_folders(layout::node(hash));
}

bool CacheDirectory::node_exists(const std::string& hash) const {
  return env_->stat(layout::zattrs(hash)).kind == EntryKind::kFile;
}

bool CacheDirectory::is_complete(const std::string& hash) const {
  return env_->stat(layout::complete_marker(hash)).kind == EntryKind::kFile;
}

void CacheDirectory::mark_complete(const std::string& hash) {
  env_->write_atomic(layout::complete_marker(hash), "{\"complete\": true}\n", kMetadataDurability);
  if (shard_cells_ > 0) pack_node(hash);
}

void CacheDirectory::write_v3_group(const std::string& hash) {
  // The node group as OME-NGFF 0.5 beside its 0.4 metadata (.zgroup/.zattrs,
  // which keep the definition): a packed array "0" is Zarr v3, which only
  // v3 readers open, and they look for the group's zarr.json.
  const std::optional<std::string> zattrs = env_->read(layout::zattrs(hash));
  if (!zattrs) return;
  const Value attrs = parse_json(*zattrs, env_->describe(layout::zattrs(hash)));
  const Value* multiscales = attrs.find("multiscales");
  if (multiscales == nullptr || !multiscales->is_array()) return;
  Value::Array entries;
  for (const Value& m : multiscales->as_array()) {
    Value entry = Value::object();
    for (const auto& field : m.as_object())
      if (field.first != "version") entry.set(field.first, field.second);
    // What the strict NGFF schema asks of a multiscale: one level, no reduction.
    if (entry.find("type") == nullptr) entry.set("type", "none");
    if (entry.find("metadata") == nullptr) {
      Value metadata = Value::object();
      metadata.set("description", "a cellflow cache node: one level, the node's cells");
      entry.set("metadata", std::move(metadata));
    }
    entries.push_back(std::move(entry));
  }
  Value ome = Value::object();
  ome.set("version", "0.5");
  ome.set("multiscales", Value(std::move(entries)));
  Value attributes = Value::object();
  attributes.set("ome", std::move(ome));
  Value group = Value::object();
  group.set("zarr_format", 3);
  group.set("node_type", "group");
  group.set("attributes", std::move(attributes));
  const std::string text = to_json(group);
  const std::string path = join_path(layout::node(hash), layout::kZarrJson);
  std::optional<std::string> present;
  try {
    present = env_->read(path);
  } catch (const CorruptionError&) {  // not a file: replaced below
  }
  if (present != text) env_->write_atomic(path, text, kMetadataDurability);
}

bool CacheDirectory::pack_node(const std::string& hash) {
  if (shard_cells_ == 0) return false;
  try {
    if (env_->stat(layout::array(hash)).kind != EntryKind::kFolder) return false;  // a table node
    const EntryKind v2 = env_->stat(layout::zarray(hash)).kind;
    const EntryKind v3 = env_->stat(join_path(layout::array(hash), layout::kZarrJson)).kind;
    std::shared_ptr<ZarrArray> array;
    if (v2 == EntryKind::kMissing && v3 == EntryKind::kMissing) {
      // A repaired node (verify --repair removed zarr.json): its array from its definition.
      const std::optional<Value> def = read_node_definition(*env_, hash);
      const Value* dtype = def ? def->find("dtype") : nullptr;
      const std::optional<DType> type =
          dtype != nullptr && dtype->is_string() ? parse_dtype(dtype->as_string()) : std::nullopt;
      if (!type) throw CorruptionError("its definition names no dtype");
      array =
          ZarrArray::create(env_, layout::array(hash), hash, *type,
                            CellGrid(dims_of(def->find("shape")), dims_of(def->find("cell_shape"))),
                            durability_, shard_cells_);
    } else {
      array = ZarrArray::open(env_, layout::array(hash), hash, shard_cells_);
    }
    if (array->is_packed()) {
      write_v3_group(hash);
      return true;
    }
    array->set_durability(durability_);
    // The group first: a crash after the array is packed must not leave a
    // packed node without it (a packed node is never packed again). Until the
    // array is packed a v3 reader finds no v3 array "0": an error, not zeros.
    write_v3_group(hash);
    const ZarrArray::PackResult r = array->pack();
    if (r.missing_cells > 0) {
      log_warning(fmt::format("node {}: {} cells are missing; it is no longer complete",
                              env_->describe(layout::node(hash)), r.missing_cells));
      env_->remove(layout::complete_marker(hash));
    }
    return r.packed;
  } catch (const Error& e) {
    // The node stays readable from its single files; the next run packs it.
    log_warning(fmt::format("node {}: not packed into shards: {}",
                            env_->describe(layout::node(hash)), e.what()));
    return false;
  }
}

}  // namespace cellflow

#include "cellflow/cache/cache_directory.hpp"

#include <fmt/format.h>

#include <cstdlib>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/value.hpp"
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

CacheDirectory::CacheDirectory(fs::path root, Durability durability)
    : CacheDirectory(posix_env(root), durability) {}

CacheDirectory::CacheDirectory(std::shared_ptr<Env> env, Durability durability)
    : env_(std::move(env)), durability_(durability) {
  const std::string where = env_->describe(layout::kFormatFile);
  std::optional<int> format = cache_format(*env_);
  if (!format) {
    env_->write_new(layout::kFormatFile, fmt::format("{{\"format\": {}}}\n", layout::kFormat),
                    Durability::kPowerCut);
    format = cache_format(*env_);
  }
  if (format == 1)
    throw InvalidArgument(fmt::format(
        "file {}: this cache was written in cache format 1 by an older cellflow; run "
        "`cellflow cache migrate {}` once to bring it to format {} (every cell is checked and "
        "kept, nothing is recomputed), or use another --cache",
        where, root().string(), layout::kFormat));
  if (format != layout::kFormat)
    throw InvalidArgument(
        fmt::format("file {}: not a cellflow cache of format {} (delete it or use another --cache)",
                    where, layout::kFormat));
}

fs::path CacheDirectory::default_root() {
  if (const char* env = std::getenv("CELLFLOW_CACHE"); env != nullptr && *env != '\0') return env;
  return "cellflow-cache";
}

std::shared_ptr<ZarrArray> CacheDirectory::open_node(const std::string& hash, DType dtype,
                                                     const CellGrid& grid,
                                                     const std::string& definition_json) {
  auto array = ZarrArray::create(env_, layout::array(hash), hash, dtype, grid, durability_);
  if (env_->stat(layout::zattrs(hash)).kind == EntryKind::kMissing) {
    // Racing creators write identical content; .zattrs is written only where
    // absent, so keys another writer added to it are never overwritten.
    env_->write_atomic(layout::zgroup(hash), layout::kZgroupText, kMetadataDurability);
    env_->write_new(layout::zattrs(hash), node_zattrs_json(hash, grid.rank(), definition_json),
                    kMetadataDurability);
  }
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
}

}  // namespace cellflow

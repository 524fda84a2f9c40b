#include "cellflow/cache/cache_directory.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"
#include "cellflow/cache/metadata_lock.hpp"
#include "cellflow/cache/value.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

constexpr const char* kCompleteMarker = ".cellflow-complete";
constexpr const char* kFormatFile = "cellflow-cache.json";

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

// Writes .zattrs unless another writer created it meanwhile, under the
// folder's metadata lock: keys that others added to it (update_json_atomic)
// are never overwritten by a fresh copy.
void create_zattrs_once(const fs::path& dir, const std::string& text) {
  const MetadataLock lock(dir, MetadataLock::Mode::kExclusive);
  if (::access((dir / ".zattrs").c_str(), F_OK) != 0) write_file_atomic(dir / ".zattrs", text);
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

CacheDirectory::CacheDirectory(fs::path root) : root_(std::move(root)) {
  std::error_code ec;
  fs::create_directories(root_, ec);
  if (ec)
    throw IoError(fmt::format("cache {}: cannot create it: {}", root_.string(), ec.message()));
  const fs::path format_file = root_ / kFormatFile;
  if (auto text = read_file(format_file)) {
    int format = -1;
    try {
      const Value v = parse_json(*text, format_file.string());
      if (const Value* f = v.find("format")) format = static_cast<int>(f->as_int());
    } catch (const Error&) {
    }
    if (format != kCacheFormat)
      throw InvalidArgument(fmt::format(
          "file {}: not a cellflow cache of format {} (delete it or use another --cache)",
          format_file.string(), kCacheFormat));
  } else {
    Value v = Value::object();
    v.set("format", kCacheFormat);
    write_file_atomic(format_file, to_json(v));
  }
}

fs::path CacheDirectory::default_root() {
  if (const char* env = std::getenv("CELLFLOW_CACHE"); env != nullptr && *env != '\0') return env;
  return "cellflow-cache";
}

std::shared_ptr<ZarrArray> CacheDirectory::open_node(const std::string& hash, DType dtype,
                                                     const CellGrid& grid,
                                                     const std::string& definition_json) {
  const fs::path dir = node_path(hash);
  if (::access((dir / ".zattrs").c_str(), F_OK) != 0) {
    // Every file is committed by rename: racing creators write identical content.
    auto array = ZarrArray::create(dir / "0", dtype, grid);
    write_file_atomic(dir / ".zgroup", "{\n  \"zarr_format\": 2\n}\n");
    create_zattrs_once(dir, node_zattrs_json(hash, grid.rank(), definition_json));
    return array;
  }
  return ZarrArray::create(dir / "0", dtype, grid);
}

std::shared_ptr<TableStore> CacheDirectory::open_table_node(const std::string& hash,
                                                            const std::string& definition_json) {
  const fs::path dir = node_path(hash);
  if (::access((dir / ".zattrs").c_str(), F_OK) != 0) {
    write_file_atomic(dir / ".zgroup", "{\n  \"zarr_format\": 2\n}\n");
    create_zattrs_once(dir, node_zattrs_json(hash, 0, definition_json));
  }
  return std::make_shared<TableStore>(dir / "table");
}

bool CacheDirectory::node_exists(const std::string& hash) const {
  return ::access((node_path(hash) / ".zattrs").c_str(), F_OK) == 0;
}

bool CacheDirectory::is_complete(const std::string& hash) const {
  return ::access((node_path(hash) / kCompleteMarker).c_str(), F_OK) == 0;
}

void CacheDirectory::mark_complete(const std::string& hash) {
  write_file_atomic(node_path(hash) / kCompleteMarker, "{\"complete\": true}\n");
}

}  // namespace cellflow

// CacheDirectory: the on-disk cache, one OME-Zarr (NGFF 0.4) group per node,
// named by the node's 32-hex hash:
//   <root>/cellflow-cache.json           {"format": 1}
//   <root>/<hash>/.zgroup, .zattrs        multiscales + "cellflow" definition
//   <root>/<hash>/0/                      the Zarr v2 array of cells
//   <root>/<hash>/table/                  (table nodes) one file of rows per cell
//   <root>/<hash>/.cellflow-complete      present once every cell is committed
//   <root>/<hash>/artifacts/              logs, plots, tables of the node
// Thread-safe and process-safe: every file is committed by atomic rename.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/dtype.hpp"
#include "cellflow/cache/table_store.hpp"
#include "cellflow/cache/zarr_array.hpp"

namespace cellflow {

inline constexpr int kCacheFormat = 1;

class CacheDirectory {
 public:
  /// Opens (creating if needed) the cache at `root`. Throws IoError if the folder
  /// cannot be created, or InvalidArgument if it holds an unknown format.
  explicit CacheDirectory(std::filesystem::path root);

  /// The default root: $CELLFLOW_CACHE, else ./cellflow-cache.
  static std::filesystem::path default_root();

  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path node_path(const std::string& hash) const { return root_ / hash; }

  /// Creates the node's group if absent: .zgroup, .zattrs (NGFF multiscales plus
  /// `definition_json` under "cellflow"), and the array "0". Returns the array.
  std::shared_ptr<ZarrArray> open_node(const std::string& hash, DType dtype, const CellGrid& grid,
                                       const std::string& definition_json);
  /// Creates a table node's group if absent (.zgroup, .zattrs with the
  /// definition, no multiscales) and returns the store of its cells ("table/").
  std::shared_ptr<TableStore> open_table_node(const std::string& hash,
                                              const std::string& definition_json);
  bool node_exists(const std::string& hash) const;
  bool is_complete(const std::string& hash) const;
  void mark_complete(const std::string& hash);

 private:
  std::filesystem::path root_;
};

/// The NGFF 0.4 .zattrs text for a node (multiscales for rank 2..5, plus the
/// cellflow definition object, which must be a JSON object).
std::string node_zattrs_json(const std::string& name, int rank, const std::string& definition_json);

}  // namespace cellflow

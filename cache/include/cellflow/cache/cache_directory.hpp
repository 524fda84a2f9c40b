// CacheDirectory: the store — the one owner of a cache directory's layout
// (cellflow/store/layout.hpp), on top of a storage environment (Env). One
// OME-Zarr (NGFF 0.4) group per node, named by the node's 32-hex hash; every
// file is committed by atomic rename, nothing is followed through a link.
// Thread-safe and process-safe.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/dtype.hpp"
#include "cellflow/cache/table_store.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/store/env.hpp"

namespace cellflow {

class CacheDirectory {
 public:
  /// Opens (creating if needed) the cache at `root` on the POSIX Env.
  explicit CacheDirectory(std::filesystem::path root, Durability durability = Durability::kProcess);
  /// Opens (creating if needed) the cache held by `env`. Throws IoError if it
  /// cannot be created, InvalidArgument if it holds another format (the
  /// message says what to do: `cellflow cache migrate` for format 1).
  /// A cache created while $CELLFLOW_SHARD_CELLS is a number > 1 is sharded
  /// (format 3, layout.hpp): its complete image nodes are packed into Zarr v3
  /// shards of at most that many cells. Sharding is the cache's, fixed when
  /// it is created: every process using the cache agrees on it.
  explicit CacheDirectory(std::shared_ptr<Env> env, Durability durability = Durability::kProcess);

  /// The default root: $CELLFLOW_CACHE, else ./cellflow-cache.
  static std::filesystem::path default_root();

  const std::filesystem::path& root() const { return env_->root(); }
  const std::shared_ptr<Env>& env() const { return env_; }
  Durability durability() const { return durability_; }
  /// The most cells per shard; 0 when the cache is not sharded.
  int64_t shard_cells() const { return shard_cells_; }
  std::filesystem::path node_path(const std::string& hash) const { return root() / hash; }

  /// Creates the node's group if absent: .zgroup, .zattrs (NGFF multiscales plus
  /// `definition_json` under "cellflow"), and the array "0" (`shuffle`: as in
  /// ZarrArray::create). Returns the array.
  std::shared_ptr<ZarrArray> open_node(const std::string& hash, DType dtype, const CellGrid& grid,
                                       const std::string& definition_json, int shuffle = -1);
  /// Creates a table node's group if absent (.zgroup, .zattrs with the
  /// definition, no multiscales) and returns the store of its cells ("table/").
  std::shared_ptr<TableStore> open_table_node(const std::string& hash,
                                              const std::string& definition_json);
  /// Creates the node's folder if absent. Throws IoError with the cause when
  /// it cannot be created, CorruptionError when something else is there.
  void ensure_node_folder(const std::string& hash);
  bool node_exists(const std::string& hash) const;
  bool is_complete(const std::string& hash) const;
  /// Writes the completion marker. Under Durability::kPowerCut the node's
  /// cell folders are synced first, so the marker never outlives its cells.
  /// In a sharded cache, then packs an image node (pack_node).
  void mark_complete(const std::string& hash);
  /// Sharded caches: packs the complete image node `hash` into shards
  /// (ZarrArray::pack) unless that is done; when cells turn out to be
  /// missing, removes its completion marker instead. A failure is logged:
  /// the cells stay readable in their single files. Returns true when the
  /// node is packed.
  bool pack_node(const std::string& hash);

 private:
  /// A packed image node's group as OME-NGFF 0.5 (<hash>/zarr.json, from the
  /// multiscales of its .zattrs), so that v3 readers open it like the 0.4
  /// readers did before packing.
  void write_v3_group(const std::string& hash);

  std::shared_ptr<Env> env_;
  Durability durability_;
  int64_t shard_cells_ = 0;
};

/// The NGFF 0.4 .zattrs text for a node (multiscales for rank 2..5, plus the
/// cellflow definition object, which must be a JSON object).
std::string node_zattrs_json(const std::string& name, int rank, const std::string& definition_json);

/// Checks the format file of the cache in `env`: nullopt when there is none,
/// else the format it names (-1 when unreadable).
std::optional<int> cache_format(Env& env);
/// The most cells per shard of the cache in `env` (format 3); 0 when it is not sharded.
int64_t cache_shard_cells(Env& env);
/// True for a format this cellflow reads and writes (2, or 3: sharded).
bool is_current_cache_format(int format);

}  // namespace cellflow

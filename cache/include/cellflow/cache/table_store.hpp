// TableStore: the committed cells of a table node, one file per cell
// ("<path>/i/j/k"), each a blosc frame of the serialized rows plus the same
// XXH3 checksum trailer as Zarr chunks, committed by atomic rename.
// Thread-safe; safe for many processes writing one table.
#pragma once

#include <filesystem>

#include "cellflow/cache/cell_lock.hpp"
#include "cellflow/cache/cell_store.hpp"

namespace cellflow {

class TableStore : public CellStore {
 public:
  explicit TableStore(std::filesystem::path path)
      : path_(std::move(path)), locks_(path_ / ".cellflow-lock") {}

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path cell_path(const CellIndex& cell) const;

  /// The cell's serialized rows as a 1-D u8 buffer.
  std::optional<CellBuffer> read(const CellIndex& cell) override;
  void write(const CellIndex& cell, const CellBuffer& buffer) override;
  bool contains(const CellIndex& cell) override;
  void remove(const CellIndex& cell) override;
  /// Cross-process lock of one cell (CellLockFile "<path>/.cellflow-lock").
  std::shared_ptr<void> lock(const CellIndex& cell) override;
  bool locked_elsewhere(const CellIndex& cell) override;

 private:
  std::filesystem::path path_;
  CellLockFile locks_;
};

}  // namespace cellflow

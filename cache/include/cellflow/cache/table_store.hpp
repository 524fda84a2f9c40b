// TableStore: the committed cells of a table node, one file per cell
// ("<folder>/i/j/k"), each a blosc frame of the serialized rows plus the same
// identity-bound checksum trailer as Zarr chunks, committed by atomic rename
// through an Env. Thread-safe; safe for many processes writing one table.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "cellflow/cache/cell_store.hpp"
#include "cellflow/store/env.hpp"

namespace cellflow {

class TableStore : public CellStore {
 public:
  /// The table in folder `folder` of `env`; `owner` (the node's hash) is what
  /// the cells' checksums bind them to.
  TableStore(std::shared_ptr<Env> env, std::string folder, std::string owner,
             Durability durability = Durability::kProcess);
  /// The table at `path` (owner: the name of its parent folder).
  explicit TableStore(const std::filesystem::path& path);

  std::filesystem::path path() const;
  std::filesystem::path cell_path(const CellIndex& cell) const;

  /// The cell's serialized rows as a 1-D u8 buffer.
  std::optional<CellBuffer> read(const CellIndex& cell) override;
  void write(const CellIndex& cell, const CellBuffer& buffer) override;
  bool contains(const CellIndex& cell) override;
  void remove(const CellIndex& cell) override;
  /// Cross-process lock of one cell ("<folder>/.cellflow-lock").
  std::shared_ptr<void> lock(const CellIndex& cell) override;
  bool locked_elsewhere(const CellIndex& cell) override;

 private:
  std::shared_ptr<Env> env_;
  std::string folder_;
  std::string owner_;
  std::string lock_file_;
  Durability durability_;
};

}  // namespace cellflow

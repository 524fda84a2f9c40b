// ZarrArray: a Zarr v2 array on disk, one file per cell (chunk), as zarr-python
// and napari read it: "/" dimension separator, full-size edge chunks padded with
// zeros, blosc-lz4 compression. Each chunk file is written to a temporary name
// and renamed into place (through an Env: no link is followed), and carries a
// checksum trailer after the blosc frame (blosc ignores it): an XXH3-64 of the
// frame seeded with the cell's identity (its owner — the node's hash — and its
// position), so partial, garbled, foreign, moved or copied files are detected.
// Thread-safe; safe for many processes writing one array.
#pragma once

#include <filesystem>
#include <memory>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/cell_store.hpp"
#include "cellflow/cache/dtype.hpp"
#include "cellflow/store/env.hpp"

namespace cellflow {

class ZarrArray : public CellStore {
 public:
  /// Creates the array's folder `folder` of `env` and its .zarray unless they
  /// exist (then checks that they match). `owner` names what the cells belong
  /// to (a node's hash): their checksums bind them to it. Throws IoError /
  /// CorruptionError.
  static std::shared_ptr<ZarrArray> create(std::shared_ptr<Env> env, std::string folder,
                                           std::string owner, DType dtype, const CellGrid& grid,
                                           Durability durability = Durability::kProcess);
  /// Opens an existing array written by cellflow. Throws IoError if absent.
  static std::shared_ptr<ZarrArray> open(std::shared_ptr<Env> env, std::string folder,
                                         std::string owner);
  /// The same at a path: the Env is the array's parent folder and the owner
  /// its name (for a cache node "<cache>/<hash>/0", the hash).
  static std::shared_ptr<ZarrArray> create(const std::filesystem::path& path, DType dtype,
                                           const CellGrid& grid);
  static std::shared_ptr<ZarrArray> open(const std::filesystem::path& path);
  ~ZarrArray() override;

  /// The array's folder as a user reads it.
  std::filesystem::path path() const;
  DType dtype() const;
  const CellGrid& grid() const;
  const std::string& owner() const;
  /// The file that holds `cell` ("<path>/i/j/k").
  std::filesystem::path cell_path(const CellIndex& cell) const;

  std::optional<CellBuffer> read(const CellIndex& cell) override;
  void write(const CellIndex& cell, const CellBuffer& buffer) override;
  bool contains(const CellIndex& cell) override;
  void remove(const CellIndex& cell) override;
  /// Cross-process lock of one cell (byte `linear index` of "<path>/.cellflow-lock").
  std::shared_ptr<void> lock(const CellIndex& cell) override;
  bool locked_elsewhere(const CellIndex& cell) override;

  /// Encodes a full-size chunk as stored on disk (blosc frame + trailer bound
  /// to `identity`, layout::cell_identity(); empty: bound to nothing).
  static std::string encode_chunk(const void* data, size_t bytes, size_t type_size,
                                  std::string_view identity);
  /// Decodes and verifies a stored chunk into `out` (exactly `bytes` long);
  /// throws CorruptionError naming `what` if anything is wrong, including a
  /// chunk bound to another identity (moved or copied from another cell).
  static void decode_chunk(const std::string& stored, void* out, size_t bytes,
                           const std::string& what, std::string_view identity);
  /// Same, for a chunk of any size (table cells): returns the decoded bytes.
  static std::string decode_chunk_any(const std::string& stored, const std::string& what,
                                      std::string_view identity);
  /// A chunk written by cache format 1 (checksum of the frame only), checked,
  /// with its trailer rewritten to bind it to `identity`. Throws
  /// CorruptionError when it is not a sound format-1 chunk.
  static std::string migrate_format1_chunk(const std::string& stored, const std::string& what,
                                           std::string_view identity);

 private:
  ZarrArray(std::shared_ptr<Env> env, std::string folder, std::string owner, DType dtype,
            CellGrid grid, Durability durability);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The .zarray JSON for an array (deterministic text).
std::string zarray_json(DType dtype, const CellGrid& grid);

}  // namespace cellflow

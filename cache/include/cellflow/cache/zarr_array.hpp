// ZarrArray: a Zarr v2 array on disk, one file per cell (chunk), as zarr-python
// and napari read it: "/" dimension separator, full-size edge chunks padded with
// zeros, blosc-lz4 compression. Each chunk file is written to a temporary name
// and renamed into place, and carries an XXH3-64 checksum trailer after the
// blosc frame (blosc ignores it), so partial, garbled or foreign files are
// detected. Thread-safe; safe for many processes writing one array.
#pragma once

#include <filesystem>
#include <memory>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/cell_store.hpp"
#include "cellflow/cache/dtype.hpp"

namespace cellflow {

class ZarrArray : public CellStore {
 public:
  /// Creates the array's folder and .zarray unless they exist (then checks
  /// that they match). Throws IoError / InvalidArgument.
  static std::shared_ptr<ZarrArray> create(const std::filesystem::path& path, DType dtype,
                                           const CellGrid& grid);
  /// Opens an existing array written by cellflow. Throws IoError if absent.
  static std::shared_ptr<ZarrArray> open(const std::filesystem::path& path);
  ~ZarrArray() override;

  const std::filesystem::path& path() const;
  DType dtype() const;
  const CellGrid& grid() const;
  /// The file that holds `cell` ("<path>/i/j/k").
  std::filesystem::path cell_path(const CellIndex& cell) const;

  std::optional<CellBuffer> read(const CellIndex& cell) override;
  void write(const CellIndex& cell, const CellBuffer& buffer) override;
  bool contains(const CellIndex& cell) override;
  void remove(const CellIndex& cell) override;
  /// Cross-process lock of one cell (CellLockFile "<path>/.cellflow-lock").
  std::shared_ptr<void> lock(const CellIndex& cell) override;
  bool locked_elsewhere(const CellIndex& cell) override;

  /// Encodes a full-size chunk as stored on disk (blosc frame + trailer).
  static std::string encode_chunk(const void* data, size_t bytes, size_t type_size);
  /// Decodes and verifies a stored chunk into `out` (exactly `bytes` long);
  /// throws CorruptionError naming `what` if anything is wrong.
  static void decode_chunk(const std::string& stored, void* out, size_t bytes,
                           const std::string& what);
  /// Same, for a chunk of any size (table cells): returns the decoded bytes.
  static std::string decode_chunk_any(const std::string& stored, const std::string& what);

 private:
  ZarrArray(std::filesystem::path path, DType dtype, CellGrid grid);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The .zarray JSON for an array (deterministic text).
std::string zarray_json(DType dtype, const CellGrid& grid);

}  // namespace cellflow

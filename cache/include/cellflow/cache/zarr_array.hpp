// ZarrArray: a Zarr v2 array on disk, one file per cell (chunk), as zarr-python
// and napari read it: "/" dimension separator, full-size edge chunks padded with
// zeros, blosc-lz4 compression. Each chunk file is written to a temporary name
// and renamed into place (through an Env: no link is followed), and carries a
// checksum trailer after the blosc frame (blosc ignores it): an XXH3-64 of the
// frame seeded with the cell's identity (its owner — the node's hash — and its
// position), so partial, garbled, foreign, moved or copied files are detected.
// Thread-safe; safe for many processes writing one array.
//
// Sharded (shard_cells > 0, the arrays of a sharded cache): cells are still
// committed one file each; once every cell is committed, pack() copies them
// into Zarr v3 shards (zarr_shard.hpp) under "c/", writes zarr.json, removes
// .zarray and then the single files. A cell is read from its single file if
// there is one, else from its shard: a single file is only removed once its
// shard is committed, so a reader racing a packer never misses a cell.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/cell_store.hpp"
#include "cellflow/cache/dtype.hpp"
#include "cellflow/cache/zarr_shard.hpp"
#include "cellflow/store/env.hpp"

namespace cellflow {

class ZarrArray : public CellStore {
 public:
  /// Creates the array's folder `folder` of `env` and its .zarray unless they
  /// exist (then checks that they match). `owner` names what the cells belong
  /// to (a node's hash): their checksums bind them to it. Throws IoError /
  /// CorruptionError. `shuffle`: blosc's filter for its cells (0-2; -1:
  /// blosc_shuffle_for(dtype)); an existing array keeps the one it records.
  static std::shared_ptr<ZarrArray> create(std::shared_ptr<Env> env, std::string folder,
                                           std::string owner, DType dtype, const CellGrid& grid,
                                           Durability durability = Durability::kProcess,
                                           int64_t shard_cells = 0, int shuffle = -1);
  /// Opens an existing array written by cellflow (its .zarray, or once packed
  /// its zarr.json). Throws IoError if absent.
  static std::shared_ptr<ZarrArray> open(std::shared_ptr<Env> env, std::string folder,
                                         std::string owner, int64_t shard_cells = 0);
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

  /// Sharded arrays: where the cells lie in shards (nullptr when unsharded).
  const ShardGeometry* shards() const;
  /// What pack() did.
  struct PackResult {
    bool packed = false;  // every cell is in a shard; zarr.json written; singles removed
    bool busy = false;    // another process is packing the array now
    int64_t shards_written = 0;
    int64_t missing_cells = 0;  // cells neither in a single file nor a shard
  };
  /// Packs the committed cells into shards (see above). Idempotent; safe
  /// against concurrent packers (one packs, the others return busy) and
  /// against a crash at any step (every step is an atomic rename or removal
  /// of something already copied). Does nothing unless every cell is
  /// committed. Throws IoError / CorruptionError on failure.
  PackResult pack();
  /// True when the array is packed: zarr.json is there, .zarray and every
  /// single cell file are not (one listing of the array's folder).
  bool is_packed();
  void set_durability(Durability durability);
  /// The shard `shard` (nullopt when absent), with its index checked.
  struct Shard {
    std::string bytes;
    std::vector<ShardEntry> index;
  };
  std::optional<Shard> read_shard(const CellIndex& shard);
  /// Only the index of shard `shard` (its last bytes), nullopt when absent.
  std::optional<std::vector<ShardEntry>> read_shard_index(const CellIndex& shard);
  /// The path of shard `shard` ("<path>/c/i/j/k").
  std::filesystem::path shard_path(const CellIndex& shard) const;

  /// Encodes a full-size chunk as stored on disk (blosc frame + trailer bound
  /// to `identity`, layout::cell_identity(); empty: bound to nothing).
  /// `shuffle`: blosc's filter (blosc_shuffle_for(dtype) for an array's cells).
  static std::string encode_chunk(const void* data, size_t bytes, size_t type_size,
                                  std::string_view identity, int shuffle = 1);
  /// Same, into `out`, reusing its memory.
  static void encode_chunk_into(std::string& out, const void* data, size_t bytes, size_t type_size,
                                std::string_view identity, int shuffle = 1);
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
            CellGrid grid, Durability durability, int64_t shard_cells);
  std::optional<CellBuffer> read_from_shard(const CellIndex& cell);
  // The shard holding `cell` (a recent copy, else read again), nullptr when none does.
  std::shared_ptr<const Shard> find_in_shard(const CellIndex& cell);
  CellBuffer decode_cell(const std::string& stored, const CellIndex& cell, const std::string& what);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The .zarray JSON for an array (deterministic text); `shuffle` as in
/// create() (-1: blosc_shuffle_for(dtype)).
std::string zarray_json(DType dtype, const CellGrid& grid, int shuffle = -1);

/// The blosc filter cells of `dtype` are stored with by default: 2 (bit
/// shuffle) for integers — masks have few distinct values per cell, and bit
/// shuffle packs them several times smaller than byte shuffle — and 1 (byte
/// shuffle) for floats. (Label images do better without any: kNoShuffleForLabels.)
/// Blosc records the filter in each frame, so cells written with any decode
/// the same way.
int blosc_shuffle_for(DType dtype);

/// The filter for label images (ids of objects): none. Their cells are runs
/// of one id, which LZ4 packs as they are; shuffling the bytes or bits of the
/// ids buys little (B's labels at 256^3, 64 cells of 64^3 u32, in one
/// --trace each: 2.71 MB stored in 25 ms without, 2.64 MB in 59 ms
/// bit-shuffled).
inline constexpr int kNoShuffleForLabels = 0;

}  // namespace cellflow

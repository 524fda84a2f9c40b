// Zarr v3 shards of a cache node (the `sharding_indexed` codec): a shard file
// holds up to a few hundred cells (its inner chunks, each stored exactly as a
// single cell file is: blosc frame + identity-bound checksum trailer), then an
// index at the end: for every inner chunk of the shard, in C order, the
// little-endian u64 offset and u64 length of its bytes (both 2^64-1 when the
// chunk is absent), followed by the crc32c of those index bytes (little-endian
// u32). Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/dtype.hpp"

namespace cellflow {

/// CRC-32C (Castagnoli, reflected, as Zarr v3's crc32c codec computes it).
uint32_t crc32c(std::string_view data);

/// Where the cells of a grid lie in shards of `per_shard` cells.
class ShardGeometry {
 public:
  ShardGeometry() = default;
  /// Shards of at most `max_cells` cells (>= 1), shaped from the grid: the
  /// shape that covers it in the fewest shards (ceil(N / max_cells) when the
  /// grid allows it), then with the fewest slots, then the most cube-like
  /// (8 x 8 x 8 cells for 512 on a large 3-D grid).
  ShardGeometry(const CellGrid& grid, int64_t max_cells);

  const Dims& per_shard() const { return per_shard_; }
  const Dims& shard_grid() const { return shard_grid_; }
  int64_t num_shards() const { return shard_grid_.product(); }
  int64_t slots() const { return per_shard_.product(); }
  CellIndex shard_at(int64_t linear) const;
  CellIndex shard_of(const CellIndex& cell) const;
  /// The C-order position of `cell` in its shard.
  int64_t slot_of(const CellIndex& cell) const;
  /// The cell at `slot` of `shard`; false when it lies outside the grid.
  bool cell_of(const CellIndex& shard, int64_t slot, CellIndex& cell) const;

 private:
  Dims grid_shape_;
  Dims per_shard_;
  Dims shard_grid_;
};

/// One inner chunk's place in a shard (absent: both 2^64-1).
struct ShardEntry {
  uint64_t offset = ~uint64_t{0};
  uint64_t nbytes = ~uint64_t{0};
  bool present() const { return offset != ~uint64_t{0} || nbytes != ~uint64_t{0}; }
};

/// The bytes of a shard whose slot i holds `chunks[i]` (empty: absent).
std::string encode_shard(const std::vector<std::string>& chunks);

/// The index of shard `bytes` with `slots` inner chunks: checks its crc32c
/// and that every entry lies inside the shard's data. Throws CorruptionError
/// starting with `what` otherwise.
std::vector<ShardEntry> parse_shard_index(std::string_view bytes, int64_t slots,
                                          const std::string& what);
/// The same from the last bytes of a shard file of `file_size` bytes.
std::vector<ShardEntry> parse_shard_index_tail(std::string_view tail, uint64_t file_size,
                                               int64_t slots, const std::string& what);
/// The bytes at the end of a shard of `slots` inner chunks that hold its index.
size_t shard_index_bytes(int64_t slots);

/// The zarr.json of a node's array packed in shards (deterministic text):
/// shard = per_shard cells, inner chunks blosc-lz4 as in the v2 array.
std::string zarr_v3_json(DType dtype, const CellGrid& grid, const Dims& per_shard,
                         int shuffle = -1);

/// Zarr v3's name of a data type ("uint8", "float32", ...).
std::string zarr_v3_dtype(DType dtype);

}  // namespace cellflow

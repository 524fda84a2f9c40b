// CachedCellImage: an N-D image cut into cells that are computed only when
// read, kept in the process-wide MemoryCache and, when a CellStore is given,
// persisted there and reloaded from it instead of being recomputed.
// Thread-safe: loading a cell is single-flight (concurrent readers of one cell
// wait for one computation, which runs isolated from unrelated TBB work).
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cellflow/cache/box.hpp"
#include "cellflow/cache/cell_buffer.hpp"
#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/cell_store.hpp"
#include "cellflow/cache/dtype.hpp"

namespace cellflow {

class MemoryCache;

/// Counters since the image was created. Monotonic.
struct CellImageStats {
  int64_t computed = 0;     // cells computed by this process
  int64_t loaded = 0;       // cells read back from the store
  int64_t memory_hits = 0;  // cells served from memory
  int64_t corrupt = 0;      // damaged stored cells found (then recomputed)
};

class CachedCellImage {
 public:
  /// Computes one cell; `box` is the cell's region in image coordinates. Must
  /// return a buffer of `dtype` and shape box.shape(). Called concurrently.
  using ComputeFn = std::function<CellBuffer(const CellIndex& cell, const Box& box)>;

  /// `store` may be null (memory only). `cache` defaults to MemoryCache::global().
  /// With `variable_payload`, a cell is a 1-D u8 buffer of any length (the
  /// serialized rows of a table cell) instead of an array of the cell's shape.
  CachedCellImage(std::string name, CellGrid grid, DType dtype, ComputeFn compute,
                  std::shared_ptr<CellStore> store = nullptr, MemoryCache* cache = nullptr,
                  bool variable_payload = false);
  ~CachedCellImage();
  CachedCellImage(const CachedCellImage&) = delete;
  CachedCellImage& operator=(const CachedCellImage&) = delete;

  const std::string& name() const;
  const CellGrid& grid() const;
  DType dtype() const;
  const std::shared_ptr<CellStore>& store() const;

  /// The cell's data: from memory, else from the store, else computed (and
  /// then persisted). Errors carry the frames "cell (i,j,k)".
  CellBuffer get(const CellIndex& cell);
  /// Makes sure the cell is committed to the store (or, without a store, in
  /// memory) without loading it when it already is. Returns true if it had to
  /// be computed.
  bool ensure(const CellIndex& cell);
  /// True if the cell is in memory or committed to the store.
  bool available(const CellIndex& cell) const;
  /// True if another process is computing the cell right now (it holds the
  /// store's lock of the cell).
  bool busy_elsewhere(const CellIndex& cell) const;
  /// Drops the cell from the memory cache (whoever holds its buffer keeps
  /// it). A later read loads it from the store, or computes it again.
  void release(const CellIndex& cell);

  /// Assembles `region` (inside the image) from the cells it touches, computing
  /// only the missing ones.
  CellBuffer read(const Box& region);
  /// Same, for a reader that only reads the result: a region that is exactly
  /// one cell is that cell's buffer itself, shared, not a copy. Never write to
  /// what it returns.
  CellBuffer read_shared(const Box& region);
  /// Same, into a caller-provided C-contiguous buffer of region.volume() elements.
  void read_into(const Box& region, void* out);

  /// What read_available() returns: the region, with the cells that were not
  /// ready filled with the fill value and listed in `missing`.
  struct PartialRead {
    CellBuffer data;
    std::vector<CellIndex> missing;
    bool complete() const { return missing.empty(); }
  };
  /// Called once per missing cell when it has arrived (or failed: then
  /// `error` is set), from a TBB worker thread.
  using CellReadyFn = std::function<void(const CellIndex& cell, std::exception_ptr error)>;

  /// A read that never waits (what a viewer needs): returns at once with the
  /// cells that are in memory; every other cell of `region` reads as `fill`
  /// (converted to the dtype) and is listed in `missing`. Unless `on_ready` is
  /// empty, the missing cells are then loaded or computed in the background
  /// and `on_ready` is told as each arrives; read again to get them. The image
  /// waits for its background work before it is destroyed.
  PartialRead read_available(const Box& region, double fill, CellReadyFn on_ready = {});

  CellImageStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cellflow

// CellStore: where the committed cells of one image live (on disk, or in
// memory for tests). Implementations are thread-safe and process-safe to the
// extent documented by each; a cell either exists whole or not at all.
#pragma once

#include <memory>
#include <optional>

#include "cellflow/cache/cell_buffer.hpp"
#include "cellflow/cache/dims.hpp"

namespace cellflow {

class CellStore {
 public:
  virtual ~CellStore() = default;
  /// The cell's data (its true, possibly edge-clipped shape), or nullopt when
  /// it was never committed. Throws CorruptionError if it exists but is damaged.
  virtual std::optional<CellBuffer> read(const CellIndex& cell) = 0;
  /// Commits the cell atomically. REQUIRES: buffer.shape() is the cell's shape.
  virtual void write(const CellIndex& cell, const CellBuffer& buffer) = 0;
  /// True if the cell was committed (without reading or verifying it).
  virtual bool contains(const CellIndex& cell) = 0;
  /// Removes a committed cell (for example a damaged one); no-op if absent.
  virtual void remove(const CellIndex& cell) = 0;

  /// Locks the cell against other processes until the returned object is
  /// destroyed (blocking). nullptr: the store has no cross-process locking.
  virtual std::shared_ptr<void> lock(const CellIndex& /*cell*/) { return nullptr; }
  /// True if another process holds the cell's lock (it is computing it now).
  virtual bool locked_elsewhere(const CellIndex& /*cell*/) { return false; }
};

}  // namespace cellflow

// CellGrid: an image shape cut into fixed-size cells (edge cells are smaller);
// maps cell indexes to boxes and linear ids. A value type; thread-safe to share.
#pragma once

#include <cstdint>

#include "cellflow/cache/box.hpp"
#include "cellflow/cache/dims.hpp"

namespace cellflow {

class CellGrid {
 public:
  CellGrid() = default;
  /// REQUIRES: same rank 1..kMaxRank, shape >= 0 and cell_shape >= 1 on every axis
  /// (throws InvalidArgument otherwise).
  CellGrid(Shape shape, Shape cell_shape);

  int rank() const { return shape_.rank(); }
  const Shape& shape() const { return shape_; }
  const Shape& cell_shape() const { return cell_shape_; }
  /// Number of cells along each axis.
  const Dims& grid_shape() const { return grid_shape_; }
  int64_t num_cells() const { return grid_shape_.product(); }
  Box bounds() const { return Box::from_shape(shape_); }

  /// The voxels of one cell (clipped at the image's edge).
  Box cell_box(const CellIndex& cell) const;
  int64_t linear(const CellIndex& cell) const;
  CellIndex cell_at(int64_t linear) const;
  /// The cells touched by `region`, as a box in cell coordinates (empty if none).
  Box cells_touching(const Box& region) const;

  friend bool operator==(const CellGrid& a, const CellGrid& b) {
    return a.shape_ == b.shape_ && a.cell_shape_ == b.cell_shape_;
  }

 private:
  Shape shape_;
  Shape cell_shape_;
  Dims grid_shape_;
};

}  // namespace cellflow

#include "cellflow/cache/cell_grid.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "cellflow/cache/error.hpp"

namespace cellflow {

CellGrid::CellGrid(Shape shape, Shape cell_shape) : shape_(shape), cell_shape_(cell_shape) {
  if (shape.rank() < 1 || shape.rank() > kMaxRank)
    throw InvalidArgument(fmt::format("image rank must be 1..{} (got {})", kMaxRank, shape.rank()));
  if (shape.rank() != cell_shape.rank())
    throw InvalidArgument(fmt::format("cell shape {} has rank {}, image shape {} has rank {}",
                                      cell_shape.str(), cell_shape.rank(), shape.str(),
                                      shape.rank()));
  // Sizes beyond these overflow int64 somewhere (elements, bytes, offsets): refused
  // here, when a graph is built, rather than wrapping around at run time.
  constexpr int64_t kMaxExtent = int64_t{1} << 48;
  constexpr int64_t kMaxElements = int64_t{1} << 56;
  constexpr int64_t kMaxCellElements = int64_t{1} << 36;
  grid_shape_ = Dims(shape.rank());
  int64_t elements = 1;
  int64_t cell_elements = 1;
  for (int i = 0; i < shape.rank(); ++i) {
    if (shape[i] < 0)
      throw InvalidArgument(fmt::format("shape {} has a negative size", shape.str()));
    if (cell_shape[i] < 1)
      throw InvalidArgument(
          fmt::format("cell shape {} must be >= 1 on every axis", cell_shape.str()));
    if (shape[i] > kMaxExtent || cell_shape[i] > kMaxExtent)
      throw InvalidArgument(fmt::format("shape {} (cell shape {}) exceeds 2^48 on axis {}",
                                        shape.str(), cell_shape.str(), i));
    elements = shape[i] == 0 || elements <= kMaxElements / shape[i] ? elements * shape[i]
                                                                    : kMaxElements + 1;
    cell_elements = cell_elements <= kMaxCellElements / cell_shape[i]
                        ? cell_elements * cell_shape[i]
                        : kMaxCellElements + 1;
    grid_shape_[i] = (shape[i] + cell_shape[i] - 1) / cell_shape[i];
  }
  if (elements > kMaxElements)
    throw InvalidArgument(fmt::format(
        "shape {} has more than 2^56 elements (its size overflows): use a smaller shape",
        shape.str()));
  if (cell_elements > kMaxCellElements)
    throw InvalidArgument(fmt::format(
        "cell shape {} has more than 2^36 elements per cell: use smaller cells", cell_shape.str()));
}

Box CellGrid::cell_box(const CellIndex& cell) const {
  Dims b(rank()), e(rank());
  for (int i = 0; i < rank(); ++i) {
    b[i] = cell[i] * cell_shape_[i];
    e[i] = std::min(b[i] + cell_shape_[i], shape_[i]);
  }
  return Box(b, e);
}

int64_t CellGrid::linear(const CellIndex& cell) const {
  int64_t l = 0;
  for (int i = 0; i < rank(); ++i) l = l * grid_shape_[i] + cell[i];
  return l;
}

CellIndex CellGrid::cell_at(int64_t linear) const {
  CellIndex c(rank());
  for (int i = rank() - 1; i >= 0; --i) {
    c[i] = linear % grid_shape_[i];
    linear /= grid_shape_[i];
  }
  return c;
}

Box CellGrid::cells_touching(const Box& region) const {
  Box r = region.intersect(bounds());
  Dims b(rank()), e(rank());
  if (r.empty()) return Box(b, e);
  for (int i = 0; i < rank(); ++i) {
    b[i] = r.begin()[i] / cell_shape_[i];
    e[i] = (r.end()[i] + cell_shape_[i] - 1) / cell_shape_[i];
  }
  return Box(b, e);
}

}  // namespace cellflow

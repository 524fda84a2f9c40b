// What the Gaussian engine tests share: deterministic noisy volumes, the
// cases they filter (shape, sigma, spacing) and the op's cells with their
// halo, as the gaussian op reads them. Header-only; reentrant.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cellflow/cache/box.hpp"
#include "cellflow/cache/cell_grid.hpp"

namespace cellflow::test {

/// n deterministic values spanning several orders of magnitude, some negative.
inline std::vector<float> noise(int64_t n, uint32_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  uint64_t s = 0x9E3779B97F4A7C15ull ^ seed;
  for (float& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const double u = static_cast<double>(s >> 11) / static_cast<double>(uint64_t{1} << 53);
    x = static_cast<float>((u - 0.2) * (u < 0.9 ? 100.0 : 5000.0));
  }
  return v;
}

struct GaussianCase {
  std::vector<int64_t> shape;
  std::vector<double> sigma;
  std::vector<double> spacing = {};  // empty: sigma in voxels
};

inline std::string describe(const GaussianCase& c) {
  std::string s = "shape";
  for (int64_t n : c.shape) s += " " + std::to_string(n);
  s += " sigma";
  for (double x : c.sigma) s += " " + std::to_string(x);
  if (!c.spacing.empty()) {
    s += " spacing";
    for (double x : c.spacing) s += " " + std::to_string(x);
  }
  return s;
}

/// The part `box` of `v`, a C-contiguous buffer covering `from`.
inline std::vector<float> crop(const std::vector<float>& v, const Box& from, const Box& box) {
  std::vector<float> out(static_cast<size_t>(box.volume()));
  copy_region(v.data(), from, out.data(), box, box, sizeof(float));
  return out;
}

/// Calls fn(cell, halo) for the cells of a grid over `shape` whose cell shape
/// does not divide it (a third of each axis, plus edges and corners), halo
/// being the cell grown by `radius` and clipped to the image.
template <class Fn>
void for_each_cell_with_halo(const Shape& shape, const std::vector<int64_t>& radius, Fn&& fn) {
  Shape cell_shape = shape;
  for (int i = 0; i < shape.rank(); ++i) cell_shape[i] = std::max<int64_t>(1, (shape[i] + 2) / 3);
  const Box all = Box::from_shape(shape);
  const CellGrid grid(shape, cell_shape);
  for (int64_t k = 0; k < grid.num_cells(); ++k) {
    const Box cell = grid.cell_box(grid.cell_at(k));
    fn(cell, cell.grow(Dims::from(radius)).intersect(all));
  }
}

}  // namespace cellflow::test

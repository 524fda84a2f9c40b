// Otsu's threshold from a histogram, computed as skimage.filters.threshold_otsu
// does (numpy.histogram's equal bins over [min, max], bin centers, the
// between-class variance of every split). Used by the `otsu` op and by tests.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "cellflow/cache/cell_buffer.hpp"

namespace cellflow::nodes {

/// The bins + 1 edges numpy.histogram uses for `bins` equal bins over
/// [lo, hi]: lo + i * ((hi - lo) / bins) in double, the last edge exactly hi.
/// With `single_precision` the edges are rounded to float32, as numpy does for
/// float32 data. REQUIRES: bins >= 1, lo < hi, both finite.
std::vector<double> histogram_edges(double lo, double hi, int bins, bool single_precision);

/// The bin holding `v`: the i with edges[i] <= v < edges[i + 1], the last bin
/// closed on the right. REQUIRES: edges.front() <= v <= edges.back().
int histogram_bin(std::span<const double> edges, double v);

/// Bin centers (edges[i] + edges[i + 1]) / 2, in float32 arithmetic with
/// `single_precision` (skimage computes them in the edges' precision).
std::vector<double> histogram_centers(std::span<const double> edges, bool single_precision);

/// Otsu's threshold: the center of the bin after which splitting the
/// histogram maximizes the between-class variance (the first such bin on
/// ties). Voxels strictly above it form the foreground.
/// REQUIRES: counts.size() == centers.size() >= 2, counts >= 0.
/// The bins of `edges` (as histogram_edges() makes them), set up once for the
/// cells of one histogram. `edges` must outlive it.
class HistogramBins {
 public:
  explicit HistogramBins(std::span<const double> edges);
  /// Adds the voxels of `cell` to `counts` (one entry per bin), each in the
  /// bin histogram_bin() gives it; NaN voxels are skipped.
  void add(const CellBuffer& cell, std::vector<int64_t>& counts) const;

 private:
  std::span<const double> edges_;
  int bins_;
  double lo_;
  double scale_;
  bool simd_;  // f32 cells binned by the vector loop (AVX-512, single-precision edges)
};

/// HistogramBins(edges).add(cell, counts).
void add_to_histogram(const CellBuffer& cell, std::span<const double> edges,
                      std::vector<int64_t>& counts);

double otsu_threshold(std::span<const int64_t> counts, std::span<const double> centers);

}  // namespace cellflow::nodes

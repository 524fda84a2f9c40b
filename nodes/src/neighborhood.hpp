// Private to cellflow_nodes: the window (neighbourhood) machinery shared by
// the native filters — radius params, halo boxes, separable 1-D passes (window
// sums, window min/max) and ball structuring elements decomposed into rows.
// Header-only templates for .cpp files; every function is reentrant.
//
// Convention: a kernel reads a C-contiguous buffer covering `in_box` and writes
// the voxels of `out_box` (inside in_box). Windows are clipped to in_box, which
// equals clipping them to the image as long as in_box = out_box grown by the
// window radius and clipped to the image (grow_clipped): every side of in_box
// is then either an image edge or at least one radius away from out_box.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>
#include <vector>

#include "cellflow/cache/box.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/graph/op.hpp"

namespace cellflow::nodes::detail {

/// Largest radius a window param accepts (a larger one is certainly a mistake,
/// and would make every cell read a huge halo).
inline constexpr int64_t kMaxWindowRadius = 4096;

/// Reads the int-or-per-axis-list param `name` as one radius per axis, each in
/// [0, kMaxWindowRadius]. Throws InvalidArgument naming the param.
inline std::vector<int64_t> get_radius(const Params& params, std::string_view name, int rank) {
  std::vector<int64_t> r = params.get_ints_per_axis(name, rank);
  for (int64_t v : r) {
    if (v < 0 || v > kMaxWindowRadius) {
      throw InvalidArgument(
          fmt::format("param \"{}\" must be in [0, {}] (got {})", name, kMaxWindowRadius, v));
    }
  }
  return r;
}

/// `box` grown by `radius` voxels on each side of each axis, clipped to [0, shape).
inline Box grow_clipped(const Box& box, const std::vector<int64_t>& radius, const Shape& shape) {
  return box.grow(Dims::from(radius)).intersect(Box::from_shape(shape));
}

/// Multiplies every radius by `k` (open/close need twice the radius of halo).
inline std::vector<int64_t> scaled(std::vector<int64_t> radius, int64_t k) {
  for (auto& v : radius) v *= k;
  return radius;
}

/// The geometry of a pass along one axis of a C-contiguous buffer: `outer`
/// slabs before the axis, `inner` contiguous elements per position after it,
/// `in_len` positions in, `out_len` positions out; output position j sits at
/// input position `offset + j`. The output buffer has the input's shape except
/// `out_len` along the axis.
struct AxisPass {
  int64_t outer = 1;
  int64_t inner = 1;
  int64_t in_len = 0;
  int64_t out_len = 0;
  int64_t offset = 0;

  /// The window of output position j: input positions [lo, hi) within radius r.
  int64_t lo(int64_t j, int64_t r) const { return std::max<int64_t>(0, offset + j - r); }
  int64_t hi(int64_t j, int64_t r) const { return std::min(in_len, offset + j + r + 1); }
};

/// The pass along `axis` of a buffer of `in_shape` that keeps positions
/// [offset, offset + out_len).
inline AxisPass axis_pass(const Shape& in_shape, int axis, int64_t offset, int64_t out_len) {
  AxisPass p;
  for (int d = 0; d < axis; ++d) p.outer *= in_shape[d];
  for (int d = axis + 1; d < in_shape.rank(); ++d) p.inner *= in_shape[d];
  p.in_len = in_shape[axis];
  p.out_len = out_len;
  p.offset = offset;
  return p;
}

/// out[j] = sum of f(in[k]) over the window of radius r around j (clipped),
/// with a running sum: O(1) per voxel whatever the radius. Accumulates in double.
template <class In, class F>
void window_sum_pass(const In* in, double* out, const AxisPass& p, int64_t r, F&& f) {
  const int64_t inner = p.inner;
  std::vector<double> acc(static_cast<size_t>(inner));
  for (int64_t o = 0; o < p.outer; ++o) {
    const In* src = in + o * p.in_len * inner;
    double* dst = out + o * p.out_len * inner;
    std::fill(acc.begin(), acc.end(), 0.0);
    int64_t lo = p.lo(0, r);
    int64_t hi = lo;
    for (int64_t j = 0; j < p.out_len; ++j) {
      for (const int64_t want = p.hi(j, r); hi < want; ++hi) {
        const In* s = src + hi * inner;
        for (int64_t i = 0; i < inner; ++i) acc[static_cast<size_t>(i)] += f(s[i]);
      }
      for (const int64_t want = p.lo(j, r); lo < want; ++lo) {
        const In* s = src + lo * inner;
        for (int64_t i = 0; i < inner; ++i) acc[static_cast<size_t>(i)] -= f(s[i]);
      }
      std::memcpy(dst + j * inner, acc.data(), static_cast<size_t>(inner) * sizeof(double));
    }
  }
}

/// Sums of f(x) over the box window of per-axis `radius` (clipped to in_box)
/// for every voxel of out_box, C-contiguous over out_box. One running-sum pass
/// per axis; the first converts from In.
template <class In, class F>
std::vector<double> window_sums(const In* in, const Box& in_box, const Box& out_box,
                                const std::vector<int64_t>& radius, F&& f) {
  const int rank = in_box.rank();
  Shape shape = in_box.shape();
  std::vector<double> cur;
  std::vector<double> next;
  for (int d = 0; d < rank; ++d) {
    const AxisPass p =
        axis_pass(shape, d, out_box.begin()[d] - in_box.begin()[d], out_box.shape()[d]);
    shape[d] = p.out_len;
    next.resize(static_cast<size_t>(shape.product()));
    const int64_t r = radius[static_cast<size_t>(d)];
    if (d == 0) {
      window_sum_pass(in, next.data(), p, r, f);
    } else {
      window_sum_pass(cur.data(), next.data(), p, r, [](double v) { return v; });
    }
    std::swap(cur, next);
  }
  return cur;
}

/// Per axis, the number of voxels of the (clipped) window of each out_box
/// position along that axis; the window's volume is their product.
inline std::vector<std::vector<int64_t>> window_counts(const Box& in_box, const Box& out_box,
                                                       const std::vector<int64_t>& radius) {
  std::vector<std::vector<int64_t>> counts(static_cast<size_t>(in_box.rank()));
  for (int d = 0; d < in_box.rank(); ++d) {
    const AxisPass p =
        axis_pass(in_box.shape(), d, out_box.begin()[d] - in_box.begin()[d], out_box.shape()[d]);
    auto& c = counts[static_cast<size_t>(d)];
    c.resize(static_cast<size_t>(p.out_len));
    const int64_t r = radius[static_cast<size_t>(d)];
    for (int64_t j = 0; j < p.out_len; ++j) c[static_cast<size_t>(j)] = p.hi(j, r) - p.lo(j, r);
  }
  return counts;
}

/// Smaller / larger of two values; a NaN loses to any number, so the result of
/// a window is its min / max over the non-NaN voxels (NaN only if all are NaN)
/// whatever the order of combination.
struct PickMin {
  template <class T>
  T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>) {
      return (b < a || a != a) ? b : a;
    } else {
      return b < a ? b : a;
    }
  }
};
struct PickMax {
  template <class T>
  T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>) {
      return (b > a || a != a) ? b : a;
    } else {
      return b > a ? b : a;
    }
  }
};

/// out[j] = pick over the window of radius r around j (clipped).
template <class T, class Pick>
void window_extremum_pass(const T* in, T* out, const AxisPass& p, int64_t r, Pick pick) {
  const int64_t inner = p.inner;
  for (int64_t o = 0; o < p.outer; ++o) {
    const T* src = in + o * p.in_len * inner;
    T* dst = out + o * p.out_len * inner;
    for (int64_t j = 0; j < p.out_len; ++j) {
      T* d = dst + j * inner;
      const int64_t lo = p.lo(j, r);
      const int64_t hi = p.hi(j, r);
      std::memcpy(d, src + lo * inner, static_cast<size_t>(inner) * sizeof(T));
      for (int64_t k = lo + 1; k < hi; ++k) {
        const T* s = src + k * inner;
        for (int64_t i = 0; i < inner; ++i) d[i] = pick(d[i], s[i]);
      }
    }
  }
}

/// Min or max over the box window of per-axis `radius` (clipped to in_box) for
/// every voxel of out_box, written to `out` (C-contiguous over out_box).
template <class T, class Pick>
void box_extremum(const T* in, const Box& in_box, T* out, const Box& out_box,
                  const std::vector<int64_t>& radius, Pick pick) {
  const int rank = in_box.rank();
  Shape shape = in_box.shape();
  std::vector<T> cur(in, in + in_box.volume());
  std::vector<T> next;
  for (int d = 0; d < rank; ++d) {
    const AxisPass p =
        axis_pass(shape, d, out_box.begin()[d] - in_box.begin()[d], out_box.shape()[d]);
    shape[d] = p.out_len;
    next.resize(static_cast<size_t>(shape.product()));
    window_extremum_pass(cur.data(), next.data(), p, radius[static_cast<size_t>(d)], pick);
    std::swap(cur, next);
  }
  std::memcpy(out, cur.data(), cur.size() * sizeof(T));
}

/// A ball (ellipsoid) structuring element as rows along the last axis: for
/// each offset of the other axes, the half-width of the row it contains. The
/// ball is ITK's BinaryBallStructuringElement / FlatStructuringElement::Ball:
/// offsets o with sum_d (o_d / (r_d + 0.5))^2 <= 1 (never exactly 1 for
/// integer offsets, so rounding cannot change it). A radius of 0 on an axis
/// flattens the ball on that axis.
struct BallRows {
  int lead_rank = 0;                // rank - 1: the axes the row offsets cover
  std::vector<int64_t> offsets;     // lead_rank entries per row, the centre row first
  std::vector<int64_t> half_width;  // per row, along the last axis
  int64_t rows() const { return static_cast<int64_t>(half_width.size()); }
};

/// Most rows a ball may have (its cross-section through the leading axes):
/// beyond this, building it would take gigabytes.
inline constexpr int64_t kMaxBallRows = int64_t{1} << 22;

/// Throws InvalidArgument naming `param` if the ball of `radius` has more than
/// kMaxBallRows rows.
inline void check_ball_size(const std::vector<int64_t>& radius, std::string_view param) {
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < radius.size(); ++d) {
    rows *= 2 * radius[d] + 1;
    if (rows > kMaxBallRows) {
      throw InvalidArgument(fmt::format(
          "param \"{}\" is too large for a ball (more than {} rows of voxels); use a smaller "
          "radius, a box, or a downsampled image",
          param, kMaxBallRows));
    }
  }
}

inline BallRows ball_rows(const std::vector<int64_t>& radius) {
  BallRows b;
  const int rank = static_cast<int>(radius.size());
  b.lead_rank = rank - 1;
  const auto term = [&](int d, int64_t o) {
    const double x =
        static_cast<double>(o) / (static_cast<double>(radius[static_cast<size_t>(d)]) + 0.5);
    return x * x;
  };
  const int64_t r_last = radius.back();
  const auto add_row = [&](const std::vector<int64_t>& o) {
    double s = 0.0;
    for (int d = 0; d < b.lead_rank; ++d) s += term(d, o[static_cast<size_t>(d)]);
    if (s > 1.0) return;
    int64_t w = r_last;
    while (w > 0 && s + term(rank - 1, w) > 1.0) --w;
    b.offsets.insert(b.offsets.end(), o.begin(), o.end());
    b.half_width.push_back(w);
  };
  std::vector<int64_t> o(static_cast<size_t>(b.lead_rank), 0);
  add_row(o);  // the centre row first: it is always inside the image
  if (b.lead_rank == 0) return b;
  for (int d = 0; d < b.lead_rank; ++d) o[static_cast<size_t>(d)] = -radius[static_cast<size_t>(d)];
  while (true) {
    if (std::any_of(o.begin(), o.end(), [](int64_t v) { return v != 0; })) add_row(o);
    int d = b.lead_rank - 1;
    for (; d >= 0; --d) {
      if (++o[static_cast<size_t>(d)] <= radius[static_cast<size_t>(d)]) break;
      o[static_cast<size_t>(d)] = -radius[static_cast<size_t>(d)];
    }
    if (d < 0) break;
  }
  return b;
}

/// Min or max over the ball `ball` (clipped to in_box) for every voxel of
/// out_box, written to `out` (C-contiguous over out_box). Each row of the ball
/// is a 1-D window along the last axis: those are computed once per distinct
/// half-width, then combined row by row.
template <class T, class Pick>
void ball_extremum(const T* in, const Box& in_box, T* out, const Box& out_box, const BallRows& ball,
                   Pick pick) {
  if (out_box.empty()) return;
  const int rank = in_box.rank();
  const int last = rank - 1;
  const Shape in_shape = in_box.shape();
  const AxisPass p = axis_pass(in_shape, last, out_box.begin()[last] - in_box.begin()[last],
                               out_box.shape()[last]);
  const int64_t out_len = p.out_len;

  // rows_by_width[w]: the 1-D window extremum of half-width w of every input row.
  int64_t max_w = 0;
  for (int64_t w : ball.half_width) max_w = std::max(max_w, w);
  std::vector<std::vector<T>> rows_by_width(static_cast<size_t>(max_w + 1));
  for (int64_t w : ball.half_width) {
    auto& buf = rows_by_width[static_cast<size_t>(w)];
    if (!buf.empty()) continue;
    buf.resize(static_cast<size_t>(p.outer * out_len));
    window_extremum_pass(in, buf.data(), p, w, pick);
  }

  // Walk the output rows (indexes of the leading axes, relative to out_box).
  std::vector<int64_t> q(static_cast<size_t>(last), 0);
  T* dst = out;
  const int64_t n_rows = out_box.volume() / out_len;
  for (int64_t row = 0; row < n_rows; ++row, dst += out_len) {
    bool first = true;
    for (int64_t k = 0; k < ball.rows(); ++k) {
      const int64_t* o = ball.offsets.data() + k * last;
      int64_t lin = 0;
      bool inside = true;
      for (int d = 0; d < last; ++d) {
        const int64_t pos =
            out_box.begin()[d] - in_box.begin()[d] + q[static_cast<size_t>(d)] + o[d];
        if (pos < 0 || pos >= in_shape[d]) {
          inside = false;
          break;
        }
        lin = lin * in_shape[d] + pos;
      }
      if (!inside) continue;
      const T* src =
          rows_by_width[static_cast<size_t>(ball.half_width[static_cast<size_t>(k)])].data() +
          lin * out_len;
      if (first) {
        std::memcpy(dst, src, static_cast<size_t>(out_len) * sizeof(T));
        first = false;
      } else {
        for (int64_t x = 0; x < out_len; ++x) dst[x] = pick(dst[x], src[x]);
      }
    }
    for (int d = last - 1; d >= 0; --d) {
      if (++q[static_cast<size_t>(d)] < out_box.shape()[d]) break;
      q[static_cast<size_t>(d)] = 0;
    }
  }
}

}  // namespace cellflow::nodes::detail

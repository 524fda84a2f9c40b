#include "cellflow/cache/box.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "cellflow/cache/error.hpp"

namespace cellflow {

Box::Box(Dims begin, Dims end) : begin_(begin), end_(end) {
  if (begin_.rank() != end_.rank())
    throw InvalidArgument(
        fmt::format("box begin {} and end {} differ in rank", begin_.str(), end_.str()));
}

Box Box::from_shape(const Shape& shape) { return Box(Dims(shape.rank(), 0), shape); }

Shape Box::shape() const {
  Shape s(rank());
  for (int i = 0; i < rank(); ++i) s[i] = std::max<int64_t>(0, end_[i] - begin_[i]);
  return s;
}

int64_t Box::volume() const { return shape().product(); }

bool Box::empty() const {
  for (int i = 0; i < rank(); ++i)
    if (end_[i] <= begin_[i]) return true;
  return false;
}

bool Box::contains(const Box& o) const {
  if (o.rank() != rank()) return false;
  for (int i = 0; i < rank(); ++i)
    if (o.begin_[i] < begin_[i] || o.end_[i] > end_[i]) return false;
  return true;
}

Box Box::intersect(const Box& o) const {
  Box r = *this;
  for (int i = 0; i < rank(); ++i) {
    r.begin_[i] = std::max(begin_[i], o.begin_[i]);
    r.end_[i] = std::max(r.begin_[i], std::min(end_[i], o.end_[i]));
  }
  return r;
}

Box Box::grow(const Dims& context) const { return grow(context, context); }

Box Box::grow(const Dims& before, const Dims& after) const {
  Box r = *this;
  for (int i = 0; i < rank(); ++i) {
    r.begin_[i] -= before[i];
    r.end_[i] += after[i];
  }
  return r;
}

Box Box::translate(const Dims& offset) const {
  Box r = *this;
  for (int i = 0; i < rank(); ++i) {
    r.begin_[i] += offset[i];
    r.end_[i] += offset[i];
  }
  return r;
}

std::string Box::str() const {
  std::string s = "[";
  for (int i = 0; i < rank(); ++i) s += fmt::format("{}{}:{}", i ? "," : "", begin_[i], end_[i]);
  return s + "]";
}

namespace {

// Copies one row of `n` bytes. Rows of padded cell inputs are short (a 32^3
// f32 cell with an 8-voxel halo: 32- and 128-byte pieces, thousands per
// cell), so rows up to 256 bytes are copied inline in at most a few vector
// moves instead of a call to memcpy each; the last move of a row may overlap
// the one before it, which is harmless between distinct buffers.
inline void copy_row(std::byte* d, const std::byte* s, size_t n) {
  if (n > 256) {
    std::memcpy(d, s, n);
  } else if (n >= 32) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) std::memcpy(d + i, s + i, 32);
    if (i < n) std::memcpy(d + n - 32, s + n - 32, 32);
  } else if (n >= 16) {
    std::memcpy(d, s, 16);
    std::memcpy(d + n - 16, s + n - 16, 16);
  } else if (n >= 8) {
    std::memcpy(d, s, 8);
    std::memcpy(d + n - 8, s + n - 8, 8);
  } else if (n >= 4) {
    std::memcpy(d, s, 4);
    std::memcpy(d + n - 4, s + n - 4, 4);
  } else {
    for (size_t i = 0; i < n; ++i) d[i] = s[i];
  }
}

}  // namespace

void copy_region(const void* src, const Box& src_box, void* dst, const Box& dst_box,
                 const Box& region, size_t element_size) {
  if (region.empty()) return;
  const int r = region.rank();
  // Row-major strides (in elements) of both buffers.
  std::array<int64_t, kMaxRank> ss{}, ds{};
  int64_t s = 1, d = 1;
  for (int i = r - 1; i >= 0; --i) {
    ss[static_cast<size_t>(i)] = s;
    ds[static_cast<size_t>(i)] = d;
    s *= src_box.end()[i] - src_box.begin()[i];
    d *= dst_box.end()[i] - dst_box.begin()[i];
  }
  // Merge trailing axes that are contiguous in both buffers into one long row.
  int inner = r - 1;
  int64_t row = region.end()[inner] - region.begin()[inner];
  while (inner > 0 && region.begin()[inner] == src_box.begin()[inner] &&
         region.end()[inner] == src_box.end()[inner] &&
         region.begin()[inner] == dst_box.begin()[inner] &&
         region.end()[inner] == dst_box.end()[inner]) {
    --inner;
    row *= region.end()[inner] - region.begin()[inner];
  }
  const size_t row_bytes = static_cast<size_t>(row) * element_size;
  const auto* sp = static_cast<const std::byte*>(src);
  auto* dp = static_cast<std::byte*>(dst);
  const auto offsets = [&](const Dims& idx, int64_t& so, int64_t& doff) {
    so = 0;
    doff = 0;
    for (int i = 0; i < r; ++i) {
      so += (idx[i] - src_box.begin()[i]) * ss[static_cast<size_t>(i)];
      doff += (idx[i] - dst_box.begin()[i]) * ds[static_cast<size_t>(i)];
    }
  };
  if (inner == 0) {  // one contiguous block
    int64_t so = 0, doff = 0;
    offsets(region.begin(), so, doff);
    std::memcpy(dp + static_cast<size_t>(doff) * element_size,
                sp + static_cast<size_t>(so) * element_size, row_bytes);
    return;
  }
  // Axes before `inner - 1` are walked index by index; the rows along axis
  // `inner - 1` follow each other at fixed strides.
  const int along = inner - 1;
  const int64_t n_rows = region.end()[along] - region.begin()[along];
  const size_t s_step = static_cast<size_t>(ss[static_cast<size_t>(along)]) * element_size;
  const size_t d_step = static_cast<size_t>(ds[static_cast<size_t>(along)]) * element_size;
  Dims ob = region.begin(), oe = region.end();
  for (int i = along; i < r; ++i) oe[i] = ob[i] + 1;
  for_each_index(Box(ob, oe), [&](const Dims& idx) {
    int64_t so = 0, doff = 0;
    offsets(idx, so, doff);
    const std::byte* sr = sp + static_cast<size_t>(so) * element_size;
    std::byte* dr = dp + static_cast<size_t>(doff) * element_size;
    for (int64_t j = 0; j < n_rows; ++j, sr += s_step, dr += d_step) copy_row(dr, sr, row_bytes);
  });
}

}  // namespace cellflow

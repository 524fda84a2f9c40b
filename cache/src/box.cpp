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
  Box outer = region;
  Dims ob = outer.begin(), oe = outer.end();
  for (int i = inner; i < r; ++i) oe[i] = ob[i] + 1;
  for_each_index(Box(ob, oe), [&](const Dims& idx) {
    int64_t so = 0, doff = 0;
    for (int i = 0; i < r; ++i) {
      so += (idx[i] - src_box.begin()[i]) * ss[static_cast<size_t>(i)];
      doff += (idx[i] - dst_box.begin()[i]) * ds[static_cast<size_t>(i)];
    }
    std::memcpy(dp + static_cast<size_t>(doff) * element_size,
                sp + static_cast<size_t>(so) * element_size, row_bytes);
  });
}

}  // namespace cellflow

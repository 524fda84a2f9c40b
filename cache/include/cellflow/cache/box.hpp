// Box: an N-D half-open integer region [begin, end), in array axis order
// (for 3-D: z, y, x). A value type; no synchronization needed.
#pragma once

#include <cstddef>
#include <string>

#include "cellflow/cache/dims.hpp"

namespace cellflow {

class Box {
 public:
  Box() = default;
  /// REQUIRES: begin.rank() == end.rank().
  Box(Dims begin, Dims end);
  /// The box [0, shape).
  static Box from_shape(const Shape& shape);

  int rank() const { return begin_.rank(); }
  const Dims& begin() const { return begin_; }
  const Dims& end() const { return end_; }
  Shape shape() const;
  /// Number of voxels (0 if empty).
  int64_t volume() const;
  bool empty() const;
  bool contains(const Box& other) const;

  Box intersect(const Box& other) const;
  /// Grows by `context` voxels on each side of each axis.
  Box grow(const Dims& context) const;
  Box grow(const Dims& before, const Dims& after) const;
  Box translate(const Dims& offset) const;
  std::string str() const;

  friend bool operator==(const Box& a, const Box& b) {
    return a.begin_ == b.begin_ && a.end_ == b.end_;
  }

 private:
  Dims begin_;
  Dims end_;
};

/// Copies `region` (global coordinates) from a C-contiguous buffer covering
/// `src_box` to one covering `dst_box`. REQUIRES: region inside both boxes.
void copy_region(const void* src, const Box& src_box, void* dst, const Box& dst_box,
                 const Box& region, size_t element_size);

/// Calls fn(index) for every index in `box`, last axis fastest.
template <class Fn>
void for_each_index(const Box& box, Fn&& fn) {
  if (box.empty()) return;
  Dims i = box.begin();
  const int r = box.rank();
  while (true) {
    fn(static_cast<const Dims&>(i));
    int d = r - 1;
    for (; d >= 0; --d) {
      if (++i[d] < box.end()[d]) break;
      i[d] = box.begin()[d];
    }
    if (d < 0) return;
  }
}

}  // namespace cellflow

#include "cellflow/cache/cell_buffer.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

namespace cellflow {

CellBuffer CellBuffer::allocate(DType dtype, const Shape& shape) {
  CellBuffer b;
  b.dtype_ = dtype;
  b.shape_ = shape;
  // Round up so that aligned_alloc's size requirement holds; never allocate 0.
  const size_t bytes = std::max<size_t>(64, (b.num_bytes() + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  b.data_ =
      std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [](std::byte* q) { std::free(q); });
  return b;
}

CellBuffer CellBuffer::zeros(DType dtype, const Shape& shape) {
  CellBuffer b = allocate(dtype, shape);
  std::memset(b.mutable_data(), 0, b.num_bytes());
  return b;
}

bool CellBuffer::equals(const CellBuffer& o) const {
  if (dtype_ != o.dtype_ || !(shape_ == o.shape_)) return false;
  if (data_ == o.data_) return true;
  if (!data_ || !o.data_) return false;
  return std::memcmp(data(), o.data(), num_bytes()) == 0;
}

}  // namespace cellflow

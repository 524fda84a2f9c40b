// CellBuffer: a contiguous, 64-byte aligned, C-ordered N-D array with shared
// ownership. Copies share the data. A buffer is filled once by its producer
// (mutable_data) and treated as immutable once shared; concurrent reads are safe.
#pragma once

#include <cstddef>
#include <memory>

#include "cellflow/cache/dims.hpp"
#include "cellflow/cache/dtype.hpp"

namespace cellflow {

class CellBuffer {
 public:
  CellBuffer() = default;
  /// Uninitialized storage for `shape` elements of `dtype`.
  static CellBuffer allocate(DType dtype, const Shape& shape);
  /// Zero-filled storage.
  static CellBuffer zeros(DType dtype, const Shape& shape);

  /// Large buffers (64 KiB and up) are mapped by cellflow and, once freed,
  /// kept for reuse by the next buffer of the same size, up to this many bytes
  /// in all (least recently freed unmapped first). Default 64 MiB; the memory
  /// cache sets it from its budget (MemoryCache::set_budget).
  static void set_pool_limit(size_t bytes);
  static size_t pool_limit();
  /// Bytes held by freed buffers awaiting reuse.
  static size_t pool_bytes();

  explicit operator bool() const { return data_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t num_elements() const { return shape_.product(); }
  size_t num_bytes() const { return static_cast<size_t>(num_elements()) * dtype_size(dtype_); }

  const std::byte* data() const { return data_.get(); }
  /// REQUIRES: the buffer is not yet shared with readers.
  std::byte* mutable_data() { return data_.get(); }
  template <class T>
  const T* as() const {
    return reinterpret_cast<const T*>(data_.get());
  }
  template <class T>
  T* mutable_as() {
    return reinterpret_cast<T*>(data_.get());
  }

  /// How many CellBuffer objects share this storage (for the memory cache).
  long use_count() const { return data_.use_count(); }
  /// Byte-wise equality of dtype, shape and contents.
  bool equals(const CellBuffer& other) const;

 private:
  std::shared_ptr<std::byte> data_;
  DType dtype_ = DType::kU8;
  Shape shape_;
};

}  // namespace cellflow

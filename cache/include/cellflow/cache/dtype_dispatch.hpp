// Runtime dispatch from a DType to a C++ element type, for kernels compiled
// once per type inside .cpp files. Include it only from .cpp files.
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

#include "cellflow/cache/dtype.hpp"

namespace cellflow {

template <class T>
struct TypeTag {
  using type = T;
};

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<uint8_t>() {
  return DType::kU8;
}
template <>
constexpr DType dtype_of<uint16_t>() {
  return DType::kU16;
}
template <>
constexpr DType dtype_of<uint32_t>() {
  return DType::kU32;
}
template <>
constexpr DType dtype_of<uint64_t>() {
  return DType::kU64;
}
template <>
constexpr DType dtype_of<int8_t>() {
  return DType::kI8;
}
template <>
constexpr DType dtype_of<int16_t>() {
  return DType::kI16;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::kI32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::kI64;
}
template <>
constexpr DType dtype_of<float>() {
  return DType::kF32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::kF64;
}

/// Calls fn(TypeTag<T>{}) with T the C++ type of `t`.
template <class Fn>
decltype(auto) dispatch_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::kU8:
      return fn(TypeTag<uint8_t>{});
    case DType::kU16:
      return fn(TypeTag<uint16_t>{});
    case DType::kU32:
      return fn(TypeTag<uint32_t>{});
    case DType::kU64:
      return fn(TypeTag<uint64_t>{});
    case DType::kI8:
      return fn(TypeTag<int8_t>{});
    case DType::kI16:
      return fn(TypeTag<int16_t>{});
    case DType::kI32:
      return fn(TypeTag<int32_t>{});
    case DType::kI64:
      return fn(TypeTag<int64_t>{});
    case DType::kF32:
      return fn(TypeTag<float>{});
    case DType::kF64:
      break;
  }
  return fn(TypeTag<double>{});
}

/// Converts a double to T: rounds to nearest and saturates for integer T.
template <class T>
inline T saturate_cast(double v) {
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(v);
  } else {
    if (!(v == v)) return T{0};  // NaN
    const double lo = static_cast<double>(std::numeric_limits<T>::lowest());
    const double hi = static_cast<double>(std::numeric_limits<T>::max());
    if (v <= lo) return std::numeric_limits<T>::lowest();
    if (v >= hi) return std::numeric_limits<T>::max();
    return static_cast<T>(v < 0 ? v - 0.5 : v + 0.5);
  }
}

}  // namespace cellflow

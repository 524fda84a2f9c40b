// DType: the element types of cellflow images, with names ("f32") and the
// Zarr v2 type strings ("<f4"). Plain values; thread-safe.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace cellflow {

enum class DType { kU8, kU16, kU32, kU64, kI8, kI16, kI32, kI64, kF32, kF64 };

size_t dtype_size(DType t);
/// "u8", "f32", ...
std::string_view dtype_name(DType t);
/// Parses "u8".."f64" (also "uint8", "float32", ...); nullopt if unknown.
std::optional<DType> parse_dtype(std::string_view name);
/// Zarr v2 / numpy type string: "|u1", "<f4", ...
std::string zarr_dtype(DType t);
std::optional<DType> parse_zarr_dtype(std::string_view s);
bool dtype_is_float(DType t);
bool dtype_is_signed(DType t);
/// Lowest and highest representable values, as double.
double dtype_min(DType t);
double dtype_max(DType t);

}  // namespace cellflow

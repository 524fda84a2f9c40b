// cereal support for cellflow's value types, so that they can be arguments and
// results of memoized calls (memoize.hpp) or members of user structs:
//   CellBuffer: binary archives store dtype, shape and the raw bytes (little-
//               endian hosts; the bytes are not swapped); the JSON archive
//               writes a summary {dtype, shape, bytes} (it is write-only there).
//   Table:      its compact binary form (Table::serialize) in binary archives;
//               columns and rows in JSON.
// Stateless functions; thread-safe.
#pragma once

#include <cereal/archives/binary.hpp>
#include <cereal/archives/json.hpp>
#include <cereal/archives/portable_binary.hpp>
#include <cereal/cereal.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "cellflow/cache/cell_buffer.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/table.hpp"

namespace cellflow {
namespace detail {

template <class A>
inline constexpr bool kBinaryOutput = std::is_same_v<A, cereal::BinaryOutputArchive> ||
                                      std::is_same_v<A, cereal::PortableBinaryOutputArchive>;
template <class A>
inline constexpr bool kBinaryInput = std::is_same_v<A, cereal::BinaryInputArchive> ||
                                     std::is_same_v<A, cereal::PortableBinaryInputArchive>;

/// Parses a dtype name written by save(); throws CorruptionError otherwise.
DType dtype_from_archive(const std::string& name);

}  // namespace detail

template <class Archive>
requires detail::kBinaryOutput<Archive>
void save(Archive& ar, const CellBuffer& b) {
  const bool present = static_cast<bool>(b);
  ar(present);
  if (!present) return;
  ar(std::string(dtype_name(b.dtype())), b.shape().to_vector());
  ar(cereal::binary_data(b.data(), b.num_bytes()));
}

template <class Archive>
requires detail::kBinaryInput<Archive>
void load(Archive& ar, CellBuffer& b) {
  bool present = false;
  ar(present);
  if (!present) {
    b = CellBuffer();
    return;
  }
  std::string dtype;
  std::vector<int64_t> shape;
  ar(dtype, shape);
  if (shape.size() > static_cast<size_t>(kMaxRank))
    throw CorruptionError("stored image has rank " + std::to_string(shape.size()));
  b = CellBuffer::allocate(detail::dtype_from_archive(dtype), Shape::from(shape));
  ar(cereal::binary_data(b.mutable_data(), b.num_bytes()));
}

/// JSON is only written (entry.json of memo entries): a summary, not the data.
inline void save(cereal::JSONOutputArchive& ar, const CellBuffer& b) {
  if (!b) {
    ar(cereal::make_nvp("image", std::string("empty")));
    return;
  }
  ar(cereal::make_nvp("dtype", std::string(dtype_name(b.dtype()))),
     cereal::make_nvp("shape", b.shape().to_vector()),
     cereal::make_nvp("bytes", static_cast<uint64_t>(b.num_bytes())));
}

template <class Archive>
requires detail::kBinaryOutput<Archive>
void save(Archive& ar, const Table& t) { ar(t.serialize()); }

template <class Archive>
requires detail::kBinaryInput<Archive>
void load(Archive& ar, Table& t) {
  std::string bytes;
  ar(bytes);
  t = Table::deserialize(bytes, "stored table");
}

inline void save(cereal::JSONOutputArchive& ar, const Table& t) {
  std::vector<std::vector<double>> rows;
  rows.reserve(t.num_rows());
  for (size_t r = 0; r < t.num_rows(); ++r) rows.emplace_back(t.row(r).begin(), t.row(r).end());
  ar(cereal::make_nvp("columns", t.columns()), cereal::make_nvp("rows", rows));
}

}  // namespace cellflow

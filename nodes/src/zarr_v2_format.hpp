// Private to cellflow_nodes: the bytes of a foreign Zarr v2 array as read.zarr
// reads them — its .zarray text and its stored chunks — with no file access,
// so that the parsing is testable (and fuzzed, tests/fuzz) on its own.
// Stateless functions; safe from any thread.
#pragma once

#include <array>
#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include "cellflow/cache/dims.hpp"
#include "cellflow/cache/dtype.hpp"

namespace cellflow::nodes::detail {

enum class Codec { kNone, kBlosc, kZstd, kZlib, kGzip };

/// What a .zarray says, reduced to what reading needs.
struct ZarrMeta {
  Shape shape;
  Shape chunks;
  DType dtype = DType::kU8;
  bool big_endian = false;
  Codec codec = Codec::kNone;
  char separator = '.';
  /// One element holding fill_value, in native byte order.
  std::array<std::byte, 8> fill{};
  bool fill_is_zero = true;
};

/// Parses the text of a .zarray; `meta` (the file) is named in errors. Throws
/// InvalidArgument ("param \"path\": ...") for anything read.zarr cannot read.
ZarrMeta parse_zarray(std::string_view text, const std::filesystem::path& meta);

/// The size of one stored chunk in bytes (edge chunks are stored full-size;
/// parse_zarray keeps it below 2^39).
size_t chunk_bytes(const ZarrMeta& meta);

/// Decodes a stored chunk into `out` (exactly chunk_bytes(meta) long), in
/// native byte order. Throws CorruptionError naming `what` when the chunk
/// does not decode to exactly that size.
void decode_chunk(const ZarrMeta& meta, std::string_view stored, std::byte* out,
                  const std::string& what);

}  // namespace cellflow::nodes::detail

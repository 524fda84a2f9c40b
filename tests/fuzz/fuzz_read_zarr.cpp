// read.zarr's reading of a foreign Zarr v2 array (nodes/src/zarr_v2_format):
// the input is a .zarray text, a NUL byte, then one stored chunk. The .zarray
// either parses or throws cellflow::Error; the chunk then decodes into exactly
// one chunk's bytes with its codec (blosc, zstd, zlib, gzip or none) or
// throws cellflow::Error.
#include <vector>

#include "cellflow/cache/error.hpp"
#include "fuzz_input.hpp"
#include "zarr_v2_format.hpp"

namespace detail = cellflow::nodes::detail;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = cellflow::fuzz::split_parts(cellflow::fuzz::as_text(data, size), 2);
  detail::ZarrMeta meta;
  try {
    meta = detail::parse_zarray(parts[0], "fuzz/.zarray");
  } catch (const cellflow::Error&) {
    return 0;
  }
  // A chunk this large is legal; it is only not worth allocating per input.
  const size_t bytes = detail::chunk_bytes(meta);
  if (bytes > (size_t{1} << 22)) return 0;
  std::vector<std::byte> out(bytes);
  try {
    detail::decode_chunk(meta, parts[1], out.data(), "fuzz/0.0");
  } catch (const cellflow::Error&) {
  }
  return 0;
}

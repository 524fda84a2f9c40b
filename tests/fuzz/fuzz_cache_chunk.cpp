// The cache's chunk files (ZarrArray::decode_chunk / decode_chunk_any /
// migrate_format1_chunk): a blosc frame followed by the checksum trailer. The
// first input byte chooses how the rest is used: odd, as a whole stored file
// (trailer included); even, as a blosc frame that gets a valid trailer here,
// so that the fuzzer gets past the checksum to blosc's header and decoder.
// Every input either decodes or throws cellflow::Error.
#include <blosc.h>

#include <string>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "fuzz_input.hpp"

namespace {
constexpr std::string_view kIdentity = "0123456789abcdef0123456789abcdef/0:0,0";
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest = cellflow::fuzz::as_text(data + 1, size - 1);
  const std::string stored =
      (data[0] & 1) != 0 ? std::string(rest) : cellflow::fuzz::seal(rest, kIdentity);
  if (stored.size() >= BLOSC_MIN_HEADER_LENGTH) {
    // A frame that claims a large (legal) size is only not worth allocating per input.
    size_t nbytes = 0, cbytes = 0, blocksize = 0;
    blosc_cbuffer_sizes(stored.data(), &nbytes, &cbytes, &blocksize);
    if (nbytes > (size_t{1} << 22) && nbytes <= static_cast<size_t>(BLOSC_MAX_BUFFERSIZE)) return 0;
  }
  try {
    const std::string decoded = cellflow::ZarrArray::decode_chunk_any(stored, "fuzz", kIdentity);
    // The fixed-size decoder agrees with the any-size one.
    std::string again(decoded.size(), '\0');
    cellflow::ZarrArray::decode_chunk(stored, again.data(), again.size(), "fuzz", kIdentity);
    CELLFLOW_FUZZ_CHECK(again == decoded);
  } catch (const cellflow::Error&) {
  }
  try {
    const std::string migrated =
        cellflow::ZarrArray::migrate_format1_chunk(stored, "fuzz", kIdentity);
    CELLFLOW_FUZZ_CHECK(migrated.size() == stored.size());
  } catch (const cellflow::Error&) {
  }
  return 0;
}

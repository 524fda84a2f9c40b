// Helpers shared by the fuzz targets: an input as text, split into parts, a
// blosc frame sealed as a cache chunk, and a property check that stops the run
// (libFuzzer saves the input) when a property fails. Messages never print the
// input (it may be binary).
#pragma once

#include <xxhash.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace cellflow::fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// The input cut at its first `parts - 1` NUL bytes (JSON text never holds a
/// raw NUL, so a JSON part ends there); missing parts are empty.
inline std::vector<std::string_view> split_parts(std::string_view input, size_t parts) {
  std::vector<std::string_view> out;
  while (out.size() + 1 < parts) {
    const size_t nul = input.find('\0');
    if (nul == std::string_view::npos) break;
    out.push_back(input.substr(0, nul));
    input.remove_prefix(nul + 1);
  }
  out.push_back(input);
  out.resize(parts);
  return out;
}

/// `frame` with the checksum trailer ZarrArray::encode_chunk writes after it
/// (zarr_array.cpp): the XXH3-64 of the frame seeded with the XXH3-64 of
/// `identity`, little-endian, then the magic. Lets a fuzzer's frame past the
/// checksum to the decoder.
inline std::string seal(std::string_view frame, std::string_view identity) {
  std::string out(frame);
  const uint64_t sum = XXH3_64bits_withSeed(frame.data(), frame.size(),
                                            XXH3_64bits(identity.data(), identity.size()));
  for (int i = 0; i < 8; ++i) out += static_cast<char>((sum >> (8 * i)) & 0xff);
  out += "CFLWXH32";
  return out;
}

[[noreturn]] inline void property_failed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: property failed: %s\n", file, line, what);
  std::abort();
}

}  // namespace cellflow::fuzz

#define CELLFLOW_FUZZ_CHECK(cond) \
  ((cond) ? void(0) : ::cellflow::fuzz::property_failed(#cond, __FILE__, __LINE__))

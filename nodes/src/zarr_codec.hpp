// What read.zarr's Zarr v2 and v3 readers and read.n5 share: decompressors (blosc, zstd,
// zlib, gzip), crc32c, byte swapping, fill values, and ChunkSource, the
// interface the node's kernel reads chunks through. Private to nodes/.
// Thread-safety: everything here is safe to call concurrently.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "cellflow/cache/box.hpp"
#include "cellflow/cache/dims.hpp"
#include "cellflow/cache/dtype.hpp"
#include "cellflow/cache/value.hpp"

namespace cellflow::nodes::zarr {

/// A metadata problem of the array at `meta` (its .zarray or zarr.json):
/// InvalidArgument "param \"path\": <meta>: <why>".
[[noreturn]] void bad_array(const std::filesystem::path& meta, const std::string& why);

/// The JSON object of metadata file `meta` (text `text`), whose
/// "zarr_format" must be `format`.
Value parse_metadata(const std::filesystem::path& meta, const std::string& text, int format);

/// A list of 1..kMaxRank integers, field `key` of `z` (which must be > 0 when `positive`).
Shape dims_field(const Value& z, const char* key, const std::filesystem::path& meta, bool positive);

/// The limits every image has (sizes that overflow int64 somewhere, elements
/// per chunk), checked where the metadata is read so that the error names
/// the file and chunk sizes cannot overflow later.
void check_grid(const Shape& shape, const Shape& chunks, const std::filesystem::path& meta);

/// The dtype a data type name of Zarr v3 or N5 stands for ("uint8".."uint64",
/// "int8".."int64", "float32", "float64", and with `allow_bool` "bool", read
/// as u8); nullopt for anything else, `v` null or not a string included.
std::optional<DType> parse_type_name(const Value* v, bool allow_bool);

enum class Compressor { kNone, kBlosc, kZstd, kZlib, kGzip };

/// Decompresses `stored` into exactly `bytes` bytes at `out`; throws
/// CorruptionError naming `what` when the data does not decode to that size.
void decompress(Compressor c, const std::string& stored, std::byte* out, size_t bytes,
                const std::string& what);

/// CRC-32C (Castagnoli), as Zarr v3's crc32c codec and iSCSI define it.
uint32_t crc32c(const void* data, size_t size);

/// Reverses the byte order of `count` elements of `size` bytes.
void swap_bytes(std::byte* data, size_t count, size_t size);

/// One element holding an array's fill_value, in native byte order.
struct FillValue {
  std::array<std::byte, 8> bytes{};
  bool zero = true;
};

/// fill_value `v` (null: 0; numbers, booleans, "NaN", "Infinity",
/// "-Infinity", and for floats "0x..." bit patterns) as a `dtype` element.
FillValue parse_fill(const Value* v, DType dtype, const std::filesystem::path& meta);

/// Fills `region` (inside `box`) of a C-contiguous buffer covering `box` with `fill`.
void fill_region(std::byte* out, const Box& box, const Box& region, const FillValue& fill,
                 size_t size);

/// Where a Zarr array's chunks come from (v2 chunk files, v3 chunk files or
/// v3 shards): chunk `chunk` of the array's read grid, decoded.
class ChunkSource {
 public:
  virtual ~ChunkSource() = default;
  /// Decodes the chunk into `out` (the full chunk shape, C order, native
  /// byte order). Returns false, leaving `out` alone, when it is not stored
  /// (it reads as the fill value). Throws CorruptionError naming the file
  /// when it is stored but cannot be decoded to exactly its size.
  virtual bool read(const CellIndex& chunk, std::byte* out) const = 0;
  /// The file that holds `chunk` (a chunk or shard file; it need not exist),
  /// or empty when unknown: read.zarr checks that its folder did not change
  /// since the graph was built.
  virtual std::filesystem::path file_of(const CellIndex& /*chunk*/) const { return {}; }
};

/// An array opened for reading.
struct OpenedArray {
  Shape shape;
  /// The chunks the array is read by (for a sharded array, the inner chunks).
  Shape chunks;
  DType dtype = DType::kU8;
  FillValue fill;
  std::unique_ptr<ChunkSource> source;
  /// The metadata file and its text (part of the node's identity).
  std::filesystem::path meta_file;
  std::string meta_text;
};

}  // namespace cellflow::nodes::zarr

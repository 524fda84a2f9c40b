// Zarr v3 arrays for read.zarr (see zarr_v3.hpp). A chunk's codecs are a
// chain: array->array codecs (transpose), one array->bytes codec (bytes or
// sharding_indexed, whose inner chunks have a chain of their own), then
// bytes->bytes codecs (compressors, crc32c); decoding runs it backwards.
// A sharded array is read by inner chunk: the shard's index, then only the
// bytes of the inner chunk asked for.
#include "zarr_v3.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"
#include "ops.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes::zarr {
namespace {

constexpr uint64_t kNoChunk = ~uint64_t{0};

enum class BytesCodec { kCrc32c, kBlosc, kZstd, kGzip };

struct Chain;

struct Sharding {
  Shape inner;  // inner chunk shape
  std::shared_ptr<const Chain> codecs;
  bool index_big_endian = false;
  int index_crcs = 0;  // crc32c codecs after the index's bytes codec
  bool index_at_end = true;
};

struct Chain {
  std::vector<std::vector<int>> transposes;  // in encoding order
  bool big_endian = false;                   // the bytes codec
  std::optional<Sharding> sharding;          // instead of the bytes codec
  std::vector<BytesCodec> bytes_codecs;      // in encoding order
};

/// Parses metadata fields, naming the file and the field in every refusal.
class Parser {
 public:
  Parser(fs::path meta, size_t elem) : meta_(std::move(meta)), elem_(elem) {}

  [[noreturn]] void refuse(const std::string& field, const std::string& why) const {
    bad_array(meta_, fmt::format("{}: {}", field, why));
  }

  /// A codec list for chunks of `shape`.
  Chain chain(const Value* codecs, const Shape& shape, const std::string& field) const {
    if (codecs == nullptr || !codecs->is_array() || codecs->as_array().empty())
      refuse(field, "must be a non-empty list of codecs");
    Chain c;
    bool have_array_to_bytes = false;
    bool size_known = true;  // the encoded size so far is fixed
    const auto& list = codecs->as_array();
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string where = fmt::format("{}[{}]", field, i);
      const auto [name, config] = codec(list[i], where);
      if (name == "transpose") {
        if (have_array_to_bytes) refuse(where, "transpose must come before \"bytes\"");
        c.transposes.push_back(order(config, shape.rank(), where));
      } else if (name == "bytes" || name == "sharding_indexed") {
        if (have_array_to_bytes) refuse(where, "a second array->bytes codec");
        have_array_to_bytes = true;
        if (name == "bytes") {
          c.big_endian = endian(config, where);
        } else {
          if (!c.transposes.empty())
            refuse(where, "transpose before sharding_indexed is not supported");
          c.sharding = sharding(config, shape, where);
          size_known = false;
        }
      } else if (name == "crc32c") {
        if (!have_array_to_bytes) refuse(where, "crc32c must come after \"bytes\"");
        only_keys(config, {}, where);
        c.bytes_codecs.push_back(BytesCodec::kCrc32c);
      } else if (name == "blosc" || name == "zstd" || name == "gzip") {
        if (!have_array_to_bytes) refuse(where, name + " must come after \"bytes\"");
        if (!size_known) {
          refuse(where, fmt::format("{} after sharding_indexed or after another compressor is "
                                    "not supported",
                                    name));
        }
        size_known = false;
        c.bytes_codecs.push_back(name == "blosc"  ? BytesCodec::kBlosc
                                 : name == "zstd" ? BytesCodec::kZstd
                                                  : BytesCodec::kGzip);
      } else {
        refuse(where, fmt::format("codec \"{}\" is not supported (supported: transpose, bytes, "
                                  "sharding_indexed, blosc, zstd, gzip, crc32c)",
                                  name));
      }
    }
    if (!have_array_to_bytes) refuse(field, "has no \"bytes\" or \"sharding_indexed\" codec");
    return c;
  }

 private:
  std::pair<std::string, const Value*> codec(const Value& v, const std::string& where) const {
    if (v.is_string()) return {v.as_string(), nullptr};
    const Value* name = v.is_object() ? v.find("name") : nullptr;
    if (name == nullptr || !name->is_string()) refuse(where, "a codec must have a \"name\"");
    for (const auto& [key, value] : v.as_object()) {
      if (key != "name" && key != "configuration" &&
          !(value.is_object() && value.find("must_understand") != nullptr &&
            value.find("must_understand")->is_bool() &&
            !value.find("must_understand")->as_bool())) {
        refuse(where, fmt::format("field \"{}\" is not supported", key));
      }
    }
    const Value* config = v.find("configuration");
    if (config != nullptr && !config->is_object())
      refuse(where, "\"configuration\" must be an object");
    return {name->as_string(), config};
  }

  /// Refuses configuration keys outside `known` (they could change the meaning).
  void only_keys(const Value* config, std::initializer_list<std::string_view> known,
                 const std::string& where) const {
    if (config == nullptr) return;
    for (const auto& [key, value] : config->as_object()) {
      if (std::find(known.begin(), known.end(), key) == known.end())
        refuse(where, fmt::format("configuration field \"{}\" is not supported", key));
    }
  }

  bool endian(const Value* config, const std::string& where) const {
    only_keys(config, {"endian"}, where);
    const Value* e = config != nullptr ? config->find("endian") : nullptr;
    if (e == nullptr || e->is_null()) {
      if (elem_ > 1) refuse(where, "\"endian\" is required for multi-byte data types");
      return false;
    }
    if (!e->is_string() || (e->as_string() != "little" && e->as_string() != "big"))
      refuse(where, fmt::format("endian {} must be \"little\" or \"big\"", to_json_compact(*e)));
    return e->as_string() == "big" && elem_ > 1;
  }

  std::vector<int> order(const Value* config, int rank, const std::string& where) const {
    only_keys(config, {"order"}, where);
    const Value* o = config != nullptr ? config->find("order") : nullptr;
    std::vector<int> out(static_cast<size_t>(rank));
    for (int d = 0; d < rank; ++d) out[static_cast<size_t>(d)] = d;
    if (o != nullptr && o->is_string() && (o->as_string() == "C" || o->as_string() == "F")) {
      if (o->as_string() == "F") std::reverse(out.begin(), out.end());
      return out;
    }
    if (o == nullptr || !o->is_array() || o->as_array().size() != static_cast<size_t>(rank))
      refuse(where, fmt::format("transpose \"order\" must list the {} axes", rank));
    std::vector<bool> seen(static_cast<size_t>(rank), false);
    for (int d = 0; d < rank; ++d) {
      const Value& a = o->as_array()[static_cast<size_t>(d)];
      if (!a.is_int() || a.as_int() < 0 || a.as_int() >= rank || seen[a.as_int()])
        refuse(where, fmt::format("transpose \"order\" {} is not a permutation of 0..{}",
                                  to_json_compact(*o), rank - 1));
      seen[a.as_int()] = true;
      out[static_cast<size_t>(d)] = static_cast<int>(a.as_int());
    }
    return out;
  }

  Sharding sharding(const Value* config, const Shape& shape, const std::string& where) const {
    only_keys(config, {"chunk_shape", "codecs", "index_codecs", "index_location"}, where);
    if (config == nullptr) refuse(where, "sharding_indexed needs a \"configuration\"");
    Sharding s;
    s.inner = dims_field(*config, "chunk_shape", meta_, true);
    if (s.inner.rank() != shape.rank())
      refuse(where, "\"chunk_shape\" and the chunk shape differ in rank");
    for (int d = 0; d < shape.rank(); ++d) {
      if (shape[d] % s.inner[d] != 0)
        refuse(where, fmt::format("inner chunk_shape {} does not divide the shard shape {}",
                                  s.inner.str(), shape.str()));
    }
    s.codecs = std::make_shared<const Chain>(
        chain(config->find("codecs"), s.inner, where + ".configuration.codecs"));
    if (const Value* loc = config->find("index_location"); loc != nullptr) {
      if (!loc->is_string() || (loc->as_string() != "start" && loc->as_string() != "end"))
        refuse(where, fmt::format("index_location {} must be \"start\" or \"end\"",
                                  to_json_compact(*loc)));
      s.index_at_end = loc->as_string() == "end";
    }
    // The index has a fixed size: only bytes, then crc32c.
    const std::string index_field = where + ".configuration.index_codecs";
    const Value* ic = config->find("index_codecs");
    if (ic == nullptr || !ic->is_array() || ic->as_array().empty())
      refuse(index_field, "must be a non-empty list of codecs");
    const Parser index_parser(meta_, 8);
    for (size_t i = 0; i < ic->as_array().size(); ++i) {
      const std::string w = fmt::format("{}[{}]", index_field, i);
      const auto [name, cfg] = codec(ic->as_array()[i], w);
      if (i == 0 && name == "bytes") {
        s.index_big_endian = index_parser.endian(cfg, w);
      } else if (i > 0 && name == "crc32c") {
        ++s.index_crcs;
      } else {
        refuse(w, fmt::format("index codec \"{}\" is not supported here (supported: \"bytes\" "
                              "then \"crc32c\")",
                              name));
      }
    }
    return s;
  }

  fs::path meta_;
  size_t elem_;
};

/// Strips and checks a trailing crc32c.
void check_crc32c(std::string& data, const std::string& what) {
  if (data.size() < 4)
    throw CorruptionError(
        fmt::format("{}: {} bytes, too short for its crc32c checksum", what, data.size()));
  const size_t n = data.size() - 4;
  uint32_t stored = 0;
  for (int i = 3; i >= 0; --i)
    stored = (stored << 8) | static_cast<unsigned char>(data[n + static_cast<size_t>(i)]);
  const uint32_t computed = crc32c(data.data(), n);
  if (stored != computed) {
    throw CorruptionError(fmt::format(
        "{}: crc32c checksum mismatch (stored {:08x}, computed {:08x}): the data is damaged", what,
        stored, computed));
  }
  data.resize(n);
}

/// The (offset, nbytes) pairs of a shard index, encoded as `s` says.
std::vector<uint64_t> parse_index(const Sharding& s, std::string data, size_t entries,
                                  const std::string& what) {
  for (int i = 0; i < s.index_crcs; ++i) check_crc32c(data, what + " (shard index)");
  if (data.size() != entries * 16)
    throw CorruptionError(
        fmt::format("{}: shard index of {} bytes, expected {}", what, data.size(), entries * 16));
  std::vector<uint64_t> out(entries * 2);
  std::memcpy(out.data(), data.data(), data.size());
  if (s.index_big_endian != (std::endian::native == std::endian::big))
    swap_bytes(reinterpret_cast<std::byte*>(out.data()), out.size(), 8);
  return out;
}

size_t index_size(const Sharding& s, size_t entries) {
  return entries * 16 + 4 * static_cast<size_t>(s.index_crcs);
}

/// Inner chunks per shard along each axis.
Shape chunks_per_shard(const Shape& shard, const Shape& inner) {
  Shape n = shard;
  for (int d = 0; d < n.rank(); ++d) n[d] = shard[d] / inner[d];
  return n;
}

/// A[idx] = B[j] with j[i] = idx[order[i]]: undoes one transpose.
void untranspose(const std::byte* b, const Shape& b_shape, std::byte* a, const Shape& a_shape,
                 const std::vector<int>& order, size_t elem) {
  const int r = a_shape.rank();
  const std::byte* src = b;
  for_each_index(Box(Dims(r, 0), b_shape), [&](const Dims& j) {
    Dims idx(r);
    for (int i = 0; i < r; ++i) idx[order[static_cast<size_t>(i)]] = j[i];
    std::memcpy(a + static_cast<size_t>(detail::linear_offset(a_shape, idx)) * elem, src, elem);
    src += elem;
  });
}

void decode(const Chain& c, const Shape& shape, size_t elem, const FillValue& fill,
            std::string data, std::byte* out, const std::string& what);

/// Decodes a whole shard held in memory (a sharded inner chain).
void decode_shard(const Sharding& s, const Shape& shape, size_t elem, const FillValue& fill,
                  const std::string& data, std::byte* out, const std::string& what) {
  const Shape per = chunks_per_shard(shape, s.inner);
  const size_t entries = static_cast<size_t>(per.product());
  const size_t isize = index_size(s, entries);
  if (data.size() < isize)
    throw CorruptionError(fmt::format("{}: shard of {} bytes, shorter than its index ({} bytes)",
                                      what, data.size(), isize));
  const std::vector<uint64_t> index =
      parse_index(s, data.substr(s.index_at_end ? data.size() - isize : 0, isize), entries, what);
  const Box whole(Dims(shape.rank(), 0), shape);
  std::vector<std::byte> scratch(static_cast<size_t>(s.inner.product()) * elem);
  for (size_t i = 0; i < entries; ++i) {
    const CellIndex pos = CellGrid(per, Shape(per.rank(), 1)).cell_at(static_cast<int64_t>(i));
    Dims begin(shape.rank());
    Dims end(shape.rank());
    for (int d = 0; d < shape.rank(); ++d) {
      begin[d] = pos[d] * s.inner[d];
      end[d] = begin[d] + s.inner[d];
    }
    const Box box(begin, end);
    const uint64_t offset = index[2 * i];
    const uint64_t nbytes = index[2 * i + 1];
    if (offset == kNoChunk && nbytes == kNoChunk) {
      fill_region(out, whole, box, fill, elem);
      continue;
    }
    if (offset > data.size() || nbytes > data.size() - offset)
      throw CorruptionError(fmt::format(
          "{}: shard index entry {} points outside the shard (offset {}, {} bytes, shard of {} "
          "bytes)",
          what, i, offset, nbytes, data.size()));
    decode(*s.codecs, s.inner, elem, fill, data.substr(offset, nbytes), scratch.data(), what);
    copy_region(scratch.data(), box, out, whole, box, elem);
  }
}

void decode(const Chain& c, const Shape& shape, size_t elem, const FillValue& fill,
            std::string data, std::byte* out, const std::string& what) {
  const size_t n = static_cast<size_t>(shape.product());
  // The size each bytes->bytes codec was given when encoding, where fixed.
  std::vector<std::optional<size_t>> in_size(c.bytes_codecs.size());
  std::optional<size_t> size;
  if (!c.sharding) size = n * elem;
  for (size_t i = 0; i < c.bytes_codecs.size(); ++i) {
    in_size[i] = size;
    size =
        c.bytes_codecs[i] == BytesCodec::kCrc32c && size ? std::optional(*size + 4) : std::nullopt;
  }
  for (size_t i = c.bytes_codecs.size(); i-- > 0;) {
    const BytesCodec codec = c.bytes_codecs[i];
    if (codec == BytesCodec::kCrc32c) {
      check_crc32c(data, what);
      continue;
    }
    std::string decoded(*in_size[i], '\0');  // fixed: the parser refuses the rest
    decompress(codec == BytesCodec::kBlosc  ? Compressor::kBlosc
               : codec == BytesCodec::kZstd ? Compressor::kZstd
                                            : Compressor::kGzip,
               data, reinterpret_cast<std::byte*>(decoded.data()), decoded.size(), what);
    data = std::move(decoded);
  }
  // The shapes the array->array codecs saw.
  std::vector<Shape> shapes{shape};
  for (const auto& order : c.transposes) {
    Shape t = shapes.back();
    for (int i = 0; i < t.rank(); ++i) t[i] = shapes.back()[order[static_cast<size_t>(i)]];
    shapes.push_back(t);
  }
  std::vector<std::byte> tmp;
  std::byte* dst = out;
  if (!c.transposes.empty()) {
    tmp.resize(n * elem);
    dst = tmp.data();
  }
  if (c.sharding) {
    decode_shard(*c.sharding, shapes.back(), elem, fill, data, dst, what);
  } else {
    if (data.size() != n * elem)
      throw CorruptionError(fmt::format("{}: {} bytes after decoding, expected {} (chunk {})", what,
                                        data.size(), n * elem, shape.str()));
    std::memcpy(dst, data.data(), data.size());
    if (c.big_endian) swap_bytes(dst, n, elem);
  }
  // Undo the transposes, last first, ending in `out`.
  std::vector<std::byte> other(c.transposes.empty() ? 0 : n * elem);
  for (size_t t = c.transposes.size(); t-- > 0;) {
    std::byte* target = t == 0 ? out : other.data();
    untranspose(tmp.data(), shapes[t + 1], target, shapes[t], c.transposes[t], elem);
    if (t > 0) std::swap(tmp, other);
  }
}

struct KeyEncoding {
  bool v2 = false;
  char separator = '/';

  fs::path path(const fs::path& dir, const CellIndex& chunk) const {
    std::string key = v2 ? "" : "c";
    for (int d = 0; d < chunk.rank(); ++d) {
      if (d > 0 || !v2) key += separator;
      key += std::to_string(chunk[d]);
    }
    return dir / key;
  }
};

/// Chunks stored one per file.
class ChunkFiles final : public ChunkSource {
 public:
  ChunkFiles(fs::path dir, KeyEncoding keys, Chain chain, Shape chunks, size_t elem, FillValue fill)
      : dir_(std::move(dir)),
        keys_(keys),
        chain_(std::move(chain)),
        chunks_(chunks),
        elem_(elem),
        fill_(fill) {}

  fs::path file_of(const CellIndex& chunk) const override { return keys_.path(dir_, chunk); }

  bool read(const CellIndex& chunk, std::byte* out) const override {
    const fs::path file = keys_.path(dir_, chunk);
    const std::string what = "file " + file.string();
    std::optional<std::string> stored = with_context(what, [&] { return read_file(file); });
    if (!stored) return false;
    decode(chain_, chunks_, elem_, fill_, std::move(*stored), out, what);
    return true;
  }

 private:
  fs::path dir_;
  KeyEncoding keys_;
  Chain chain_;
  Shape chunks_;
  size_t elem_;
  FillValue fill_;
};

/// An open file, closed on scope exit.
class File {
 public:
  explicit File(const fs::path& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

/// `n` bytes at `offset` of an open file.
std::string read_range(const File& f, uint64_t offset, size_t n, const std::string& what) {
  std::string out(n, '\0');
  size_t done = 0;
  while (done < n) {
    const ssize_t got =
        ::pread(f.fd(), out.data() + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw IoError(fmt::format("{}: cannot read: {}", what, std::strerror(errno)));
    if (got == 0) throw CorruptionError(fmt::format("{}: ends before byte {}", what, offset + n));
    done += static_cast<size_t>(got);
  }
  return out;
}

/// Inner chunks of shards: the index, then the bytes of one inner chunk.
class ShardFiles final : public ChunkSource {
 public:
  ShardFiles(fs::path dir, KeyEncoding keys, Sharding sharding, Shape shard, size_t elem,
             FillValue fill)
      : dir_(std::move(dir)),
        keys_(keys),
        s_(std::move(sharding)),
        per_(chunks_per_shard(shard, s_.inner)),
        elem_(elem),
        fill_(fill) {}

  fs::path file_of(const CellIndex& chunk) const override {
    CellIndex shard(chunk.rank());
    for (int d = 0; d < chunk.rank(); ++d) shard[d] = chunk[d] / per_[d];
    return keys_.path(dir_, shard);
  }

  bool read(const CellIndex& chunk, std::byte* out) const override {
    const int r = chunk.rank();
    CellIndex shard(r);
    Dims pos(r);
    for (int d = 0; d < r; ++d) {
      shard[d] = chunk[d] / per_[d];
      pos[d] = chunk[d] % per_[d];
    }
    const fs::path file = keys_.path(dir_, shard);
    const std::string what = "shard file " + file.string();
    const File f(file);
    if (f.fd() < 0) {
      if (errno == ENOENT || errno == ENOTDIR) return false;  // a missing shard: fill value
      throw IoError(fmt::format("{}: cannot open: {}", what, std::strerror(errno)));
    }
    struct stat st {};
    if (::fstat(f.fd(), &st) != 0)
      throw IoError(fmt::format("{}: cannot stat: {}", what, std::strerror(errno)));
    const auto size = static_cast<uint64_t>(st.st_size);
    const size_t entries = static_cast<size_t>(per_.product());
    const size_t isize = index_size(s_, entries);
    if (size < isize)
      throw CorruptionError(
          fmt::format("{}: {} bytes, shorter than its index ({} bytes)", what, size, isize));
    const std::vector<uint64_t> index = parse_index(
        s_, read_range(f, s_.index_at_end ? size - isize : 0, isize, what), entries, what);
    const auto i = static_cast<size_t>(detail::linear_offset(per_, pos));
    const uint64_t offset = index[2 * i];
    const uint64_t nbytes = index[2 * i + 1];
    if (offset == kNoChunk && nbytes == kNoChunk) return false;
    if (offset > size || nbytes > size - offset)
      throw CorruptionError(fmt::format(
          "{}: index entry of inner chunk {} points outside the file (offset {}, {} bytes, file "
          "of {} bytes)",
          what, i, offset, nbytes, size));
    decode(*s_.codecs, s_.inner, elem_, fill_,
           read_range(f, offset, static_cast<size_t>(nbytes), what), out, what);
    return true;
  }

 private:
  fs::path dir_;
  KeyEncoding keys_;
  Sharding s_;
  Shape per_;
  size_t elem_;
  FillValue fill_;
};

DType parse_data_type(const Value* v, const fs::path& meta) {
  if (const std::optional<DType> t = parse_type_name(v, true)) return *t;
  bad_array(meta, fmt::format("\"data_type\" {} is not supported (supported: bool, int8..int64, "
                              "uint8..uint64, float32, float64; bool reads as uint8)",
                              v != nullptr ? to_json_compact(*v) : "(missing)"));
}

KeyEncoding parse_keys(const Value* v, const fs::path& meta) {
  const Parser p(meta, 1);
  const std::string field = "\"chunk_key_encoding\"";
  if (v == nullptr) return {};
  const Value* name = v->is_object() ? v->find("name") : nullptr;
  if (name == nullptr || !name->is_string() ||
      (name->as_string() != "default" && name->as_string() != "v2"))
    p.refuse(field, "must be {\"name\": \"default\"} or {\"name\": \"v2\"}");
  KeyEncoding k;
  k.v2 = name->as_string() == "v2";
  k.separator = k.v2 ? '.' : '/';
  if (const Value* config = v->find("configuration"); config != nullptr) {
    const Value* sep = config->is_object() ? config->find("separator") : nullptr;
    if (sep != nullptr) {
      if (!sep->is_string() || (sep->as_string() != "." && sep->as_string() != "/"))
        p.refuse(field, fmt::format("separator {} must be \".\" or \"/\"", to_json_compact(*sep)));
      k.separator = sep->as_string()[0];
    }
  }
  return k;
}

}  // namespace

OpenedArray open_v3(const fs::path& dir, std::string text) {
  const fs::path meta = dir / "zarr.json";
  const Value z = parse_metadata(meta, text, 3);
  const Value* type = z.find("node_type");
  if (type != nullptr && type->is_string() && type->as_string() == "group") {
    bad_array(meta,
              "this is a Zarr group, not an array: give the folder of one of its arrays (for an "
              "OME-Zarr image, e.g. its level \"0\")");
  }
  if (type == nullptr || !type->is_string() || type->as_string() != "array")
    bad_array(meta, "\"node_type\" must be \"array\"");
  for (const auto& field : z.as_object()) {
    const std::string& key =
        field.first;  // (not a structured binding: clang 14 cannot capture one)
    const Value& value = field.second;
    static const char* const kKnown[] = {
        "zarr_format",         "node_type", "shape",      "data_type",          "chunk_grid",
        "fill_value",          "codecs",    "attributes", "chunk_key_encoding", "dimension_names",
        "storage_transformers"};
    if (std::any_of(std::begin(kKnown), std::end(kKnown), [&](const char* k) { return key == k; }))
      continue;
    const Value* mu = value.is_object() ? value.find("must_understand") : nullptr;
    if (mu != nullptr && mu->is_bool() && !mu->as_bool()) continue;  // an ignorable extension
    bad_array(meta, fmt::format("field \"{}\" is not supported (it may change how the array "
                                "is read)",
                                key));
  }
  if (const Value* st = z.find("storage_transformers");
      st != nullptr && !(st->is_array() && st->as_array().empty())) {
    bad_array(meta, "\"storage_transformers\" are not supported");
  }
  OpenedArray a;
  a.meta_file = meta;
  a.shape = dims_field(z, "shape", meta, true);
  a.dtype = parse_data_type(z.find("data_type"), meta);
  const size_t elem = dtype_size(a.dtype);
  const Value* grid = z.find("chunk_grid");
  const Value* grid_name = grid != nullptr && grid->is_object() ? grid->find("name") : nullptr;
  const Value* grid_config =
      grid != nullptr && grid->is_object() ? grid->find("configuration") : nullptr;
  if (grid_name == nullptr || !grid_name->is_string() || grid_name->as_string() != "regular" ||
      grid_config == nullptr || !grid_config->is_object()) {
    bad_array(meta,
              "\"chunk_grid\" must be {\"name\": \"regular\", \"configuration\": "
              "{\"chunk_shape\": [...]}}");
  }
  const Shape chunks = dims_field(*grid_config, "chunk_shape", meta, true);
  if (chunks.rank() != a.shape.rank())
    bad_array(meta, "\"chunk_grid\" chunk_shape and \"shape\" differ in rank");
  check_grid(a.shape, chunks, meta);
  const KeyEncoding keys = parse_keys(z.find("chunk_key_encoding"), meta);
  if (z.find("fill_value") == nullptr) bad_array(meta, "\"fill_value\" is missing");
  a.fill = parse_fill(z.find("fill_value"), a.dtype, meta);
  Chain chain = Parser(meta, elem).chain(z.find("codecs"), chunks, "\"codecs\"");
  if (chain.sharding && chain.bytes_codecs.empty()) {
    a.chunks = chain.sharding->inner;
    a.source =
        std::make_unique<ShardFiles>(dir, keys, std::move(*chain.sharding), chunks, elem, a.fill);
  } else if (chain.sharding) {
    bad_array(meta,
              "\"codecs\": codecs after sharding_indexed (on whole shards) are not "
              "supported");
  } else {
    a.chunks = chunks;
    a.source = std::make_unique<ChunkFiles>(dir, keys, std::move(chain), chunks, elem, a.fill);
  }
  a.meta_text = std::move(text);
  return a;
}

}  // namespace cellflow::nodes::zarr

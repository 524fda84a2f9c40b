#include "cellflow/cache/zarr_array.hpp"

#include <blosc.h>
#include <fmt/format.h>
#include <xxhash.h>

#include <cstring>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/store/layout.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

// Every chunk file is a blosc frame followed by this trailer: the XXH3-64 of
// the frame seeded with the XXH3-64 of the cell's identity (little-endian),
// and a magic tag. Blosc readers (zarr-python, numcodecs) ignore bytes after
// the frame's cbytes. Cache format 1 wrote the unseeded XXH3-64 and "...31".
constexpr char kTrailerMagic[8] = {'C', 'F', 'L', 'W', 'X', 'H', '3', '2'};
constexpr char kFormat1Magic[8] = {'C', 'F', 'L', 'W', 'X', 'H', '3', '1'};
constexpr size_t kTrailerSize = 16;
constexpr int kBloscLevel = 5;
constexpr const char* kBloscCodec = "lz4";

void put_u64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

Value dims_value(const Dims& d) {
  Value::Array a;
  for (int64_t x : d) a.emplace_back(x);
  return Value(std::move(a));
}

uint64_t frame_checksum(const char* frame, size_t size, std::string_view identity) {
  return XXH3_64bits_withSeed(frame, size, XXH3_64bits(identity.data(), identity.size()));
}

Dims dims_from(const Value& v) {
  const auto& a = v.as_array();
  Dims d(static_cast<int>(a.size()));
  for (size_t i = 0; i < a.size(); ++i) d[static_cast<int>(i)] = a[i].as_int();
  return d;
}

}  // namespace

std::string zarray_json(DType dtype, const CellGrid& grid) {
  Value compressor = Value::object();
  compressor.set("blocksize", 0);
  compressor.set("clevel", kBloscLevel);
  compressor.set("cname", kBloscCodec);
  compressor.set("id", "blosc");
  compressor.set("shuffle", 1);
  Value z = Value::object();
  z.set("chunks", dims_value(grid.cell_shape()));
  z.set("compressor", std::move(compressor));
  z.set("dimension_separator", "/");
  z.set("dtype", zarr_dtype(dtype));
  z.set("fill_value", 0);
  z.set("filters", nullptr);
  z.set("order", "C");
  z.set("shape", dims_value(grid.shape()));
  z.set("zarr_format", 2);
  return to_json(z);
}

struct ZarrArray::Impl {
  std::shared_ptr<Env> env;
  std::string folder;
  std::string owner;
  std::string lock_file;
  DType dtype;
  CellGrid grid;
  size_t chunk_bytes;
  Durability durability;
};

ZarrArray::ZarrArray(std::shared_ptr<Env> env, std::string folder, std::string owner, DType dtype,
                     CellGrid grid, Durability durability)
    : impl_(std::make_unique<Impl>()) {
  impl_->env = std::move(env);
  impl_->lock_file = join_path(folder, layout::kCellLock);
  impl_->folder = std::move(folder);
  impl_->owner = std::move(owner);
  impl_->dtype = dtype;
  impl_->grid = std::move(grid);
  impl_->chunk_bytes = static_cast<size_t>(impl_->grid.cell_shape().product()) * dtype_size(dtype);
  impl_->durability = durability;
}

ZarrArray::~ZarrArray() = default;

std::shared_ptr<ZarrArray> ZarrArray::create(std::shared_ptr<Env> env, std::string folder,
                                             std::string owner, DType dtype, const CellGrid& grid,
                                             Durability durability) {
  const std::string meta = join_path(folder, layout::kZarray);
  if (env->read(meta)) {
    auto opened = open(env, folder, owner);
    if (opened->dtype() != dtype || !(opened->grid() == grid))
      throw CorruptionError(
          fmt::format("file {}: existing array has dtype {} shape {} chunks {}, expected {} {} {}",
                      env->describe(meta), dtype_name(opened->dtype()),
                      opened->grid().shape().str(), opened->grid().cell_shape().str(),
                      dtype_name(dtype), grid.shape().str(), grid.cell_shape().str()));
    opened->impl_->durability = durability;
    return opened;
  }
  env->write_atomic(meta, zarray_json(dtype, grid), Durability::kPowerCut);  // metadata: always
  return std::shared_ptr<ZarrArray>(
      new ZarrArray(std::move(env), std::move(folder), std::move(owner), dtype, grid, durability));
}

std::shared_ptr<ZarrArray> ZarrArray::open(std::shared_ptr<Env> env, std::string folder,
                                           std::string owner) {
  const std::string meta = join_path(folder, layout::kZarray);
  // Named before `env` is moved into the array, for the handler below.
  const std::string where = env->describe(meta);
  auto text = env->read(meta);
  if (!text) throw IoError(fmt::format("file {}: no Zarr array here", where));
  try {
    const Value z = parse_json(*text, where);
    const Value* dt = z.find("dtype");
    const Value* shape = z.find("shape");
    const Value* chunks = z.find("chunks");
    if (dt == nullptr || shape == nullptr || chunks == nullptr)
      throw CorruptionError("missing dtype, shape or chunks");
    auto dtype = parse_zarr_dtype(dt->as_string());
    if (!dtype) throw CorruptionError(fmt::format("unsupported dtype \"{}\"", dt->as_string()));
    CellGrid grid(dims_from(*shape), dims_from(*chunks));
    return std::shared_ptr<ZarrArray>(new ZarrArray(std::move(env), std::move(folder),
                                                    std::move(owner), *dtype, std::move(grid),
                                                    Durability::kProcess));
  } catch (Error& e) {
    CorruptionError c(e.what());
    c.add_context("file " + where);
    throw c;
  }
}

std::shared_ptr<ZarrArray> ZarrArray::create(const fs::path& path, DType dtype,
                                             const CellGrid& grid) {
  return create(posix_env(path.parent_path()), path.filename().string(),
                path.parent_path().filename().string(), dtype, grid);
}

std::shared_ptr<ZarrArray> ZarrArray::open(const fs::path& path) {
  return open(posix_env(path.parent_path()), path.filename().string(),
              path.parent_path().filename().string());
}

fs::path ZarrArray::path() const { return impl_->env->root() / impl_->folder; }
DType ZarrArray::dtype() const { return impl_->dtype; }
const CellGrid& ZarrArray::grid() const { return impl_->grid; }
const std::string& ZarrArray::owner() const { return impl_->owner; }

fs::path ZarrArray::cell_path(const CellIndex& cell) const {
  return impl_->env->root() / layout::cell(impl_->folder, cell);
}

std::string ZarrArray::encode_chunk(const void* data, size_t bytes, size_t type_size,
                                    std::string_view identity) {
  std::string out(bytes + BLOSC_MAX_OVERHEAD + kTrailerSize, '\0');
  const int n = blosc_compress_ctx(kBloscLevel, BLOSC_SHUFFLE, type_size, bytes, data, out.data(),
                                   bytes + BLOSC_MAX_OVERHEAD, kBloscCodec, 0, 1);
  if (n <= 0) throw IoError(fmt::format("blosc could not compress a {}-byte chunk", bytes));
  const auto frame = static_cast<size_t>(n);
  put_u64(out.data() + frame, frame_checksum(out.data(), frame, identity));
  std::memcpy(out.data() + frame + 8, kTrailerMagic, 8);
  out.resize(frame + kTrailerSize);
  return out;
}

namespace {

// Checks the trailer and checksum; returns the blosc frame's size.
size_t verify_chunk(const std::string& stored, const std::string& what, std::string_view identity) {
  if (stored.size() < BLOSC_MIN_HEADER_LENGTH + kTrailerSize)
    throw CorruptionError(fmt::format("{}: truncated ({} bytes)", what, stored.size()));
  const size_t frame = stored.size() - kTrailerSize;
  if (std::memcmp(stored.data() + frame + 8, kFormat1Magic, 8) == 0)
    throw CorruptionError(fmt::format(
        "{}: written by cache format 1 (run `cellflow cache migrate` on the cache)", what));
  if (std::memcmp(stored.data() + frame + 8, kTrailerMagic, 8) != 0)
    throw CorruptionError(
        fmt::format("{}: no cellflow checksum trailer (truncated or foreign file)", what));
  const uint64_t stored_sum = get_u64(stored.data() + frame);
  if (stored_sum != frame_checksum(stored.data(), frame, identity))
    throw CorruptionError(fmt::format(
        "{}: checksum mismatch (damaged, or moved or copied from another cell or node)", what));
  return frame;
}

}  // namespace

void ZarrArray::decode_chunk(const std::string& stored, void* out, size_t bytes,
                             const std::string& what, std::string_view identity) {
  const auto corrupt = [&](const std::string& why) {
    return CorruptionError(fmt::format("{}: {}", what, why));
  };
  const size_t frame = verify_chunk(stored, what, identity);
  size_t nbytes = 0, cbytes = 0, blocksize = 0;
  blosc_cbuffer_sizes(stored.data(), &nbytes, &cbytes, &blocksize);
  if (cbytes != frame || nbytes != bytes)
    throw corrupt(fmt::format("blosc frame sizes {}/{} do not match the chunk ({} bytes)", cbytes,
                              nbytes, bytes));
  const int n = blosc_decompress_ctx(stored.data(), out, bytes, 1);
  if (n < 0 || static_cast<size_t>(n) != bytes) throw corrupt("blosc could not decompress it");
}

std::string ZarrArray::decode_chunk_any(const std::string& stored, const std::string& what,
                                        std::string_view identity) {
  const size_t frame = verify_chunk(stored, what, identity);
  size_t nbytes = 0, cbytes = 0, blocksize = 0;
  blosc_cbuffer_sizes(stored.data(), &nbytes, &cbytes, &blocksize);
  // The header's sizes are checked before they size anything: blosc stores
  // them as int32, so a damaged (negative) one reads back as ~2^64 here.
  if (cbytes != frame || nbytes > static_cast<size_t>(BLOSC_MAX_BUFFERSIZE))
    throw CorruptionError(fmt::format("{}: blosc frame sizes {}/{} do not match the {}-byte frame",
                                      what, cbytes, nbytes, frame));
  std::string out(nbytes, '\0');
  decode_chunk(stored, out.data(), nbytes, what, identity);
  return out;
}

std::string ZarrArray::migrate_format1_chunk(const std::string& stored, const std::string& what,
                                             std::string_view identity) {
  if (stored.size() < BLOSC_MIN_HEADER_LENGTH + kTrailerSize)
    throw CorruptionError(fmt::format("{}: truncated ({} bytes)", what, stored.size()));
  const size_t frame = stored.size() - kTrailerSize;
  if (std::memcmp(stored.data() + frame + 8, kFormat1Magic, 8) != 0)
    throw CorruptionError(fmt::format("{}: not a cache format 1 chunk", what));
  if (get_u64(stored.data() + frame) != XXH3_64bits(stored.data(), frame))
    throw CorruptionError(fmt::format("{}: checksum mismatch", what));
  size_t nbytes = 0, cbytes = 0, blocksize = 0;
  blosc_cbuffer_sizes(stored.data(), &nbytes, &cbytes, &blocksize);
  if (cbytes != frame) throw CorruptionError(fmt::format("{}: blosc frame size mismatch", what));
  std::string out = stored;
  put_u64(out.data() + frame, frame_checksum(out.data(), frame, identity));
  std::memcpy(out.data() + frame + 8, kTrailerMagic, 8);
  return out;
}

std::optional<CellBuffer> ZarrArray::read(const CellIndex& cell) {
  const std::string file = layout::cell(impl_->folder, cell);
  auto stored = impl_->env->read(file);
  if (!stored) return std::nullopt;
  const Box box = impl_->grid.cell_box(cell);
  const Shape shape = box.shape();
  CellBuffer out = CellBuffer::allocate(impl_->dtype, shape);
  const std::string what = "file " + impl_->env->describe(file);
  const std::string identity = layout::cell_identity(impl_->owner, cell);
  if (shape == impl_->grid.cell_shape()) {
    decode_chunk(*stored, out.mutable_data(), impl_->chunk_bytes, what, identity);
  } else {
    // Edge cell: stored full-size (zarr's rule), keep the part inside the image.
    CellBuffer full = CellBuffer::allocate(impl_->dtype, impl_->grid.cell_shape());
    decode_chunk(*stored, full.mutable_data(), impl_->chunk_bytes, what, identity);
    Box chunk_box = Box(box.begin(), box.begin()).grow(Dims(box.rank()), impl_->grid.cell_shape());
    copy_region(full.data(), chunk_box, out.mutable_data(), box, box, dtype_size(impl_->dtype));
  }
  return out;
}

void ZarrArray::write(const CellIndex& cell, const CellBuffer& buffer) {
  const Box box = impl_->grid.cell_box(cell);
  if (!(buffer.shape() == box.shape()) || buffer.dtype() != impl_->dtype)
    throw InvalidArgument(fmt::format("cell {}: buffer {} {} does not match the cell's {} {}",
                                      cell.str(), dtype_name(buffer.dtype()), buffer.shape().str(),
                                      dtype_name(impl_->dtype), box.shape().str()));
  const size_t type_size = dtype_size(impl_->dtype);
  const std::string identity = layout::cell_identity(impl_->owner, cell);
  std::string encoded;
  if (box.shape() == impl_->grid.cell_shape()) {
    encoded = encode_chunk(buffer.data(), impl_->chunk_bytes, type_size, identity);
  } else {
    CellBuffer full = CellBuffer::zeros(impl_->dtype, impl_->grid.cell_shape());
    Box chunk_box = Box(box.begin(), box.begin()).grow(Dims(box.rank()), impl_->grid.cell_shape());
    copy_region(buffer.data(), box, full.mutable_data(), chunk_box, box, type_size);
    encoded = encode_chunk(full.data(), impl_->chunk_bytes, type_size, identity);
  }
  impl_->env->write_atomic(layout::cell(impl_->folder, cell), encoded, impl_->durability);
}

bool ZarrArray::contains(const CellIndex& cell) {
  // Only a regular file is a committed cell: anything else there is damage,
  // found when the cell is read (and recomputed).
  return impl_->env->stat(layout::cell(impl_->folder, cell)).kind == EntryKind::kFile;
}

std::shared_ptr<void> ZarrArray::lock(const CellIndex& cell) {
  return impl_->env->lock(impl_->lock_file, impl_->grid.linear(cell), LockMode::kExclusive,
                          std::nullopt);
}

bool ZarrArray::locked_elsewhere(const CellIndex& cell) {
  return impl_->env->locked_elsewhere(impl_->lock_file, impl_->grid.linear(cell),
                                      LockMode::kExclusive);
}

void ZarrArray::remove(const CellIndex& cell) {
  impl_->env->remove(layout::cell(impl_->folder, cell));
}

}  // namespace cellflow

#include "cellflow/cache/zarr_array.hpp"

#include <blosc.h>
#include <fmt/format.h>
#include <xxhash.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/store/layout.hpp"
#include "cellflow/store/wait_lock.hpp"

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

// The blosc filter an array's metadata names: .zarray's compressor
// "shuffle" (0-2), or in our zarr.json the blosc codec inside the sharding
// codec ("noshuffle", "shuffle", "bitshuffle"). nullopt if it names none.
std::optional<int> stored_shuffle(const Value& z, bool v3) {
  if (!v3) {
    const Value* compressor = z.find("compressor");
    const Value* s = compressor != nullptr ? compressor->find("shuffle") : nullptr;
    if (s != nullptr && s->is_int() && s->as_int() >= 0 && s->as_int() <= 2)
      return static_cast<int>(s->as_int());
    return std::nullopt;
  }
  const Value* codecs = z.find("codecs");
  if (codecs == nullptr || !codecs->is_array() || codecs->as_array().empty()) return std::nullopt;
  const Value* conf = codecs->as_array()[0].find("configuration");
  const Value* inner = conf != nullptr ? conf->find("codecs") : nullptr;
  if (inner == nullptr || !inner->is_array()) return std::nullopt;
  for (const Value& codec : inner->as_array()) {
    const Value* name = codec.find("name");
    const Value* bconf = codec.find("configuration");
    const Value* s = bconf != nullptr ? bconf->find("shuffle") : nullptr;
    if (name == nullptr || !name->is_string() || name->as_string() != "blosc" || s == nullptr ||
        !s->is_string())
      continue;
    if (s->as_string() == "noshuffle") return BLOSC_NOSHUFFLE;
    if (s->as_string() == "shuffle") return BLOSC_SHUFFLE;
    if (s->as_string() == "bitshuffle") return BLOSC_BITSHUFFLE;
  }
  return std::nullopt;
}

}  // namespace

int blosc_shuffle_for(DType dtype) {
  return dtype_is_float(dtype) ? BLOSC_SHUFFLE : BLOSC_BITSHUFFLE;
}

std::string zarray_json(DType dtype, const CellGrid& grid, int shuffle) {
  Value compressor = Value::object();
  compressor.set("blocksize", 0);
  compressor.set("clevel", kBloscLevel);
  compressor.set("cname", kBloscCodec);
  compressor.set("id", "blosc");
  compressor.set("shuffle", shuffle >= 0 ? shuffle : blosc_shuffle_for(dtype));
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
  int64_t shard_cells = 0;
  std::optional<ShardGeometry> shards;
  int shuffle = 1;  // blosc's filter for the cells written: what the array's metadata says

  // The shards read last (by linear shard index). Every chunk taken from one
  // is checked against its cell's identity, so an outdated copy can serve
  // only the cell's own bytes; a cell it lacks is looked up again on disk.
  std::mutex recent_mu;
  std::vector<std::pair<int64_t, std::shared_ptr<const Shard>>> recent;
  size_t recent_bytes = 0;
  // A whole node read in C order of cells crosses a row of shards at once.
  static constexpr size_t kRecentShards = 64;
  static constexpr size_t kRecentBytes = size_t{64} << 20;

  std::string describe(const std::string& path) const { return "file " + env->describe(path); }
};

namespace {

int64_t linear_in(const Dims& shape, const CellIndex& index) {
  int64_t l = 0;
  for (int d = 0; d < shape.rank(); ++d) l = l * shape[d] + index[d];
  return l;
}

}  // namespace

ZarrArray::ZarrArray(std::shared_ptr<Env> env, std::string folder, std::string owner, DType dtype,
                     CellGrid grid, Durability durability, int64_t shard_cells)
    : impl_(std::make_unique<Impl>()) {
  impl_->env = std::move(env);
  impl_->lock_file = join_path(folder, layout::kCellLock);
  impl_->folder = std::move(folder);
  impl_->owner = std::move(owner);
  impl_->dtype = dtype;
  impl_->grid = std::move(grid);
  impl_->chunk_bytes = static_cast<size_t>(impl_->grid.cell_shape().product()) * dtype_size(dtype);
  impl_->durability = durability;
  impl_->shard_cells = shard_cells;
  impl_->shuffle = blosc_shuffle_for(dtype);
  if (shard_cells > 0) impl_->shards.emplace(impl_->grid, shard_cells);
}

ZarrArray::~ZarrArray() = default;

std::shared_ptr<ZarrArray> ZarrArray::create(std::shared_ptr<Env> env, std::string folder,
                                             std::string owner, DType dtype, const CellGrid& grid,
                                             Durability durability, int64_t shard_cells,
                                             int shuffle) {
  if (shuffle < 0) shuffle = blosc_shuffle_for(dtype);
  const std::string meta = join_path(folder, layout::kZarray);
  const std::string meta3 = join_path(folder, layout::kZarrJson);
  if (env->read(meta) || env->read(meta3)) {
    auto opened = open(env, folder, owner, shard_cells);
    if (opened->dtype() != dtype || !(opened->grid() == grid))
      throw CorruptionError(
          fmt::format("file {}: existing array has dtype {} shape {} chunks {}, expected {} {} {}",
                      env->describe(meta), dtype_name(opened->dtype()),
                      opened->grid().shape().str(), opened->grid().cell_shape().str(),
                      dtype_name(dtype), grid.shape().str(), grid.cell_shape().str()));
    opened->impl_->durability = durability;
    return opened;
  }
  // Shards without metadata: a packed node being repaired (verify --repair
  // removed its zarr.json). Its .zarray is not written again: a Zarr v2
  // reader would take the cells that are in shards for fill values.
  if (shard_cells <= 0 ||
      env->stat(join_path(folder, layout::kShardFolder)).kind == EntryKind::kMissing)
    env->write_atomic(meta, zarray_json(dtype, grid, shuffle),
                      Durability::kPowerCut);  // metadata: always
  auto array = std::shared_ptr<ZarrArray>(new ZarrArray(
      std::move(env), std::move(folder), std::move(owner), dtype, grid, durability, shard_cells));
  array->impl_->shuffle = shuffle;
  return array;
}

std::shared_ptr<ZarrArray> ZarrArray::open(std::shared_ptr<Env> env, std::string folder,
                                           std::string owner, int64_t shard_cells) {
  std::string meta = join_path(folder, layout::kZarray);
  auto text = env->read(meta);
  // A packer writes zarr.json before it removes .zarray: one of them is there.
  const bool v3 = !text;
  if (v3) {
    meta = join_path(folder, layout::kZarrJson);
    text = env->read(meta);
  }
  // Named before `env` is moved into the array, for the handler below.
  const std::string where = env->describe(meta);
  if (!text) throw IoError(fmt::format("file {}: no Zarr array here", where));
  try {
    const Value z = parse_json(*text, where);
    const Value* dt = z.find(v3 ? "data_type" : "dtype");
    const Value* shape = z.find("shape");
    const Value* chunks = z.find("chunks");
    if (v3) {
      // Our own zarr.json: the cell shape is the sharding codec's chunk shape.
      const Value* codecs = z.find("codecs");
      const Value* conf = codecs != nullptr && codecs->is_array() && !codecs->as_array().empty()
                              ? codecs->as_array()[0].find("configuration")
                              : nullptr;
      chunks = conf != nullptr ? conf->find("chunk_shape") : nullptr;
    }
    if (dt == nullptr || shape == nullptr || chunks == nullptr)
      throw CorruptionError("missing dtype, shape or chunks");
    auto dtype = v3 ? parse_dtype(dt->as_string()) : parse_zarr_dtype(dt->as_string());
    if (!dtype) throw CorruptionError(fmt::format("unsupported dtype \"{}\"", dt->as_string()));
    CellGrid grid(dims_from(*shape), dims_from(*chunks));
    if (v3 && shard_cells > 0) {
      // The shards on disk must be the ones this cache's shard size gives:
      // cells are found by that geometry, never by guessing.
      const ShardGeometry g(grid, shard_cells);
      const Value* cg = z.find("chunk_grid");
      const Value* cg_conf = cg != nullptr ? cg->find("configuration") : nullptr;
      const Value* stored = cg_conf != nullptr ? cg_conf->find("chunk_shape") : nullptr;
      Dims expected(grid.rank());
      for (int d = 0; d < grid.rank(); ++d) expected[d] = g.per_shard()[d] * grid.cell_shape()[d];
      if (stored == nullptr || !(dims_from(*stored) == expected))
        throw CorruptionError(fmt::format(
            "its shards are not of shape {} (what {} cells per shard give for this grid)",
            expected.str(), shard_cells));
    }
    std::shared_ptr<ZarrArray> array(new ZarrArray(std::move(env), std::move(folder),
                                                   std::move(owner), *dtype, std::move(grid),
                                                   Durability::kProcess, shard_cells));
    // An array written before integer cells were bit-shuffled keeps byte
    // shuffle, so that its metadata stays true of every cell in it.
    if (const std::optional<int> shuffle = stored_shuffle(z, v3)) array->impl_->shuffle = *shuffle;
    return array;
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
                                    std::string_view identity, int shuffle) {
  std::string out;
  encode_chunk_into(out, data, bytes, type_size, identity, shuffle);
  return out;
}

void ZarrArray::encode_chunk_into(std::string& out, const void* data, size_t bytes,
                                  size_t type_size, std::string_view identity, int shuffle) {
  out.resize(bytes + BLOSC_MAX_OVERHEAD + kTrailerSize);
  const int n = blosc_compress_ctx(kBloscLevel, shuffle, type_size, bytes, data, out.data(),
                                   bytes + BLOSC_MAX_OVERHEAD, kBloscCodec, 0, 1);
  if (n <= 0) throw IoError(fmt::format("blosc could not compress a {}-byte chunk", bytes));
  const auto frame = static_cast<size_t>(n);
  put_u64(out.data() + frame, frame_checksum(out.data(), frame, identity));
  std::memcpy(out.data() + frame + 8, kTrailerMagic, 8);
  out.resize(frame + kTrailerSize);
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
  if (!stored) {
    // Its single file is removed only after its shard was committed.
    if (impl_->shards) return read_from_shard(cell);
    return std::nullopt;
  }
  return decode_cell(*stored, cell, impl_->describe(file));
}

CellBuffer ZarrArray::decode_cell(const std::string& stored, const CellIndex& cell,
                                  const std::string& what) {
  const Box box = impl_->grid.cell_box(cell);
  const Shape shape = box.shape();
  CellBuffer out = CellBuffer::allocate(impl_->dtype, shape);
  const std::string identity = layout::cell_identity(impl_->owner, cell);
  if (shape == impl_->grid.cell_shape()) {
    decode_chunk(stored, out.mutable_data(), impl_->chunk_bytes, what, identity);
  } else {
    // Edge cell: stored full-size (zarr's rule), keep the part inside the image.
    CellBuffer full = CellBuffer::allocate(impl_->dtype, impl_->grid.cell_shape());
    decode_chunk(stored, full.mutable_data(), impl_->chunk_bytes, what, identity);
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
  // Encoded into the thread's buffer, reused from cell to cell.
  thread_local std::string thread_buffer;
  ReusedBuffer encoded(thread_buffer);
  if (box.shape() == impl_->grid.cell_shape()) {
    encode_chunk_into(*encoded, buffer.data(), impl_->chunk_bytes, type_size, identity,
                      impl_->shuffle);
  } else {
    CellBuffer full = CellBuffer::zeros(impl_->dtype, impl_->grid.cell_shape());
    Box chunk_box = Box(box.begin(), box.begin()).grow(Dims(box.rank()), impl_->grid.cell_shape());
    copy_region(buffer.data(), box, full.mutable_data(), chunk_box, box, type_size);
    encode_chunk_into(*encoded, full.data(), impl_->chunk_bytes, type_size, identity,
                      impl_->shuffle);
  }
  impl_->env->write_atomic(layout::cell(impl_->folder, cell), *encoded, impl_->durability);
}

bool ZarrArray::contains(const CellIndex& cell) {
  // Only a regular file is a committed cell: anything else there is damage,
  // found when the cell is read (and recomputed).
  if (impl_->env->stat(layout::cell(impl_->folder, cell)).kind == EntryKind::kFile) return true;
  if (!impl_->shards) return false;
  try {
    return find_in_shard(cell) != nullptr;
  } catch (const CorruptionError&) {
    return false;  // a damaged shard index: the cell is recomputed
  }
}

std::shared_ptr<void> ZarrArray::lock(const CellIndex& cell) {
  // Bounded by the thread's ScopedWaitLimit (a run's --timeout).
  return wait_lock(*impl_->env, impl_->lock_file, impl_->grid.linear(cell), LockMode::kExclusive,
                   std::nullopt, fmt::format("cell {} of {}", cell.str(), impl_->folder));
}

bool ZarrArray::locked_elsewhere(const CellIndex& cell) {
  return impl_->env->locked_elsewhere(impl_->lock_file, impl_->grid.linear(cell),
                                      LockMode::kExclusive);
}

void ZarrArray::remove(const CellIndex& cell) {
  // Only the single file: a damaged chunk inside a shard stays there (the
  // cell's recomputed single file takes precedence over it) until
  // `cellflow cache verify --repair` rewrites the shard.
  impl_->env->remove(layout::cell(impl_->folder, cell));
}

const ShardGeometry* ZarrArray::shards() const { return impl_->shards ? &*impl_->shards : nullptr; }

fs::path ZarrArray::shard_path(const CellIndex& shard) const {
  return impl_->env->root() / layout::shard(impl_->folder, shard);
}

std::optional<ZarrArray::Shard> ZarrArray::read_shard(const CellIndex& shard) {
  const std::string file = layout::shard(impl_->folder, shard);
  auto bytes = impl_->env->read(file);
  if (!bytes) return std::nullopt;
  Shard out;
  out.index = parse_shard_index(*bytes, impl_->shards->slots(), impl_->describe(file));
  out.bytes = std::move(*bytes);
  return out;
}

std::optional<std::vector<ShardEntry>> ZarrArray::read_shard_index(const CellIndex& shard) {
  const std::string file = layout::shard(impl_->folder, shard);
  const int64_t slots = impl_->shards->slots();
  for (int attempt = 0;; ++attempt) {
    const EntryInfo info = impl_->env->stat(file);
    if (info.kind == EntryKind::kMissing) return std::nullopt;
    auto tail = impl_->env->read_tail(file, shard_index_bytes(slots));
    if (!tail) return std::nullopt;
    try {
      return parse_shard_index_tail(*tail, info.size, slots, impl_->describe(file));
    } catch (const CorruptionError&) {
      // Replaced between stat and read (a repack)? Then the size changed.
      if (attempt > 0 || impl_->env->stat(file).size == info.size) throw;
    }
  }
}

std::shared_ptr<const ZarrArray::Shard> ZarrArray::find_in_shard(const CellIndex& cell) {
  const ShardGeometry& g = *impl_->shards;
  const CellIndex shard = g.shard_of(cell);
  const int64_t key = linear_in(g.shard_grid(), shard);
  const auto slot = static_cast<size_t>(g.slot_of(cell));
  {
    std::lock_guard lock(impl_->recent_mu);
    for (const auto& [k, s] : impl_->recent)
      if (k == key && s->index[slot].present()) return s;
  }
  // Not in a recent copy: the shard on disk may be newer (repacked).
  auto fresh = read_shard(shard);
  if (!fresh) return nullptr;
  auto s = std::make_shared<const Shard>(std::move(*fresh));
  {
    std::lock_guard lock(impl_->recent_mu);
    auto& recent = impl_->recent;
    for (auto it = recent.begin(); it != recent.end();) {
      if (it->first == key) {
        impl_->recent_bytes -= it->second->bytes.size();
        it = recent.erase(it);
      } else {
        ++it;
      }
    }
    while (!recent.empty() && (recent.size() >= Impl::kRecentShards ||
                               impl_->recent_bytes + s->bytes.size() > Impl::kRecentBytes)) {
      impl_->recent_bytes -= recent.front().second->bytes.size();
      recent.erase(recent.begin());
    }
    recent.emplace_back(key, s);
    impl_->recent_bytes += s->bytes.size();
  }
  return s->index[slot].present() ? s : nullptr;
}

std::optional<CellBuffer> ZarrArray::read_from_shard(const CellIndex& cell) {
  const auto shard = find_in_shard(cell);
  if (!shard) return std::nullopt;
  const ShardEntry& e = shard->index[static_cast<size_t>(impl_->shards->slot_of(cell))];
  const std::string what = fmt::format(
      "{}, cell {}", impl_->describe(layout::shard(impl_->folder, impl_->shards->shard_of(cell))),
      cell.str());
  return decode_cell(shard->bytes.substr(e.offset, e.nbytes), cell, what);
}

namespace {

// Writes `data` and reads it back: the single files are removed only once
// their copy is known to be on disk as written (a silently short or garbled
// write must not cost committed cells).
void write_checked(Env& env, const std::string& path, const std::string& data,
                   Durability durability) {
  env.write_atomic(path, data, durability);
  const auto back = env.read(path);
  if (!back || *back != data)
    throw IoError(fmt::format("file {}: reads back {} bytes after {} were written",
                              env.describe(path), back ? back->size() : 0, data.size()));
}

}  // namespace

void ZarrArray::set_durability(Durability durability) { impl_->durability = durability; }

bool ZarrArray::is_packed() {
  if (!impl_->shards) return false;
  bool v3 = false;
  for (const DirEntry& e : impl_->env->list(impl_->folder)) {
    if (e.name == layout::kZarray || layout::parse_cell_index(e.name)) return false;
    v3 = v3 || e.name == layout::kZarrJson;
  }
  return v3;
}

ZarrArray::PackResult ZarrArray::pack() {
  PackResult result;
  if (!impl_->shards) return result;
  Env& env = *impl_->env;
  const ShardGeometry& g = *impl_->shards;
  const std::string& folder = impl_->folder;
  const auto lock = env.lock(join_path(folder, layout::kPackLock), 0, LockMode::kExclusive,
                             std::chrono::milliseconds(0));
  if (!lock) {
    result.busy = true;
    return result;
  }
  std::string scratch(impl_->chunk_bytes, '\0');
  std::vector<std::string> chunks(static_cast<size_t>(g.slots()));
  // 1. Every shard, from the single files (checked) and the shard already
  //    there; a shard that has every cell and no single file beside it is
  //    left as it is (a second pack, or one after a crash, rewrites nothing).
  for (int64_t s = 0; s < g.num_shards(); ++s) {
    const CellIndex shard = g.shard_at(s);
    std::optional<Shard> existing;
    try {
      existing = read_shard(shard);
    } catch (const CorruptionError&) {  // rebuilt from single files, or not at all
    }
    bool changed = !existing;
    for (int64_t slot = 0; slot < g.slots(); ++slot) {
      std::string& chunk = chunks[static_cast<size_t>(slot)];
      chunk.clear();
      CellIndex cell;
      if (!g.cell_of(shard, slot, cell)) continue;
      const std::string file = layout::cell(folder, cell);
      if (auto single = env.read(file)) {
        try {
          decode_chunk(*single, scratch.data(), impl_->chunk_bytes, impl_->describe(file),
                       layout::cell_identity(impl_->owner, cell));
          chunk = std::move(*single);
          changed = true;
          continue;
        } catch (const CorruptionError&) {
          env.remove(file);  // damage: recomputed by the next run that needs it
        }
      }
      if (existing && existing->index[static_cast<size_t>(slot)].present()) {
        const ShardEntry& e = existing->index[static_cast<size_t>(slot)];
        chunk = existing->bytes.substr(e.offset, e.nbytes);
        continue;
      }
      ++result.missing_cells;
    }
    if (result.missing_cells > 0) return result;  // not complete: nothing removed
    if (changed) {
      write_checked(env, layout::shard(folder, shard), encode_shard(chunks), impl_->durability);
      ++result.shards_written;
    }
  }
  // 2. zarr.json (a v3 reader now sees the whole array), 3. .zarray (a v2
  // reader saw the whole array until now), 4. the single files, now copied.
  const std::string meta3 = join_path(folder, layout::kZarrJson);
  const std::string v3_json =
      zarr_v3_json(impl_->dtype, impl_->grid, g.per_shard(), impl_->shuffle);
  std::optional<std::string> present;
  try {
    present = env.read(meta3);
  } catch (const CorruptionError&) {  // not a file: replaced below
  }
  if (present != v3_json) write_checked(env, meta3, v3_json, Durability::kPowerCut);
  env.remove(join_path(folder, layout::kZarray));
  for (const DirEntry& e : env.list(folder))
    if (layout::parse_cell_index(e.name)) env.remove(join_path(folder, e.name));
  result.packed = true;
  return result;
}

}  // namespace cellflow

#include "cellflow/cache/zarr_shard.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/cache/zarr_array.hpp"

namespace cellflow {
namespace {

constexpr size_t kEntryBytes = 16;
constexpr size_t kCrcBytes = 4;

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1U) != 0 ? 0x82F63B78U ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

Value dims_value(const Dims& d) {
  Value::Array a;
  for (int64_t x : d) a.emplace_back(x);
  return Value(std::move(a));
}

Value bytes_codec() {
  Value c = Value::object();
  c.set("name", "bytes");
  Value conf = Value::object();
  conf.set("endian", "little");
  c.set("configuration", std::move(conf));
  return c;
}

}  // namespace

uint32_t crc32c(std::string_view data) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  uint32_t c = 0xFFFFFFFFU;
  for (const char ch : data) c = table[(c ^ static_cast<unsigned char>(ch)) & 0xffU] ^ (c >> 8);
  return c ^ 0xFFFFFFFFU;
}

namespace {

/// The number of shards of `per` cells each that cover `grid` cells.
int64_t shard_count(const Dims& grid, const Dims& per) {
  int64_t n = 1;
  for (int d = 0; d < grid.rank(); ++d) n *= (grid[d] + per[d] - 1) / per[d];
  return n;
}

/// Ratio of the largest to the smallest extent among axes the grid spans
/// (how far from a cube the shard is).
double spread(const Dims& grid, const Dims& per) {
  int64_t lo = 0;
  int64_t hi = 0;
  for (int d = 0; d < grid.rank(); ++d) {
    if (grid[d] <= 1) continue;
    lo = lo == 0 ? per[d] : std::min(lo, per[d]);
    hi = std::max(hi, per[d]);
  }
  return lo == 0 ? 1.0 : static_cast<double>(hi) / static_cast<double>(lo);
}

/// The extents worth trying on an axis of `g` cells: for each count of
/// shards k along it, the least extent that gives k (ceil(g / k)); every other
/// extent only adds empty slots. O(sqrt(g)) values, ascending.
std::vector<int64_t> extents(int64_t g) {
  std::vector<int64_t> out;
  for (int64_t p = 1; p * p <= g; ++p) out.push_back(p);
  for (int64_t k = 1; k * k <= g + 1; ++k) out.push_back((g + k - 1) / k);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

/// Tries every shape of useful extents (extents()) with at most `max_cells`
/// cells (the last axis takes the least extent giving its fewest shards),
/// keeping in `best` the one with the fewest shards, then fewest slots, then
/// the most cube-like.
void search(const Dims& grid, const std::vector<std::vector<int64_t>>& candidates,
            int64_t max_cells, Dims& per, int d, Dims& best) {
  const int rank = grid.rank();
  int64_t used = 1;
  for (int k = 0; k < d; ++k) used *= per[k];
  if (d == rank - 1) {
    const int64_t most = std::max<int64_t>(1, std::min(grid[d], max_cells / used));
    const int64_t k = (grid[d] + most - 1) / most;
    per[d] = (grid[d] + k - 1) / k;
    const int64_t n = shard_count(grid, per);
    const int64_t best_n = shard_count(grid, best);
    if (n < best_n || (n == best_n && (per.product() < best.product() ||
                                       (per.product() == best.product() &&
                                        spread(grid, per) < spread(grid, best)))))
      best = per;
    return;
  }
  for (int64_t p : candidates[static_cast<size_t>(d)]) {
    if (p * used > max_cells) break;
    per[d] = p;
    search(grid, candidates, max_cells, per, d + 1, best);
  }
}

}  // namespace

ShardGeometry::ShardGeometry(const CellGrid& grid, int64_t max_cells)
    : grid_shape_(grid.grid_shape()), per_shard_(grid.rank(), 1), shard_grid_(grid.rank(), 1) {
  // The shape of at most `max_cells` cells that covers the grid in the fewest
  // shards (a grid of N cells that tiles needs ceil(N / max_cells)); among
  // those, the fewest slots, then the most cube-like: a search over the
  // useful extents of each axis (thousands of shapes for 512 cells in 3-D).
  std::vector<std::vector<int64_t>> candidates;
  for (int d = 0; d < grid.rank(); ++d) candidates.push_back(extents(grid_shape_[d]));
  Dims per(grid.rank(), 1);
  search(grid_shape_, candidates, std::max<int64_t>(1, max_cells), per, 0, per_shard_);
  for (int d = 0; d < grid.rank(); ++d)
    shard_grid_[d] = (grid_shape_[d] + per_shard_[d] - 1) / per_shard_[d];
}

CellIndex ShardGeometry::shard_at(int64_t linear) const {
  CellIndex s(shard_grid_.rank());
  for (int d = shard_grid_.rank() - 1; d >= 0; --d) {
    s[d] = linear % shard_grid_[d];
    linear /= shard_grid_[d];
  }
  return s;
}

CellIndex ShardGeometry::shard_of(const CellIndex& cell) const {
  CellIndex s(cell.rank());
  for (int d = 0; d < cell.rank(); ++d) s[d] = cell[d] / per_shard_[d];
  return s;
}

int64_t ShardGeometry::slot_of(const CellIndex& cell) const {
  int64_t slot = 0;
  for (int d = 0; d < cell.rank(); ++d) slot = slot * per_shard_[d] + cell[d] % per_shard_[d];
  return slot;
}

bool ShardGeometry::cell_of(const CellIndex& shard, int64_t slot, CellIndex& cell) const {
  cell = CellIndex(shard.rank());
  bool inside = true;
  for (int d = shard.rank() - 1; d >= 0; --d) {
    cell[d] = shard[d] * per_shard_[d] + slot % per_shard_[d];
    slot /= per_shard_[d];
    inside = inside && cell[d] < grid_shape_[d];
  }
  return inside;
}

std::string encode_shard(const std::vector<std::string>& chunks) {
  std::string out;
  size_t data = 0;
  for (const std::string& c : chunks) data += c.size();
  out.reserve(data + chunks.size() * kEntryBytes + kCrcBytes);
  for (const std::string& c : chunks) out += c;
  const size_t index_at = out.size();
  uint64_t offset = 0;
  for (const std::string& c : chunks) {
    if (c.empty()) {
      put_le(out, ~uint64_t{0}, 8);
      put_le(out, ~uint64_t{0}, 8);
    } else {
      put_le(out, offset, 8);
      put_le(out, c.size(), 8);
    }
    offset += c.size();
  }
  put_le(out, crc32c(std::string_view(out).substr(index_at)), 4);
  return out;
}

size_t shard_index_bytes(int64_t slots) {
  return static_cast<size_t>(slots) * kEntryBytes + kCrcBytes;
}

std::vector<ShardEntry> parse_shard_index(std::string_view bytes, int64_t slots,
                                          const std::string& what) {
  return parse_shard_index_tail(bytes, bytes.size(), slots, what);
}

std::vector<ShardEntry> parse_shard_index_tail(std::string_view bytes, uint64_t file_size,
                                               int64_t slots, const std::string& what) {
  const size_t index_size = static_cast<size_t>(slots) * kEntryBytes;
  if (file_size < index_size + kCrcBytes || bytes.size() < index_size + kCrcBytes)
    throw CorruptionError(fmt::format("{}: truncated shard ({} bytes, its index alone is {})", what,
                                      file_size, index_size + kCrcBytes));
  const uint64_t index_at = file_size - index_size - kCrcBytes;
  const size_t tail_at = bytes.size() - index_size - kCrcBytes;
  const std::string_view index = bytes.substr(tail_at, index_size);
  if (get_le(bytes.data() + tail_at + index_size, 4) != crc32c(index))
    throw CorruptionError(fmt::format("{}: shard index checksum (crc32c) mismatch", what));
  std::vector<ShardEntry> entries(static_cast<size_t>(slots));
  for (size_t i = 0; i < entries.size(); ++i) {
    ShardEntry& e = entries[i];
    e.offset = get_le(index.data() + i * kEntryBytes, 8);
    e.nbytes = get_le(index.data() + i * kEntryBytes + 8, 8);
    if (e.present() && (e.offset > index_at || e.nbytes > index_at - e.offset))
      throw CorruptionError(fmt::format(
          "{}: shard index entry {} (offset {}, {} bytes) lies outside the shard's {} data bytes",
          what, i, e.offset, e.nbytes, index_at));
  }
  return entries;
}

std::string zarr_v3_dtype(DType dtype) {
  const std::string_view n = dtype_name(dtype);  // "u8", "i16", "f32", ...
  const std::string bits(n.substr(1));
  if (n[0] == 'u') return "uint" + bits;
  if (n[0] == 'i') return "int" + bits;
  return "float" + bits;
}

std::string zarr_v3_json(DType dtype, const CellGrid& grid, const Dims& per_shard, int shuffle) {
  Dims shard_shape(grid.rank());
  for (int d = 0; d < grid.rank(); ++d) shard_shape[d] = per_shard[d] * grid.cell_shape()[d];

  Value blosc = Value::object();
  blosc.set("name", "blosc");
  Value bconf = Value::object();
  bconf.set("blocksize", 0);
  bconf.set("clevel", 5);
  bconf.set("cname", "lz4");
  if (shuffle < 0) shuffle = blosc_shuffle_for(dtype);
  bconf.set("shuffle", shuffle == 2 ? "bitshuffle" : shuffle == 1 ? "shuffle" : "noshuffle");
  bconf.set("typesize", static_cast<int64_t>(dtype_size(dtype)));
  blosc.set("configuration", std::move(bconf));

  Value crc = Value::object();
  crc.set("name", "crc32c");

  Value sconf = Value::object();
  sconf.set("chunk_shape", dims_value(grid.cell_shape()));
  sconf.set("codecs", Value(Value::Array{bytes_codec(), std::move(blosc)}));
  sconf.set("index_codecs", Value(Value::Array{bytes_codec(), std::move(crc)}));
  sconf.set("index_location", "end");
  Value sharding = Value::object();
  sharding.set("name", "sharding_indexed");
  sharding.set("configuration", std::move(sconf));

  Value grid_conf = Value::object();
  grid_conf.set("chunk_shape", dims_value(shard_shape));
  Value chunk_grid = Value::object();
  chunk_grid.set("name", "regular");
  chunk_grid.set("configuration", std::move(grid_conf));

  Value key_conf = Value::object();
  key_conf.set("separator", "/");
  Value key = Value::object();
  key.set("name", "default");
  key.set("configuration", std::move(key_conf));

  Value z = Value::object();
  z.set("zarr_format", 3);
  z.set("node_type", "array");
  z.set("shape", dims_value(grid.shape()));
  // The axis names of the node group's NGFF metadata (OME-NGFF 0.5 asks the
  // level arrays to carry them): the last `rank` of t, c, z, y, x.
  if (grid.rank() <= kMaxRank) {
    static const char* const kNames[] = {"t", "c", "z", "y", "x"};
    Value::Array names;
    for (int i = kMaxRank - grid.rank(); i < kMaxRank; ++i) names.emplace_back(kNames[i]);
    z.set("dimension_names", Value(std::move(names)));
  }
  z.set("data_type", zarr_v3_dtype(dtype));
  z.set("chunk_grid", std::move(chunk_grid));
  z.set("chunk_key_encoding", std::move(key));
  z.set("fill_value", 0);
  z.set("codecs", Value(Value::Array{std::move(sharding)}));
  z.set("attributes", Value::object());
  return to_json(z);
}

}  // namespace cellflow

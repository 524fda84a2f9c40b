#include "cellflow/cache/memoize.hpp"

#include <cxxabi.h>
#include <fmt/format.h>
#include <tbb/parallel_for.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "cellflow/cache/artifacts.hpp"
#include "cellflow/cache/box.hpp"
#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/cache/memo_key_lock.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/store/cache_files.hpp"
#include "cellflow/store/layout.hpp"
#include "cellflow/store/wait_lock.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

/// Chunks of image results stay below this many bytes.
constexpr int64_t kMaxChunkBytes = 4 << 20;
/// Above this row size, image results are cut along every axis.
constexpr int64_t kMaxSlabRowBytes = 16 << 20;

std::string hex128(const XXH128_hash_t& h) {
  return fmt::format("{:016x}{:016x}", h.high64, h.low64);
}

std::string utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return stamp;
}

std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("{}.{}.{:x}", ::getpid(), counter.fetch_add(1),
                     std::chrono::steady_clock::now().time_since_epoch().count() & 0xffffff);
}

// One in-process computation of a key; later callers wait for it.
struct Flight {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
};

class Flights {
 public:
  static Flights& global() {
    static Flights instance;
    return instance;
  }
  /// The flight of `key` and whether the caller leads it.
  std::pair<std::shared_ptr<Flight>, bool> join(const std::string& key) {
    std::lock_guard lock(mu_);
    auto [it, inserted] = flights_.try_emplace(key);
    if (inserted) it->second = std::make_shared<Flight>();
    return {it->second, inserted};
  }
  void finish(const std::string& key, const std::shared_ptr<Flight>& flight) {
    {
      std::lock_guard lock(mu_);
      flights_.erase(key);
    }
    {
      std::lock_guard lock(flight->mu);
      flight->done = true;
    }
    flight->cv.notify_all();
  }
  static void wait(Flight& flight) {
    std::unique_lock lock(flight.mu);
    flight.cv.wait(lock, [&] { return flight.done; });
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;
};

std::string entry_file(const std::string& entry) {
  return join_path(entry, layout::kMemoEntryFile);
}

bool committed(Env& env, const std::string& entry) {
  return env.stat(entry_file(entry)).kind == EntryKind::kFile;
}

// An entry's last use, for `cellflow cache gc`: the newest mtime in its folder.
// Fails harmlessly on a read-only cache; readers never look at the time.
void touch_last_use(Env& env, const std::string& entry) { env.touch(entry_file(entry)); }

// Memo(path) is pointed at a cache directory: the first store makes it one
// that `cellflow cache` recognizes, as CacheDirectory would.
void mark_cache_directory(Env& env) {
  try {
    if (env.stat(layout::kFormatFile).kind != EntryKind::kMissing) return;
    env.write_atomic(layout::kFormatFile, fmt::format("{{\"format\": {}}}\n", layout::kFormat),
                     Durability::kProcess);
  } catch (const Error&) {
    // Only maintenance needs it; the entry itself is fine without.
  }
}

void remove_quietly(Env& env, const std::string& path) {
  try {
    env.remove(path);
  } catch (const Error&) {
  }
}

// Moves a damaged entry out of the way (rename is atomic), then deletes it.
void discard_entry(Env& env, const std::string& key) {
  const std::string entry = layout::memo_entry(key);
  const std::string trash =
      join_path(layout::memo_temp(), key + std::string(layout::kMemoDamagedTag) + unique_suffix());
  try {
    env.rename(entry, trash);
    remove_quietly(env, trash);
  } catch (const Error&) {
    remove_quietly(env, entry);
  }
}

// Temporary folders of `key` left by crashed writers. Only called while
// holding the key's lock, so no live writer owns one.
void remove_stale_temps(Env& env, const std::string& key) {
  const std::string temp = layout::memo_temp();
  std::vector<DirEntry> entries;
  try {
    entries = env.list(temp);
  } catch (const Error&) {
    return;  // damage there is verify's to report
  }
  for (const DirEntry& e : entries)
    if (e.name.starts_with(key + ".")) remove_quietly(env, join_path(temp, e.name));
}

// Chunk shape for an image result. Results are read back whole, so chunks are
// slabs of whole rows (C-order contiguous in the image, decoded in place)
// unless one row is very large; then the longest axis is halved until a chunk
// is small.
Shape chunk_shape(const Shape& shape, size_t element_size) {
  Shape c = shape;
  for (int d = 0; d < c.rank(); ++d) c[d] = std::max<int64_t>(1, c[d]);
  const int64_t row_bytes = c.product() / c[0] * static_cast<int64_t>(element_size);
  if (row_bytes <= kMaxSlabRowBytes) {
    c[0] = std::clamp<int64_t>(kMaxChunkBytes / row_bytes, 1, c[0]);
    return c;
  }
  while (c.product() * static_cast<int64_t>(element_size) > kMaxChunkBytes) {
    int longest = 0;
    for (int d = 1; d < c.rank(); ++d)
      if (c[d] > c[longest]) longest = d;
    if (c[longest] <= 1) break;
    c[longest] = (c[longest] + 1) / 2;
  }
  return c;
}

bool is_slab_grid(const CellGrid& grid) {
  for (int d = 1; d < grid.rank(); ++d)
    if (grid.cell_shape()[d] != grid.shape()[d]) return false;
  return true;
}

Value argument_value(const detail::MemoArgument& a, size_t index) {
  Value v = Value::object();
  v.set("index", static_cast<int64_t>(index));
  v.set("type", detail::demangle(a.type.c_str()));
  if (a.ignored) {
    v.set("ignored", true);
    return v;
  }
  v.set("bytes", static_cast<int64_t>(a.bytes));
  v.set("xxh3", a.hash);
  if (!a.json.empty()) {
    try {
      const Value parsed = parse_json(a.json, "argument");
      if (const Value* inner = parsed.find("v")) v.set("value", *inner);
    } catch (const Error&) {
      // NaN and other values JSON cannot hold: the hash identifies them.
    }
  }
  return v;
}

// `info` completed from its entry's entry.json. Throws CorruptionError when
// the record is missing or does not parse.
MemoEntryInfo entry_info(Env& env, MemoEntryInfo info) {
  const std::optional<Value> record = read_memo_entry(env, info.key);
  if (!record)
    throw CorruptionError(
        fmt::format("memo entry {}: {} is missing", info.key, layout::kMemoEntryFile));
  if (const Value* c = record->find("created"); c != nullptr && c->is_string()) {
    std::tm tm{};
    const char* end = strptime(c->as_string().c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (end != nullptr && *end == '\0')
      info.created = std::chrono::system_clock::from_time_t(timegm(&tm));
  }
  info.age_seconds =
      std::chrono::duration<double>(std::chrono::system_clock::now() - info.created).count();
  if (const Value* t = record->find("seconds"); t != nullptr && t->is_number())
    info.compute_seconds = t->as_double();
  return info;
}

}  // namespace

namespace detail {

DType dtype_from_archive(const std::string& name) {
  const auto t = parse_dtype(name);
  if (!t) throw CorruptionError(fmt::format("stored image has an unknown dtype \"{}\"", name));
  return *t;
}

HashingStreamBuf::HashingStreamBuf() : state_(XXH3_createState()) {
  if (state_ == nullptr) throw std::bad_alloc();
  XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_));
  setp(buffer_, buffer_ + sizeof buffer_);
}

HashingStreamBuf::~HashingStreamBuf() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void HashingStreamBuf::flush_buffer() {
  const auto n = static_cast<size_t>(pptr() - pbase());
  if (n > 0) {
    XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), pbase(), n);
    size_ += n;
  }
  setp(buffer_, buffer_ + sizeof buffer_);
}

HashingStreamBuf::int_type HashingStreamBuf::overflow(int_type c) {
  flush_buffer();
  if (!traits_type::eq_int_type(c, traits_type::eof())) {
    *pptr() = traits_type::to_char_type(c);
    pbump(1);
  }
  return traits_type::not_eof(c);
}

std::streamsize HashingStreamBuf::xsputn(const char* s, std::streamsize n) {
  if (n >= static_cast<std::streamsize>(sizeof buffer_)) {
    flush_buffer();
    XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), s, static_cast<size_t>(n));
    size_ += static_cast<uint64_t>(n);
    return n;
  }
  return std::streambuf::xsputn(s, n);
}

std::string HashingStreamBuf::hex_digest() {
  flush_buffer();
  return hex128(XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_)));
}

uint64_t HashingStreamBuf::size() {
  flush_buffer();
  return size_;
}

CodeIdentity code_identity_for_memo(const void* address) {
  static std::mutex mu;
  static std::unordered_map<const void*, CodeIdentity> known;
  std::lock_guard lock(mu);
  const auto it = known.find(address);
  if (it != known.end()) return it->second;
  CodeIdentity id = code_identity_of(address).value_or(CodeIdentity{});
  if (id.build_id.empty())
    log_warning(fmt::format(
        "memo: the object holding a memoized function ({}) has no ELF build-id; its code cannot "
        "enter the key, so only the version says when it changed (link with -Wl,--build-id)",
        id.library.empty() ? "unknown" : id.library));
  known.emplace(address, id);
  return id;
}

std::string demangle(const char* mangled) {
  int status = 0;
  char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  if (d == nullptr) return mangled;
  std::string out(d);
  std::free(d);
  return out;
}

std::string portable_bytes(const std::function<void(std::ostream&)>& write) {
  std::ostringstream out(std::ios::binary);
  write(out);
  return std::move(out).str();
}

Value store_blob_result(Env& env, const std::string& dir, std::string_view bytes) {
  env.write_atomic(join_path(dir, layout::kMemoBlob), bytes, Durability::kProcess);
  Value d = Value::object();
  d.set("format", "cereal-portable-binary");
  d.set("file", std::string(layout::kMemoBlob));
  d.set("bytes", static_cast<int64_t>(bytes.size()));
  d.set("xxh3", hex128(XXH3_128bits(bytes.data(), bytes.size())));
  return d;
}

std::unique_ptr<BlobBytes> read_blob_result(Env& env, const std::string& entry) {
  const std::string record = entry_file(entry);
  const std::string file = join_path(entry, layout::kMemoBlob);
  const auto text = env.read(record);
  if (!text)
    throw CorruptionError(
        fmt::format("memo entry {}: {} is missing", env.describe(entry), layout::kMemoEntryFile));
  const Value e = parse_json(*text, env.describe(record));
  const Value* result = e.find("result");
  const Value* want = result != nullptr ? result->find("xxh3") : nullptr;
  if (want == nullptr || !want->is_string())
    throw CorruptionError(fmt::format("file {}: no result checksum", env.describe(record)));
  std::optional<std::string> bytes = env.read(file);
  if (!bytes) throw CorruptionError(fmt::format("file {}: missing", env.describe(file)));
  if (hex128(XXH3_128bits(bytes->data(), bytes->size())) != want->as_string())
    throw CorruptionError(
        fmt::format("file {}: checksum mismatch (damaged or truncated)", env.describe(file)));
  return std::make_unique<BlobBytes>(std::move(*bytes));
}

std::unique_ptr<BlobBytes> read_blob_result(const fs::path& entry) {
  fs::path p = entry.lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();
  return read_blob_result(*posix_env(p.parent_path()), p.filename().string());
}

bool has_image_result(Env& env, const std::string& entry) {
  return env.stat(join_path(join_path(entry, layout::kMemoImage), layout::kZarray)).kind ==
         EntryKind::kFile;
}

Value save_image_result(const std::shared_ptr<Env>& env, const std::string& dir,
                        const CellBuffer& image) {
  const size_t esize = dtype_size(image.dtype());
  const CellGrid grid(image.shape(), chunk_shape(image.shape(), esize));
  // The entry is written under a temporary name and renamed into place, so
  // its chunks are bound to what they are (a memo result), not to a folder name.
  auto array = ZarrArray::create(env, join_path(dir, layout::kMemoImage),
                                 std::string(layout::kMemoResultOwner), image.dtype(), grid);
  const Box whole = Box::from_shape(image.shape());
  tbb::parallel_for(int64_t{0}, grid.num_cells(), [&](int64_t c) {
    const CellIndex cell = grid.cell_at(c);
    const Box box = grid.cell_box(cell);
    CellBuffer chunk = CellBuffer::allocate(image.dtype(), box.shape());
    copy_region(image.data(), whole, chunk.mutable_data(), box, box, esize);
    array->write(cell, chunk);
  });
  Value d = Value::object();
  d.set("format", "zarr");
  d.set("path", std::string(layout::kMemoImage));
  d.set("dtype", std::string(dtype_name(image.dtype())));
  d.set("shape", Value::list(image.shape().to_vector()));
  d.set("chunks", Value::list(grid.cell_shape().to_vector()));
  return d;
}

CellBuffer load_image_result(const std::shared_ptr<Env>& env, const std::string& entry) {
  const std::string folder = join_path(entry, layout::kMemoImage);
  auto array = ZarrArray::open(env, folder, std::string(layout::kMemoResultOwner));
  const CellGrid& grid = array->grid();
  const size_t esize = dtype_size(array->dtype());
  CellBuffer image = CellBuffer::allocate(array->dtype(), grid.shape());
  const Box whole = Box::from_shape(grid.shape());
  const bool slabs = is_slab_grid(grid);
  const auto chunk_bytes = static_cast<size_t>(grid.cell_shape().product()) * esize;
  tbb::parallel_for(int64_t{0}, grid.num_cells(), [&](int64_t c) {
    const CellIndex cell = grid.cell_at(c);
    if (slabs) {
      // A slab is contiguous in the image: decode it in place (the last one,
      // padded on disk, through a temporary).
      const std::string file = layout::cell(folder, cell);
      const auto stored = env->read(file);
      if (!stored)
        throw CorruptionError(
            fmt::format("memo result {}: chunk {} is missing", env->describe(folder), cell.str()));
      const auto offset =
          static_cast<size_t>(grid.cell_box(cell).begin()[0] *
                              (grid.cell_shape().product() / grid.cell_shape()[0])) *
          esize;
      const size_t bytes = std::min(chunk_bytes, image.num_bytes() - offset);
      if (bytes == chunk_bytes) {
        ZarrArray::decode_chunk(*stored, image.mutable_data() + offset, bytes, env->describe(file),
                                layout::cell_identity(array->owner(), cell));
      } else {
        std::string padded(chunk_bytes, '\0');
        ZarrArray::decode_chunk(*stored, padded.data(), chunk_bytes, env->describe(file),
                                layout::cell_identity(array->owner(), cell));
        std::memcpy(image.mutable_data() + offset, padded.data(), bytes);
      }
      return;
    }
    const std::optional<CellBuffer> chunk = array->read(cell);
    if (!chunk)
      throw CorruptionError(
          fmt::format("memo result {}: chunk {} is missing", env->describe(folder), cell.str()));
    const Box box = grid.cell_box(cell);
    copy_region(chunk->data(), box, image.mutable_data(), whole, box, esize);
  });
  return image;
}

}  // namespace detail

std::string memo_key(const detail::MemoCall& call) {
  std::string text = fmt::format("cellflow-memo 1\nfunction {}\nversion {}\nresult {}\n",
                                 call.function, call.version, call.result_type);
  // Only present when the code is known, so keys made without it (before
  // key_by_code existed, or with it off) are unchanged.
  if (!call.code.empty()) text += fmt::format("code {}\n", call.code);
  for (size_t i = 0; i < call.arguments.size(); ++i) {
    const detail::MemoArgument& a = call.arguments[i];
    if (a.ignored) {
      text += fmt::format("arg {} {} ignored\n", i, a.type);
    } else {
      text += fmt::format("arg {} {} {} {}\n", i, a.type, a.bytes, a.hash);
    }
  }
  return hex128(XXH3_128bits(text.data(), text.size()));
}

struct Memo::State {
  fs::path root;  // <cache>/memo, for users
  fs::path cache_root;
  std::mutex mu;             // guards env, lock_timeout, log_level and validator
  std::shared_ptr<Env> env;  // opened on first use for Memo(path)
  std::optional<std::chrono::milliseconds> lock_timeout;
  std::optional<LogLevel> log_level;
  MemoValidator validator;
  std::atomic<bool> key_by_code{true};
  std::atomic<int64_t> hits{0};
  std::atomic<int64_t> misses{0};

  std::shared_ptr<Env> open_env() {
    std::lock_guard lock(mu);
    if (!env) env = posix_env(cache_root);
    return env;
  }
};

Memo::Memo(fs::path cache_root) : state_(std::make_shared<State>()) {
  state_->cache_root = std::move(cache_root);
  state_->root = state_->cache_root / std::string(layout::kMemo);
}

Memo::Memo(const CacheDirectory& cache) : Memo(cache.env()) {}

Memo::Memo(std::shared_ptr<Env> env) : state_(std::make_shared<State>()) {
  state_->cache_root = env->root();
  state_->root = state_->cache_root / std::string(layout::kMemo);
  state_->env = std::move(env);
}

const fs::path& Memo::root() const { return state_->root; }

MemoStats Memo::stats() const { return MemoStats{state_->hits.load(), state_->misses.load()}; }

void Memo::set_lock_timeout(std::optional<std::chrono::milliseconds> timeout) {
  std::lock_guard lock(state_->mu);
  state_->lock_timeout = timeout;
}

std::optional<std::chrono::milliseconds> Memo::lock_timeout() const {
  std::lock_guard lock(state_->mu);
  return state_->lock_timeout;
}

void Memo::set_key_by_code(bool on) { state_->key_by_code.store(on); }

bool Memo::key_by_code() const { return state_->key_by_code.load(); }

void Memo::set_log_level(std::optional<LogLevel> level) {
  std::lock_guard lock(state_->mu);
  state_->log_level = level;
}

std::optional<LogLevel> Memo::log_level() const {
  std::lock_guard lock(state_->mu);
  return state_->log_level;
}

void Memo::set_validator(MemoValidator validator) {
  std::lock_guard lock(state_->mu);
  state_->validator = std::move(validator);
}

bool Memo::remove(const std::string& key) const {
  const std::shared_ptr<Env> env = state_->open_env();
  if (!committed(*env, layout::memo_entry(key))) return false;
  return remove_memo_entry(*env, key) == MemoRemoval::kRemoved;
}

std::optional<fs::path> Memo::find(const std::string& key) const {
  if (committed(*state_->open_env(), layout::memo_entry(key))) return state_->root / key;
  return std::nullopt;
}

size_t Memo::clear(std::string_view function_id) const {
  const std::shared_ptr<Env> env_ptr = state_->open_env();
  Env& env = *env_ptr;
  size_t removed = 0;
  for (const DirEntry& e : env.list(layout::kMemo)) {
    if (e.kind != EntryKind::kFolder || !layout::is_node_name(e.name)) continue;
    if (!function_id.empty()) {
      std::optional<Value> record;
      try {
        record = read_memo_entry(env, e.name);
      } catch (const Error&) {
        continue;  // unreadable: `cellflow cache verify --repair` handles it
      }
      const Value* f = record ? record->find("function") : nullptr;
      if (f == nullptr || !f->is_string() || f->as_string() != function_id) continue;
    }
    if (remove_memo_entry(env, e.name) == MemoRemoval::kRemoved) ++removed;
  }
  return removed;
}

MemoOutcome Memo::run(const detail::MemoCall& call, const LoadFn& load,
                      const ComputeFn& compute) const {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const std::shared_ptr<Env> env_ptr = state_->open_env();
  Env& env = *env_ptr;
  const std::optional<std::chrono::milliseconds> timeout = lock_timeout();
  std::optional<LogLevel> level;
  MemoValidator validator;
  {
    std::lock_guard lock(state_->mu);
    level = state_->log_level;
    validator = state_->validator;
  }
  MemoOutcome out;
  out.key = memo_key(call);
  out.entry = state_->root / out.key;
  const std::string entry = layout::memo_entry(out.key);
  const std::string lock_file = layout::memo_lock(out.key);
  const std::string where = fmt::format("memo \"{}\" (version {}, entry {})", call.function,
                                        call.version, out.entry.string());
  const std::string what =
      fmt::format("memo \"{}\" (version {}, key {})", call.function, call.version, out.key);
  const auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  // Loads a committed entry; false (after a warning, once per call) when it is damaged.
  bool warned = false;
  const auto try_load = [&]() {
    try {
      load(env_ptr, entry);
      return true;
    } catch (const std::exception& e) {
      if (!std::exchange(warned, true))
        log_warning(fmt::format("{}: cannot load it ({}); computing it again", where, e.what()));
      return false;
    }
  };
  // The validator's verdict on the committed entry (true without one).
  // A rejected entry is not asked about again under the exclusive lock,
  // unless another thread has stored a new one since.
  bool rejected = false;
  const auto valid = [&]() {
    if (!validator) return true;
    if (rejected) return false;
    MemoEntryInfo info;
    info.function = call.function;
    info.version = call.version;
    info.key = out.key;
    info.entry = out.entry;
    try {
      info = entry_info(env, std::move(info));
    } catch (const Error& e) {
      if (!std::exchange(warned, true))
        log_warning(
            fmt::format("{}: cannot read its record ({}); computing it again", where, e.what()));
      return false;
    }
    const bool ok = with_context(where, [&] { return validator(info); });
    rejected = !ok;
    if (!ok && level)
      log(*level, fmt::format("{}: rejected by the validator (age {:.3f} s, computed in {:.3f} s); "
                              "computing it again",
                              what, info.age_seconds, info.compute_seconds));
    return ok;
  };
  const auto hit = [&]() {
    out.cached = true;
    out.seconds = seconds_since(t0);
    state_->hits.fetch_add(1);
    if (level) log(*level, fmt::format("{}: hit, loaded in {:.3f} s", what, out.seconds));
    return out;
  };

  while (true) {
    if (committed(env, entry)) {
      // Maintenance (cache gc, verify --repair) removes an entry only under
      // the key's lock taken exclusively: a shared hold keeps it while we load.
      const auto reading = wait_lock(env, lock_file, 0, LockMode::kShared, timeout, what);
      if (committed(env, entry) && valid() && try_load()) {
        touch_last_use(env, entry);
        return hit();
      }
    }
    auto [flight, leader] = Flights::global().join(out.entry.string());
    if (!leader) {
      // Another thread computes this key: wait, then load what it stored (or
      // lead the next attempt if it failed).
      Flights::wait(*flight);
      rejected = false;
      continue;
    }
    struct FlightEnd {
      const std::string key;
      std::shared_ptr<Flight> flight;
      ~FlightEnd() { Flights::global().finish(key, flight); }
    } flight_end{out.entry.string(), flight};

    const auto lock = wait_lock(env, lock_file, 0, LockMode::kExclusive, timeout, what);
    if (committed(env, entry)) {
      if (valid() && try_load()) return hit();  // another process stored it meanwhile
      discard_entry(env, out.key);
    }
    remove_stale_temps(env, out.key);
    double computed_in = 0;
    mark_cache_directory(env);
    const std::string tmp = join_path(layout::memo_temp(), out.key + "." + unique_suffix());
    with_context(where, [&] { env.make_folders(tmp); });
    try {
      const auto c0 = Clock::now();
      Value result;
      {
        const ArtifactWriter artifacts(env_ptr, join_path(tmp, layout::kArtifacts));
        const ScopedArtifacts scope(&artifacts);
        result = compute(env_ptr, tmp);
      }
      const double seconds = seconds_since(c0);
      computed_in = seconds;
      if (const Value* json = result.find("json"); json != nullptr && json->is_string()) {
        try {
          const Value parsed = parse_json(json->as_string(), "result");
          if (const Value* inner = parsed.find("v")) result.set("value", *inner);
        } catch (const Error&) {
        }
        Value::Object kept;
        for (auto& [k, v] : result.as_object())
          if (k != "json") kept.emplace_back(k, std::move(v));
        result = Value(std::move(kept));
      }
      Value args = Value::array();
      for (size_t i = 0; i < call.arguments.size(); ++i)
        args.as_array().push_back(argument_value(call.arguments[i], i));
      char host[256] = {};
      ::gethostname(host, sizeof host - 1);
      Value record = Value::object();
      record.set("cellflow_memo", 1);
      record.set("function", call.function);
      record.set("version", call.version);
      record.set("key", out.key);
      record.set("result_type", detail::demangle(call.result_type.c_str()));
      if (!call.code.empty()) {
        Value code = Value::object();
        code.set("build_id", call.code);
        code.set("library", call.library);
        record.set("code", std::move(code));
      }
      record.set("arguments", std::move(args));
      record.set("result", std::move(result));
      record.set("created", utc_now());
      record.set("seconds", seconds);
      record.set("host", std::string(host));
      record.set("pid", static_cast<int64_t>(::getpid()));
      env.write_atomic(entry_file(tmp), to_json(record), Durability::kProcess);
      try {
        env.rename(tmp, entry);
      } catch (const IoError& e) {
        // Without working locks another process may have committed first.
        remove_quietly(env, tmp);
        if (!committed(env, entry))
          throw IoError(fmt::format("{}: cannot commit it: {}", where, e.what()));
      }
    } catch (...) {
      remove_quietly(env, tmp);
      throw;
    }
    out.cached = false;
    out.seconds = seconds_since(t0);
    state_->misses.fetch_add(1);
    if (level)
      log(*level, fmt::format("{}: miss, computed in {:.3f} s (call {:.3f} s)", what, computed_in,
                              out.seconds));
    return out;
  }
}

}  // namespace cellflow

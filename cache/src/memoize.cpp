#include "cellflow/cache/memoize.hpp"

#include <cxxabi.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <tbb/parallel_for.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "cellflow/cache/artifacts.hpp"
#include "cellflow/cache/box.hpp"
#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/store/layout.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

constexpr const char* kEntryFile = "entry.json";
constexpr const char* kBlobFile = "result.bin";
constexpr const char* kImageDir = "result";
constexpr const char* kTempDir = ".tmp";
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

// A flock of one file (LOCK_EX or LOCK_SH), held until destroyed; unlocked (and
// a no-op) where the file cannot be opened (read-only cache).
class FileLock {
 public:
  explicit FileLock(const fs::path& path, int operation = LOCK_EX) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0 && errno == ENOENT) {
      std::error_code ec;
      fs::create_directories(path.parent_path(), ec);
      fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    }
    if (fd_ < 0) return;
    int rc;
    do {
      rc = ::flock(fd_, operation);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the lock
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

bool committed(const fs::path& entry) { return ::access((entry / kEntryFile).c_str(), F_OK) == 0; }

// An entry's last use, for `cellflow cache gc`: the newest mtime in its folder.
// Fails harmlessly on a read-only cache; readers never look at the time.
void touch_last_use(const fs::path& entry) {
  ::utimensat(AT_FDCWD, (entry / kEntryFile).c_str(), nullptr, 0);
}

// Memo(path) is pointed at a cache directory: the first store makes it one
// that `cellflow cache` recognizes, as CacheDirectory would.
void mark_cache_directory(const fs::path& memo_root) {
  const fs::path format_file = memo_root.parent_path() / "cellflow-cache.json";
  if (::access(format_file.c_str(), F_OK) == 0) return;
  try {
    write_file_atomic(format_file, fmt::format("{{\"format\": {}}}\n", layout::kFormat));
  } catch (const Error&) {
    // Only maintenance needs it; the entry itself is fine without.
  }
}

void remove_quietly(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
}

// Moves a damaged entry out of the way (rename is atomic), then deletes it.
void discard_entry(const fs::path& root, const fs::path& entry) {
  const fs::path trash =
      root / kTempDir / (entry.filename().string() + ".damaged." + unique_suffix());
  std::error_code ec;
  fs::create_directories(trash.parent_path(), ec);
  if (::rename(entry.c_str(), trash.c_str()) == 0) {
    remove_quietly(trash);
  } else {
    remove_quietly(entry);
  }
}

// Temporary folders of `key` left by crashed writers. Only called while
// holding the key's lock, so no live writer owns one.
void remove_stale_temps(const fs::path& root, const std::string& key) {
  std::error_code ec;
  const fs::path dir = root / kTempDir;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().starts_with(key + ".")) remove_quietly(it->path());
  }
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

std::string demangle(const char* mangled) {
  int status = 0;
  char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  if (d == nullptr) return mangled;
  std::string out(d);
  std::free(d);
  return out;
}

void write_stream_file(const fs::path& path, const std::function<void(std::ostream&)>& write) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out)
    throw IoError(fmt::format("file {}: cannot create: {}", path.string(), std::strerror(errno)));
  write(out);
  out.close();
  if (!out) throw IoError(fmt::format("file {}: cannot write", path.string()));
}

Value describe_blob_result(const fs::path& file) {
  const auto bytes = read_file(file);
  if (!bytes) throw IoError(fmt::format("file {}: missing after it was written", file.string()));
  Value d = Value::object();
  d.set("format", "cereal-portable-binary");
  d.set("file", kBlobFile);
  d.set("bytes", static_cast<int64_t>(bytes->size()));
  d.set("xxh3", hex128(XXH3_128bits(bytes->data(), bytes->size())));
  return d;
}

MappedFile::~MappedFile() {
  if (size_ > 0) ::munmap(const_cast<void*>(data_), size_);
}

std::unique_ptr<MappedFile> read_blob_result(const fs::path& entry) {
  const fs::path entry_file = entry / kEntryFile;
  const fs::path file = entry / kBlobFile;
  const auto text = read_file(entry_file);
  if (!text)
    throw CorruptionError(fmt::format("memo entry {}: {} is missing", entry.string(), kEntryFile));
  const Value e = parse_json(*text, entry_file.string());
  const Value* result = e.find("result");
  const Value* want = result != nullptr ? result->find("xxh3") : nullptr;
  if (want == nullptr || !want->is_string())
    throw CorruptionError(fmt::format("file {}: no result checksum", entry_file.string()));
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw CorruptionError(
        fmt::format("file {}: cannot open: {}", file.string(), std::strerror(errno)));
  struct stat st {};
  void* data = nullptr;
  if (::fstat(fd, &st) == 0 && st.st_size > 0) {
    data = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE | MAP_POPULATE,
                  fd, 0);
  }
  const int err = errno;
  ::close(fd);
  if (data == MAP_FAILED || (data == nullptr && st.st_size > 0))
    throw CorruptionError(
        fmt::format("file {}: cannot map: {}", file.string(), std::strerror(err)));
  auto mapped =
      std::make_unique<MappedFile>(data, data != nullptr ? static_cast<size_t>(st.st_size) : 0);
  const std::string_view bytes = mapped->bytes();
  if (hex128(XXH3_128bits(bytes.data(), bytes.size())) != want->as_string())
    throw CorruptionError(
        fmt::format("file {}: checksum mismatch (damaged or truncated)", file.string()));
  return mapped;
}

bool has_image_result(const fs::path& entry) {
  return ::access((entry / kImageDir / ".zarray").c_str(), F_OK) == 0;
}

Value save_image_result(const fs::path& dir, const CellBuffer& image) {
  const size_t esize = dtype_size(image.dtype());
  const CellGrid grid(image.shape(), chunk_shape(image.shape(), esize));
  // The entry is written under a temporary name and renamed into place, so
  // its chunks are bound to what they are (a memo result), not to a folder name.
  auto array = ZarrArray::create(posix_env(dir.parent_path()), dir.filename().string(),
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
  d.set("path", kImageDir);
  d.set("dtype", std::string(dtype_name(image.dtype())));
  d.set("shape", Value::list(image.shape().to_vector()));
  d.set("chunks", Value::list(grid.cell_shape().to_vector()));
  return d;
}

CellBuffer load_image_result(const fs::path& dir) {
  auto array = ZarrArray::open(posix_env(dir.parent_path()), dir.filename().string(),
                               std::string(layout::kMemoResultOwner));
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
      const fs::path file = array->cell_path(cell);
      const auto stored = read_file(file);
      if (!stored)
        throw CorruptionError(
            fmt::format("memo result {}: chunk {} is missing", dir.string(), cell.str()));
      const auto offset =
          static_cast<size_t>(grid.cell_box(cell).begin()[0] *
                              (grid.cell_shape().product() / grid.cell_shape()[0])) *
          esize;
      const size_t bytes = std::min(chunk_bytes, image.num_bytes() - offset);
      if (bytes == chunk_bytes) {
        ZarrArray::decode_chunk(*stored, image.mutable_data() + offset, bytes, file.string(),
                                layout::cell_identity(array->owner(), cell));
      } else {
        std::string padded(chunk_bytes, '\0');
        ZarrArray::decode_chunk(*stored, padded.data(), chunk_bytes, file.string(),
                                layout::cell_identity(array->owner(), cell));
        std::memcpy(image.mutable_data() + offset, padded.data(), bytes);
      }
      return;
    }
    const std::optional<CellBuffer> chunk = array->read(cell);
    if (!chunk)
      throw CorruptionError(
          fmt::format("memo result {}: chunk {} is missing", dir.string(), cell.str()));
    const Box box = grid.cell_box(cell);
    copy_region(chunk->data(), box, image.mutable_data(), whole, box, esize);
  });
  return image;
}

}  // namespace detail

std::string memo_key(const detail::MemoCall& call) {
  std::string text = fmt::format("cellflow-memo 1\nfunction {}\nversion {}\nresult {}\n",
                                 call.function, call.version, call.result_type);
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
  fs::path root;
  std::atomic<int64_t> hits{0};
  std::atomic<int64_t> misses{0};
};

Memo::Memo(fs::path cache_root) : state_(std::make_shared<State>()) {
  state_->root = std::move(cache_root) / "memo";
}

Memo::Memo(const CacheDirectory& cache) : Memo(cache.root()) {}

const fs::path& Memo::root() const { return state_->root; }

MemoStats Memo::stats() const { return MemoStats{state_->hits.load(), state_->misses.load()}; }

std::optional<fs::path> Memo::find(const std::string& key) const {
  const fs::path entry = state_->root / key;
  if (committed(entry)) return entry;
  return std::nullopt;
}

MemoOutcome Memo::run(const detail::MemoCall& call, const LoadFn& load,
                      const ComputeFn& compute) const {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const fs::path& root = state_->root;
  MemoOutcome out;
  out.key = memo_key(call);
  out.entry = root / out.key;
  const std::string where = fmt::format("memo \"{}\" (version {}, entry {})", call.function,
                                        call.version, out.entry.string());
  const auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  // Loads a committed entry; false (after a warning, once per call) when it is damaged.
  bool warned = false;
  const auto try_load = [&]() {
    try {
      load(out.entry);
      return true;
    } catch (const std::exception& e) {
      if (!std::exchange(warned, true))
        log_warning(fmt::format("{}: cannot load it ({}); computing it again", where, e.what()));
      return false;
    }
  };
  const auto hit = [&]() {
    out.cached = true;
    out.seconds = seconds_since(t0);
    state_->hits.fetch_add(1);
    return out;
  };

  while (true) {
    if (committed(out.entry)) {
      // Maintenance (cache gc, verify --repair) removes an entry only under
      // the key's lock taken exclusively: a shared hold keeps it while we load.
      const FileLock reading(root / (out.key + ".lock"), LOCK_SH);
      if (committed(out.entry) && try_load()) {
        touch_last_use(out.entry);
        return hit();
      }
    }
    auto [flight, leader] = Flights::global().join(out.entry.string());
    if (!leader) {
      // Another thread computes this key: wait, then load what it stored (or
      // lead the next attempt if it failed).
      Flights::wait(*flight);
      continue;
    }
    struct FlightEnd {
      const std::string key;
      std::shared_ptr<Flight> flight;
      ~FlightEnd() { Flights::global().finish(key, flight); }
    } flight_end{out.entry.string(), flight};

    const FileLock lock(root / (out.key + ".lock"));
    if (committed(out.entry)) {
      if (try_load()) return hit();  // another process stored it meanwhile
      discard_entry(root, out.entry);
    }
    remove_stale_temps(root, out.key);
    mark_cache_directory(root);
    const fs::path tmp = root / kTempDir / (out.key + "." + unique_suffix());
    std::error_code ec;
    fs::create_directories(tmp, ec);
    if (ec)
      throw IoError(fmt::format("{}: cannot create {}: {}", where, tmp.string(), ec.message()));
    try {
      const auto c0 = Clock::now();
      Value result;
      {
        const ArtifactWriter artifacts(tmp / "artifacts");
        const ScopedArtifacts scope(&artifacts);
        result = compute(tmp);
      }
      const double seconds = seconds_since(c0);
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
      Value entry = Value::object();
      entry.set("cellflow_memo", 1);
      entry.set("function", call.function);
      entry.set("version", call.version);
      entry.set("key", out.key);
      entry.set("result_type", detail::demangle(call.result_type.c_str()));
      entry.set("arguments", std::move(args));
      entry.set("result", std::move(result));
      entry.set("created", utc_now());
      entry.set("seconds", seconds);
      entry.set("host", std::string(host));
      entry.set("pid", static_cast<int64_t>(::getpid()));
      write_file_atomic(tmp / kEntryFile, to_json(entry));
      if (::rename(tmp.c_str(), out.entry.c_str()) != 0) {
        // Without working locks another process may have committed first.
        const int err = errno;
        remove_quietly(tmp);
        if (!committed(out.entry))
          throw IoError(fmt::format("{}: cannot commit it: {}", where, std::strerror(err)));
      }
    } catch (...) {
      remove_quietly(tmp);
      throw;
    }
    out.cached = false;
    out.seconds = seconds_since(t0);
    state_->misses.fetch_add(1);
    return out;
  }
}

}  // namespace cellflow

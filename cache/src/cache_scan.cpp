#include "cellflow/cache/cache_scan.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <random>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/dtype.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"
#include "cellflow/cache/memo_key_lock.hpp"
#include "cellflow/cache/memoize.hpp"
#include "cellflow/cache/node_use_lock.hpp"
#include "cellflow/cache/table.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/store/layout.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

constexpr const char* kFormatFile = "cellflow-cache.json";
constexpr const char* kCompleteMarker = ".cellflow-complete";
constexpr const char* kZgroupText = "{\n  \"zarr_format\": 2\n}\n";

bool is_hash_name(const std::string& name) {
  if (name.size() != 32) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Temporary files of write_file_atomic(): "." + name + ".tmp." + pid + ...
bool is_temp_name(const std::string& name) {
  return name.size() > 1 && name[0] == '.' && name.find(".tmp.") != std::string::npos;
}

bool parse_index(const std::string& s, int64_t& out) {
  if (s.empty() || s.size() > 18) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}

fs::file_time_type mtime_of(const struct stat& st) {
  const std::chrono::sys_time<std::chrono::nanoseconds> sys{
      std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)};
  return std::chrono::time_point_cast<fs::file_time_type::duration>(
      fs::file_time_type::clock::from_sys(sys));
}

struct Entry {
  fs::path path;
  std::vector<std::string> rel;  // components below the walk's start
  struct stat st {};
};

// Every entry below `dir` (not `dir` itself), depth first. Entries that vanish
// while we walk (another process renamed or removed them) are skipped.
void walk(const fs::path& dir, std::vector<std::string>& rel, std::vector<Entry>& out) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) return;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return;
    const fs::path p = it->path();
    Entry e;
    if (::lstat(p.c_str(), &e.st) != 0) continue;
    rel.push_back(p.filename().string());
    e.path = p;
    e.rel = rel;
    const bool is_dir = S_ISDIR(e.st.st_mode);
    out.push_back(std::move(e));
    if (is_dir) walk(p, rel, out);
    rel.pop_back();
  }
}

std::vector<Entry> walk(const fs::path& dir) {
  std::vector<Entry> out;
  std::vector<std::string> rel;
  walk(dir, rel, out);
  return out;
}

void check_root(const fs::path& root) {
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0) {
    throw InvalidArgument(
        fmt::format("cache {}: no such directory ({})", root.string(), std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode))
    throw InvalidArgument(fmt::format("cache {}: not a directory", root.string()));
  if (::access((root / kFormatFile).c_str(), F_OK) != 0) {
    throw InvalidArgument(
        fmt::format("cache {}: not a cellflow cache (no {})", root.string(), kFormatFile));
  }
}

Shape shape_from(const Value* v) {
  if (v == nullptr || !v->is_array()) throw CorruptionError("missing or malformed shape");
  const auto& a = v->as_array();
  if (a.empty() || a.size() > static_cast<size_t>(kMaxRank))
    throw CorruptionError("shape of unsupported rank");
  Shape s(static_cast<int>(a.size()));
  for (size_t i = 0; i < a.size(); ++i) s[static_cast<int>(i)] = a[i].as_int();
  return s;
}

std::string string_field(const Value& obj, const char* key) {
  const Value* v = obj.find(key);
  return v != nullptr && v->is_string() ? v->as_string() : std::string();
}

// What a node folder holds, read without verifying cells.
struct NodeScan {
  CachedNode node;
  bool has_zattrs = false;
  std::string zattrs_problem;  // .zattrs exists but is damaged
  std::string zgroup_problem;
  bool has_zarray = false;
  std::string zarray_problem;  // .zarray exists but is damaged or disagrees with .zattrs
  std::optional<DType> dtype;
  std::optional<CellGrid> grid;  // the grid the cells are checked against
  fs::path cells_dir;            // "0" or "table"
  std::vector<std::pair<fs::path, CellIndex>> cells;
  std::vector<fs::path> foreign;  // non-hidden files in the cell tree that are not cells
  std::vector<Entry> temps;       // temporary files anywhere in the folder
};

void read_definition(NodeScan& s, const fs::path& dir, Shape& def_shape, Shape& def_cells,
                     std::optional<DType>& def_dtype) {
  CachedNode& n = s.node;
  const fs::path zattrs = dir / ".zattrs";
  std::optional<std::string> text;
  try {
    text = read_file(zattrs);
  } catch (const Error& e) {
    s.has_zattrs = true;
    s.zattrs_problem = e.message();
    return;
  }
  if (!text) return;
  s.has_zattrs = true;
  try {
    const Value attrs = parse_json(*text, ".zattrs");
    const Value* def = attrs.find("cellflow");
    if (def == nullptr || !def->is_object())
      throw CorruptionError("no \"cellflow\" node definition");
    n.id = string_field(*def, "id");
    n.op = string_field(*def, "op");
    n.dtype = string_field(*def, "dtype");
    const std::string hash = string_field(*def, "hash");
    if (!hash.empty() && hash != n.hash)
      throw CorruptionError(fmt::format("defines node {}, not this folder's {}", hash, n.hash));
    if (n.op.empty()) throw CorruptionError("the definition has no op");
    def_dtype = parse_dtype(n.dtype);
    if (!def_dtype) throw CorruptionError(fmt::format("unknown dtype \"{}\"", n.dtype));
    def_shape = shape_from(def->find("shape"));
    def_cells = shape_from(def->find("cell_shape"));
    (void)CellGrid(def_shape, def_cells);  // validates
  } catch (const Error& e) {
    s.zattrs_problem = e.message();
    def_shape = Shape();
    def_cells = Shape();
    def_dtype.reset();
  }
}

NodeScan scan_node(const fs::path& root, const std::string& hash) {
  NodeScan s;
  CachedNode& n = s.node;
  n.hash = hash;
  n.path = root / hash;
  const fs::path& dir = n.path;

  Shape def_shape;
  Shape def_cells;
  std::optional<DType> def_dtype;
  read_definition(s, dir, def_shape, def_cells, def_dtype);

  if (auto text = [&]() -> std::optional<std::string> {
        try {
          return read_file(dir / ".zgroup");
        } catch (const Error& e) {
          s.zgroup_problem = e.message();
          return std::nullopt;
        }
      }()) {
    try {
      const Value g = parse_json(*text, ".zgroup");
      const Value* f = g.find("zarr_format");
      if (f == nullptr || !f->is_int() || f->as_int() != 2)
        throw CorruptionError("not a Zarr v2 group (zarr_format is not 2)");
    } catch (const Error& e) {
      s.zgroup_problem = e.message();
    }
  }

  struct stat st {};
  const bool image = ::stat((dir / "0").c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  n.kind = image ? CachedNodeKind::kImage
                 : (s.has_zattrs && s.zattrs_problem.empty() ? CachedNodeKind::kTable
                                                             : CachedNodeKind::kUnknown);
  if (image) {
    s.cells_dir = dir / "0";
    const fs::path meta = s.cells_dir / ".zarray";
    std::optional<std::string> text;
    try {
      text = read_file(meta);
    } catch (const Error& e) {
      s.has_zarray = true;
      s.zarray_problem = e.message();
    }
    if (text) {
      s.has_zarray = true;
      try {
        const auto array = ZarrArray::open(s.cells_dir);
        if (def_dtype && (array->dtype() != *def_dtype || !(array->grid().shape() == def_shape) ||
                          !(array->grid().cell_shape() == def_cells))) {
          throw CorruptionError(
              fmt::format("says {} {} chunks {}, the node's definition {} {} chunks {}",
                          dtype_name(array->dtype()), array->grid().shape().str(),
                          array->grid().cell_shape().str(), dtype_name(*def_dtype), def_shape.str(),
                          def_cells.str()));
        }
        s.dtype = array->dtype();
        s.grid = array->grid();
      } catch (const Error& e) {
        // ZarrArray::open names the file itself; keep only the cause.
        std::string why = e.message();
        s.zarray_problem = why.empty() ? e.what() : why;
      }
    }
  } else if (n.kind == CachedNodeKind::kTable) {
    s.cells_dir = dir / "table";
  }
  if (!s.grid && def_dtype) {
    s.dtype = def_dtype;
    s.grid = CellGrid(def_shape, def_cells);
  }
  if (s.grid) {
    n.shape = s.grid->shape();
    n.cell_shape = s.grid->cell_shape();
    n.cells_total = s.grid->num_cells();
    if (n.dtype.empty() && s.dtype) n.dtype = std::string(dtype_name(*s.dtype));
  }

  n.complete_marker = ::access((dir / kCompleteMarker).c_str(), F_OK) == 0;
  n.last_used = fs::file_time_type::min();
  if (::stat(dir.c_str(), &st) == 0) {
    n.bytes += static_cast<uint64_t>(st.st_blocks) * 512;
    n.last_used = mtime_of(st);
  }
  const std::string cells_name =
      s.cells_dir.empty() ? std::string() : s.cells_dir.filename().string();
  for (Entry& e : walk(dir)) {
    n.bytes += static_cast<uint64_t>(e.st.st_blocks) * 512;
    n.last_used = std::max(n.last_used, mtime_of(e.st));
    const std::string& name = e.rel.back();
    if (!S_ISREG(e.st.st_mode)) continue;
    if (is_temp_name(name)) {
      s.temps.push_back(std::move(e));
      continue;
    }
    if (name[0] == '.' || cells_name.empty() || e.rel.front() != cells_name || e.rel.size() < 2)
      continue;
    // A file in the cell tree: "<cells>/i/j/k" for a cell of the grid.
    bool ok = s.grid.has_value() && static_cast<int>(e.rel.size()) - 1 == s.grid->rank();
    CellIndex cell;
    if (ok) {
      cell = CellIndex(s.grid->rank());
      for (int d = 0; ok && d < s.grid->rank(); ++d) {
        int64_t v = 0;
        ok = parse_index(e.rel[static_cast<size_t>(d) + 1], v) && v < s.grid->grid_shape()[d];
        cell[d] = v;
      }
    }
    if (ok) {
      s.cells.emplace_back(e.path, cell);
    } else if (s.grid) {
      s.foreign.push_back(e.path);
    }
  }
  n.cells_present = static_cast<int64_t>(s.cells.size());
  if (s.has_zattrs && !s.zattrs_problem.empty()) {
    n.metadata_problem = ".zattrs: " + s.zattrs_problem;
  } else if (!s.zarray_problem.empty()) {
    n.metadata_problem = "0/.zarray: " + s.zarray_problem;
  } else if (!s.has_zattrs) {
    n.metadata_problem = "no .zattrs yet (a run is creating the node, or was interrupted)";
  }
  return s;
}

bool folder_exists(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void remove_file(const fs::path& p, CacheProblem& problem, const std::string& done) {
  if (::unlink(p.c_str()) == 0 || errno == ENOENT) {
    problem.repaired = true;
    problem.repair = done;
  } else {
    problem.repair = fmt::format("could not delete it: {}", std::strerror(errno));
  }
}

// ---- Memo entries: <root>/memo/<key>/, locks <root>/memo/<key>.lock (MemoKeyLock,
// as cellflow::Memo takes them: exclusive while computing, shared while
// loading), writers' temporary folders and trash in <root>/memo/.tmp/.

constexpr const char* kMemoDir = "memo";
constexpr const char* kMemoTempDir = ".tmp";
constexpr const char* kMemoEntryFile = "entry.json";
// Trash of removed entries (ours) and of damaged ones (Memo's discard_entry).
constexpr const char* kMemoRemovedTag = ".removed.";
constexpr const char* kMemoDamagedTag = ".damaged.";

bool is_memo_trash_name(const std::string& name) {
  return name.find(kMemoRemovedTag) != std::string::npos ||
         name.find(kMemoDamagedTag) != std::string::npos;
}

std::vector<std::string> list_memo_keys(const fs::path& memo_root) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(memo_root, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (is_hash_name(name) && folder_exists(it->path())) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// What a memo entry holds, read without verifying its result.
struct MemoScan {
  CachedMemoEntry entry;
  std::optional<Value> record;  // entry.json, when it parsed
  std::string record_problem;   // else why not
};

MemoScan scan_memo_entry(const fs::path& memo_root, const std::string& key) {
  MemoScan s;
  CachedMemoEntry& e = s.entry;
  e.key = key;
  e.path = memo_root / key;
  try {
    const auto text = read_file(e.path / kMemoEntryFile);
    if (!text) throw CorruptionError("missing (the entry was not committed whole)");
    Value v = parse_json(*text, kMemoEntryFile);
    if (!v.is_object()) throw CorruptionError("not a JSON object");
    e.function = string_field(v, "function");
    if (const Value* ver = v.find("version"); ver != nullptr && ver->is_int())
      e.version = ver->as_int();
    e.result_type = string_field(v, "result_type");
    e.created = string_field(v, "created");
    const std::string stored_key = string_field(v, "key");
    if (stored_key != key)
      throw CorruptionError(
          fmt::format("records key \"{}\", not this folder's {}", stored_key, key));
    const Value* result = v.find("result");
    if (result == nullptr || !result->is_object()) throw CorruptionError("no \"result\" object");
    e.result_format = string_field(*result, "format");
    s.record = std::move(v);
  } catch (const Error& err) {
    s.record_problem = err.message();
    e.problem = fmt::format("{}: {}", kMemoEntryFile, s.record_problem);
  }
  e.last_used = fs::file_time_type::min();
  struct stat st {};
  if (::stat(e.path.c_str(), &st) == 0) {
    e.bytes += static_cast<uint64_t>(st.st_blocks) * 512;
    e.last_used = mtime_of(st);
  }
  for (const Entry& f : walk(e.path)) {
    e.bytes += static_cast<uint64_t>(f.st.st_blocks) * 512;
    e.last_used = std::max(e.last_used, mtime_of(f.st));
  }
  return s;
}

// The message of `e` without a leading "file <path>: " naming `file`.
std::string reason_for(const Error& e, const fs::path& file) {
  std::string why = e.message();
  const std::string prefix = file.string() + ": ";
  if (why.starts_with("file " + prefix)) why.erase(0, prefix.size() + 5);
  if (why.starts_with(prefix)) why.erase(0, prefix.size());
  return why;
}

}  // namespace

std::vector<CachedMemoEntry> scan_memo_entries(const fs::path& root) {
  check_root(root);
  const fs::path memo_root = root / kMemoDir;
  std::vector<CachedMemoEntry> out;
  for (const std::string& key : list_memo_keys(memo_root)) {
    MemoScan s = scan_memo_entry(memo_root, key);
    if (!folder_exists(s.entry.path)) continue;  // removed while we looked
    out.push_back(std::move(s.entry));
  }
  return out;
}

namespace {

// verify_cache's part for memo entries and memo/.tmp.
void verify_memo_entries(const fs::path& memo_root, const VerifyOptions& options,
                         tbb::task_arena& arena, VerifyReport& report) {
  const auto now = fs::file_time_type::clock::now();
  // Writers' temporary folders: stale once older than temp_age and no Memo
  // call holds the key's lock (a writer holds it until its folder is renamed
  // into place or removed). Trash is always stale.
  {
    std::error_code ec;
    for (fs::directory_iterator it(memo_root / kMemoTempDir, ec);
         !ec && it != fs::directory_iterator(); it.increment(ec)) {
      const fs::path p = it->path();
      const std::string name = p.filename().string();
      struct stat st {};
      if (::lstat(p.c_str(), &st) != 0) continue;
      const bool trash = is_memo_trash_name(name);
      if (!trash && now - mtime_of(st) <= options.temp_age) continue;
      std::optional<MemoKeyLock> lock;
      if (!trash && name.size() > 32 && name[32] == '.' && is_hash_name(name.substr(0, 32))) {
        lock.emplace(memo_root, name.substr(0, 32), /*create=*/false);
        if (lock->state() == MemoKeyLock::State::kBusy) continue;  // a writer is at work
      }
      report.stale_temps.push_back(p);
      if (!options.repair) continue;
      std::error_code rec;
      fs::remove_all(p, rec);
      if (!rec) ++report.stale_removed;
    }
  }

  struct ChunkTask {
    size_t entry;
    fs::path file;
    size_t chunk_bytes;
    std::string identity;
  };
  std::vector<std::vector<CacheProblem>> found;
  std::vector<ChunkTask> tasks;
  std::vector<std::string> keys;
  for (const std::string& key : list_memo_keys(memo_root)) {
    MemoScan s = scan_memo_entry(memo_root, key);
    if (!folder_exists(s.entry.path)) continue;
    ++report.memo_entries;
    const size_t index = keys.size();
    keys.push_back(key);
    found.emplace_back();
    const fs::path& dir = s.entry.path;
    if (!s.record) {
      found.back().push_back(CacheProblem{dir / kMemoEntryFile, s.record_problem});
      continue;
    }
    if (s.entry.result_format == "cereal-portable-binary") {
      const fs::path file = dir / "result.bin";
      try {
        const auto mapped = detail::read_blob_result(dir);
        report.bytes_checked += static_cast<int64_t>(mapped->bytes().size());
      } catch (const Error& e) {
        if (folder_exists(dir)) found.back().push_back(CacheProblem{file, reason_for(e, file)});
      }
    } else if (s.entry.result_format == "zarr") {
      const fs::path array_dir = dir / "result";
      try {
        const auto array =
            ZarrArray::open(posix_env(dir), "result", std::string(layout::kMemoResultOwner));
        const CellGrid& grid = array->grid();
        const auto chunk =
            static_cast<size_t>(grid.cell_shape().product()) * dtype_size(array->dtype());
        for (int64_t c = 0; c < grid.num_cells(); ++c)
          tasks.push_back(ChunkTask{index, array->cell_path(grid.cell_at(c)), chunk,
                                    layout::cell_identity(array->owner(), grid.cell_at(c))});
      } catch (const Error& e) {
        const std::string why = e.message();
        found.back().push_back(
            CacheProblem{array_dir / ".zarray", why.empty() ? std::string(e.what()) : why});
      }
    } else {
      found.back().push_back(
          CacheProblem{dir / kMemoEntryFile,
                       fmt::format("unknown result format \"{}\"", s.entry.result_format)});
    }
  }

  std::mutex mu;
  std::atomic<int64_t> bytes{0};
  arena.execute([&] {
    tbb::parallel_for(size_t{0}, tasks.size(), [&](size_t t) {
      const ChunkTask& task = tasks[t];
      std::string why;
      try {
        const auto stored = read_file(task.file);
        if (!stored) {
          // Missing, or the whole entry was removed meanwhile (not damage).
          if (!folder_exists(memo_root / keys[task.entry])) return;
          why = "missing (a memo result is stored whole)";
        } else {
          bytes.fetch_add(static_cast<int64_t>(stored->size()), std::memory_order_relaxed);
          std::string out(task.chunk_bytes, '\0');
          ZarrArray::decode_chunk(*stored, out.data(), out.size(), task.file.string(),
                                  task.identity);
          return;
        }
      } catch (const Error& e) {
        why = reason_for(e, task.file);
      }
      std::lock_guard lock(mu);
      found[task.entry].push_back(CacheProblem{task.file, why});
    });
  });
  report.cells_checked += static_cast<int64_t>(tasks.size());
  report.bytes_checked += bytes.load();

  for (size_t i = 0; i < keys.size(); ++i) {
    if (found[i].empty()) continue;
    if (options.repair) {
      std::string repair = "removed the whole memo entry (the next call computes it again)";
      bool removed = false;
      try {
        const MemoRemoval r = remove_memo_entry(memo_root, keys[i]);
        removed = r != MemoRemoval::kInUse;
        if (!removed) repair = "the entry is in use by a running process; repair again later";
      } catch (const Error& e) {
        repair = e.what();
      }
      for (CacheProblem& p : found[i]) {
        p.repaired = removed;
        p.repair = repair;
      }
    }
    for (CacheProblem& p : found[i]) report.damaged.push_back(std::move(p));
  }
}

}  // namespace

bool VerifyReport::clean() const {
  return std::all_of(damaged.begin(), damaged.end(),
                     [](const CacheProblem& p) { return p.repaired; });
}

std::vector<std::string> list_node_hashes(const fs::path& root) {
  std::vector<std::string> out;
  std::error_code ec;
  fs::directory_iterator it(root, ec);
  if (ec) {
    throw IoError(fmt::format("cache {}: cannot list it: {}", root.string(), ec.message()));
  }
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) throw IoError(fmt::format("cache {}: cannot list it: {}", root.string(), ec.message()));
    const std::string name = it->path().filename().string();
    if (is_hash_name(name) && folder_exists(it->path())) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<CachedNode> scan_cache(const fs::path& root) {
  check_root(root);
  std::vector<CachedNode> out;
  for (const std::string& hash : list_node_hashes(root)) {
    NodeScan s = scan_node(root, hash);
    if (!folder_exists(s.node.path)) continue;  // removed while we looked
    out.push_back(std::move(s.node));
  }
  return out;
}

VerifyReport verify_cache(const fs::path& root, const VerifyOptions& options) {
  check_root(root);
  VerifyReport report;
  const auto now = fs::file_time_type::clock::now();
  const auto stale = [&](const struct stat& st) { return now - mtime_of(st) > options.temp_age; };
  const auto note_temp = [&](const Entry& e) {
    if (!stale(e.st)) return;
    report.stale_temps.push_back(e.path);
    if (!options.repair) return;
    std::error_code ec;
    if (S_ISDIR(e.st.st_mode) ? fs::remove_all(e.path, ec) > 0 || !ec : fs::remove(e.path, ec)) {
      ++report.stale_removed;
    }
  };

  // The cache's own format file, and what lies directly in the root.
  {
    const fs::path format_file = root / kFormatFile;
    CacheProblem p{format_file, {}};
    try {
      const auto text = read_file(format_file);
      const Value v = parse_json(text.value_or(""), kFormatFile);
      const Value* f = v.find("format");
      if (f == nullptr || !f->is_int()) throw CorruptionError("no \"format\" number");
      if (f->as_int() != layout::kFormat) {
        throw InvalidArgument(fmt::format("cache {}: format {}, this cellflow reads format {}",
                                          root.string(), f->as_int(), layout::kFormat));
      }
    } catch (const InvalidArgument&) {
      throw;
    } catch (const Error& e) {
      p.reason = e.message();
      if (options.repair) {
        Value v = Value::object();
        v.set("format", layout::kFormat);
        try {
          write_file_atomic(format_file, to_json(v));
          p.repaired = true;
          p.repair = "rewritten";
        } catch (const Error& w) {
          p.repair = w.what();
        }
      }
      report.damaged.push_back(std::move(p));
    }
    std::error_code ec;
    for (fs::directory_iterator it(root, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (!is_temp_name(name) && !is_trash_name(name)) continue;
      Entry e;
      e.path = it->path();
      if (::lstat(e.path.c_str(), &e.st) != 0) continue;
      // A trash folder is always garbage (its removal was interrupted, or is
      // running now: deleting it twice is harmless).
      if (is_trash_name(name)) e.st.st_mtim.tv_sec = 0;
      note_temp(e);
    }
  }

  // Every node's metadata now; cells are read in parallel afterwards.
  struct CellTask {
    size_t node;
    fs::path file;
    bool table;
    size_t chunk_bytes;
    std::string identity;
  };
  std::vector<NodeScan> scans;
  std::vector<CellTask> tasks;
  for (const std::string& hash : list_node_hashes(root)) {
    NodeScan s = scan_node(root, hash);
    if (!folder_exists(s.node.path)) continue;
    const size_t index = scans.size();
    ++report.nodes;
    for (const Entry& e : s.temps) note_temp(e);
    if (!s.has_zattrs) report.unfinished.push_back(s.node.path);
    if (s.grid && s.dtype) {
      const bool table = s.node.kind == CachedNodeKind::kTable;
      const size_t chunk =
          static_cast<size_t>(s.grid->cell_shape().product()) * dtype_size(*s.dtype);
      for (const auto& [file, cell] : s.cells)
        tasks.push_back(
            CellTask{index, file, table, chunk, layout::cell_identity(s.node.hash, cell)});
    }
    scans.push_back(std::move(s));
  }

  std::mutex mu;
  std::vector<CacheProblem> cell_problems;
  std::vector<int64_t> lost(scans.size(), 0);
  std::atomic<int64_t> bytes{0};
  tbb::task_arena arena(options.threads > 0 ? options.threads : tbb::task_arena::automatic);
  arena.execute([&] {
    tbb::parallel_for(size_t{0}, tasks.size(), [&](size_t t) {
      const CellTask& task = tasks[t];
      std::string why;
      try {
        const auto stored = read_file(task.file);
        if (!stored) return;  // removed meanwhile (a repair, a gc): not damage
        bytes.fetch_add(static_cast<int64_t>(stored->size()), std::memory_order_relaxed);
        const std::string what = task.file.string();
        if (task.table) {
          const std::string rows = ZarrArray::decode_chunk_any(*stored, what, task.identity);
          (void)Table::deserialize(rows, what);
        } else {
          std::string out(task.chunk_bytes, '\0');
          ZarrArray::decode_chunk(*stored, out.data(), out.size(), what, task.identity);
        }
        return;
      } catch (const Error& e) {
        why = reason_for(e, task.file);
      }
      CacheProblem p{task.file, why};
      if (options.repair) remove_file(task.file, p, "deleted (the next run recomputes the cell)");
      std::lock_guard lock(mu);
      ++lost[task.node];
      cell_problems.push_back(std::move(p));
    });
  });
  report.cells_checked = static_cast<int64_t>(tasks.size());
  report.bytes_checked = bytes.load();
  for (auto& p : cell_problems) report.damaged.push_back(std::move(p));

  for (size_t i = 0; i < scans.size(); ++i) {
    NodeScan& s = scans[i];
    const fs::path& dir = s.node.path;
    std::vector<CacheProblem> found;
    bool remove_whole = false;
    if (!s.zgroup_problem.empty()) {
      CacheProblem p{dir / ".zgroup", s.zgroup_problem};
      if (options.repair) {
        try {
          write_file_atomic(dir / ".zgroup", kZgroupText);
          p.repaired = true;
          p.repair = "rewritten";
        } catch (const Error& e) {
          p.repair = e.what();
        }
      }
      found.push_back(std::move(p));
    }
    const bool definition_ok = s.has_zattrs && s.zattrs_problem.empty();
    if (s.has_zattrs && !s.zattrs_problem.empty()) {
      found.push_back(CacheProblem{dir / ".zattrs", s.zattrs_problem});
      remove_whole = true;  // the node's definition is lost: nothing to check its cells against
    }
    if (!s.zarray_problem.empty()) {
      CacheProblem p{dir / "0" / ".zarray", s.zarray_problem};
      if (options.repair && definition_ok && s.grid && s.dtype) {
        try {
          write_file_atomic(dir / "0" / ".zarray", zarray_json(*s.dtype, *s.grid));
          p.repaired = true;
          p.repair = "rewritten from the node's definition";
        } catch (const Error& e) {
          p.repair = e.what();
        }
      } else if (!definition_ok) {
        remove_whole = true;
      }
      found.push_back(std::move(p));
    }
    for (const fs::path& f : s.foreign) {
      CacheProblem p{f, "not a cell of the node's grid (a foreign file)"};
      if (options.repair) remove_file(f, p, "deleted");
      found.push_back(std::move(p));
    }
    const int64_t present = s.node.cells_present - lost[i];
    if (s.node.complete_marker && s.node.cells_total > 0 && present < s.node.cells_total) {
      CacheProblem p{dir / kCompleteMarker,
                     fmt::format("marks the node complete, but {} of its {} cells are missing{}",
                                 s.node.cells_total - present, s.node.cells_total,
                                 lost[i] > 0 ? " or damaged" : "")};
      if (options.repair) remove_file(dir / kCompleteMarker, p, "deleted");
      found.push_back(std::move(p));
    }
    if (remove_whole && options.repair) {
      bool removed = false;
      std::string why = "the node is in use by a running process; repair again later";
      try {
        removed = remove_node_folder(root, s.node.hash);
      } catch (const Error& e) {
        why = e.what();
      }
      if (!removed && !folder_exists(dir)) removed = true;
      for (CacheProblem& p : found) {
        if (removed) {
          p.repaired = true;
          p.repair = "removed the whole node (the next run recomputes it)";
        } else if (!p.repaired) {
          p.repair = why;
        }
      }
    }
    for (CacheProblem& p : found) report.damaged.push_back(std::move(p));
  }

  verify_memo_entries(root / kMemoDir, options, arena, report);
  std::sort(report.damaged.begin(), report.damaged.end(),
            [](const CacheProblem& a, const CacheProblem& b) { return a.file < b.file; });
  std::sort(report.stale_temps.begin(), report.stale_temps.end());
  return report;
}

GcReport gc_cache(const fs::path& root, const GcOptions& options) {
  const int criteria = static_cast<int>(options.older_than.has_value()) +
                       static_cast<int>(options.max_bytes.has_value()) +
                       static_cast<int>(options.keep.has_value());
  if (criteria != 1)
    throw InvalidArgument("gc: give exactly one of: an age, a size budget, or the nodes to keep");
  check_root(root);
  const fs::path memo_root = root / kMemoDir;
  GcReport report;
  if (!options.dry_run) {
    std::error_code ec;
    for (fs::directory_iterator it(root, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      if (!is_trash_name(it->path().filename().string())) continue;
      std::error_code rec;
      fs::remove_all(it->path(), rec);
      if (!rec) ++report.trash_removed;
    }
    for (fs::directory_iterator it(memo_root / kMemoTempDir, ec);
         !ec && it != fs::directory_iterator(); it.increment(ec)) {
      if (!is_memo_trash_name(it->path().filename().string())) continue;
      std::error_code rec;
      fs::remove_all(it->path(), rec);
      if (!rec) ++report.trash_removed;
    }
  }

  std::vector<CachedNode> nodes = scan_cache(root);
  // --keep-graph names nodes only: memo entries are neither kept nor removed by it.
  std::vector<CachedMemoEntry> memos;
  if (!options.keep) memos = scan_memo_entries(root);
  for (const CachedNode& n : nodes) report.bytes_before += n.bytes;
  for (const CachedMemoEntry& m : memos) report.bytes_before += m.bytes;
  // Nodes and memo entries in one order, least recently used first (also the
  // order of the age criterion's report).
  struct Candidate {
    fs::file_time_type last_used;
    bool memo;
    size_t index;
  };
  std::vector<Candidate> order;
  for (size_t i = 0; i < nodes.size(); ++i) order.push_back({nodes[i].last_used, false, i});
  for (size_t i = 0; i < memos.size(); ++i) order.push_back({memos[i].last_used, true, i});
  std::stable_sort(order.begin(), order.end(), [](const Candidate& a, const Candidate& b) {
    return a.last_used < b.last_used;
  });
  const auto now = options.now.value_or(fs::file_time_type::clock::now());
  uint64_t total = report.bytes_before;
  for (const Candidate& c : order) {
    bool chosen = false;
    if (options.older_than) chosen = now - c.last_used > *options.older_than;
    if (options.keep) chosen = !c.memo && options.keep->count(nodes[c.index].hash) == 0;
    if (options.max_bytes) chosen = total > *options.max_bytes;
    if (!chosen) continue;
    if (c.memo) {
      CachedMemoEntry& m = memos[c.index];
      MemoRemoval r = MemoRemoval::kRemoved;
      if (options.dry_run) {
        if (memo_entry_in_use(memo_root, m.key)) r = MemoRemoval::kInUse;
      } else {
        r = remove_memo_entry(memo_root, m.key);
      }
      if (r == MemoRemoval::kAbsent) continue;  // someone else removed it
      if (r == MemoRemoval::kRemoved) {
        total -= std::min(total, m.bytes);
        report.memo_removed.push_back(std::move(m));
      } else {
        report.memo_in_use.push_back(std::move(m));
      }
      continue;
    }
    CachedNode& n = nodes[c.index];
    bool removed = false;
    if (options.dry_run) {
      removed = !node_in_use(root, n.hash);
    } else {
      removed = remove_node_folder(root, n.hash);
      if (!removed && !folder_exists(n.path)) continue;  // someone else removed it
    }
    if (removed) {
      total -= std::min(total, n.bytes);
      report.removed.push_back(std::move(n));
    } else {
      report.in_use.push_back(std::move(n));
    }
  }
  report.bytes_after = total;
  return report;
}

}  // namespace cellflow

// Cache maintenance on the store's Env: every path below is an Env path
// (relative to the cache root, names from cellflow/store/layout.hpp), so
// nothing is followed through a link and nothing but a regular file or a
// folder is ever opened. What is not where the layout puts it (a link, a FIFO,
// a socket, a folder where a file belongs, a foreign file) is reported, and
// removed by repair (a link itself, never its target).
#include "cellflow/cache/cache_scan.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/dtype.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/memo_key_lock.hpp"
#include "cellflow/cache/memoize.hpp"
#include "cellflow/cache/node_use_lock.hpp"
#include "cellflow/cache/table.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/store/cache_files.hpp"
#include "cellflow/store/layout.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

// The cache at `root`, which must exist and hold a format file.
std::shared_ptr<Env> open_cache(const fs::path& root) {
  auto env = open_existing_cache(root);
  if (!env) throw InvalidArgument(fmt::format("cache {}: no such directory", root.string()));
  if (!is_cache(*env))
    throw InvalidArgument(
        fmt::format("cache {}: not a cellflow cache (no {})", root.string(), layout::kFormatFile));
  return env;
}

// What is wrong with an entry, and what repair does about it.
enum class Fix {
  kNone,         // reported only (repair of the whole node / entry handles it)
  kRemove,       // remove the entry (a link itself, never its target)
  kRewrite,      // remove whatever is there, write `text`
  kRemoveWhole,  // the node's (or memo entry's) definition is lost: remove it whole
};

struct Finding {
  std::string path;  // Env path
  std::string reason;
  Fix fix = Fix::kRemove;
  std::string text;  // for kRewrite
};

std::string wrong_kind(EntryKind found, std::string_view expected) {
  return fmt::format("{} is where the cache expects {} (never followed or read)",
                     entry_kind_name(found), expected);
}

std::string foreign(EntryKind kind) {
  return fmt::format("{} that is not part of the cache's layout", entry_kind_name(kind));
}

// The message of `e` without a leading "file <path>: " naming `file`.
std::string reason_for(const Error& e, const std::string& file) {
  std::string why = e.message();
  const std::string prefix = file + ": ";
  if (why.starts_with("file " + prefix)) why.erase(0, prefix.size() + 5);
  if (why.starts_with(prefix)) why.erase(0, prefix.size());
  return why;
}

// Bytes allocated and newest mtime of `path` and everything below it; links
// and other entries count as themselves, folders are only entered when they
// are folders.
void measure(Env& env, const std::string& path, uint64_t& bytes, fs::file_time_type& newest) {
  const EntryInfo info = env.stat(path);
  if (info.kind == EntryKind::kMissing) return;
  bytes += info.allocated;
  newest = std::max(newest, info.mtime);
  if (info.kind != EntryKind::kFolder) return;
  std::vector<DirEntry> entries;
  try {
    entries = env.list(path);
  } catch (const Error&) {
    return;  // replaced meanwhile
  }
  for (const DirEntry& e : entries) measure(env, join_path(path, e.name), bytes, newest);
}

// Every link, FIFO, socket or device below folder `path` (artifacts, cache
// trees: any file or folder is theirs to hold, nothing else).
void find_odd_entries(Env& env, const std::string& path, std::vector<Finding>& out) {
  std::vector<DirEntry> entries;
  try {
    entries = env.list(path);
  } catch (const Error&) {
    return;
  }
  for (const DirEntry& e : entries) {
    const std::string p = join_path(path, e.name);
    if (e.kind == EntryKind::kFolder) {
      find_odd_entries(env, p, out);
    } else if (e.kind != EntryKind::kFile) {
      out.push_back(Finding{p, wrong_kind(e.kind, "a file or a folder")});
    }
  }
}

Shape shape_from(const Value* v) {
  if (v == nullptr || !v->is_array()) throw CorruptionError("missing or malformed shape");
  const auto& a = v->as_array();
  if (a.empty() || a.size() > static_cast<size_t>(kMaxRank))
    throw CorruptionError("shape of unsupported rank");
  Shape s(static_cast<int>(a.size()));
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].is_int()) throw CorruptionError("malformed shape");
    s[static_cast<int>(i)] = a[i].as_int();
  }
  return s;
}

std::string string_field(const Value& obj, const char* key) {
  const Value* v = obj.find(key);
  return v != nullptr && v->is_string() ? v->as_string() : std::string();
}

struct TempEntry {
  std::string path;
  EntryInfo info;
};

// The cells below an array or table folder `folder`: "<folder>/i/j/k" files,
// folders on the way. Everything else is a finding, except the names in
// `reserved` at the top (the caller checks them) and temporary files.
struct CellWalk {
  Env& env;
  const CellGrid& grid;
  std::vector<std::pair<std::string, CellIndex>>& cells;
  std::vector<Finding>& findings;
  std::vector<TempEntry>& temps;

  void walk(const std::string& path, int level, CellIndex& index,
            const std::vector<std::string_view>& reserved) {
    std::vector<DirEntry> entries;
    try {
      entries = env.list(path);
    } catch (const Error&) {
      return;  // replaced meanwhile; the next verify sees it
    }
    const bool last = level == grid.rank() - 1;
    for (const DirEntry& e : entries) {
      const std::string p = join_path(path, e.name);
      if (level == 0 && std::find(reserved.begin(), reserved.end(), e.name) != reserved.end())
        continue;
      if (layout::is_temp_name(e.name)) {
        if (e.kind == EntryKind::kFile) {
          temps.push_back(TempEntry{p, env.stat(p)});
        } else {
          findings.push_back(Finding{p, wrong_kind(e.kind, "a temporary file")});
        }
        continue;
      }
      const auto i = layout::parse_cell_index(e.name);
      if (!i || *i >= grid.grid_shape()[level]) {
        findings.push_back(Finding{
            p, fmt::format("{} that is not a cell of the node's grid", entry_kind_name(e.kind))});
        continue;
      }
      index[level] = *i;
      if (last) {
        if (e.kind == EntryKind::kFile) {
          cells.emplace_back(p, index);
        } else {
          findings.push_back(Finding{p, wrong_kind(e.kind, "a cell file")});
        }
      } else if (e.kind == EntryKind::kFolder) {
        walk(p, level + 1, index, reserved);
      } else {
        findings.push_back(Finding{p, wrong_kind(e.kind, "a folder of cells")});
      }
    }
  }
};

// What a node folder holds, read without verifying cells.
struct NodeScan {
  CachedNode node;
  bool has_zattrs = false;
  std::string zattrs_problem;  // .zattrs exists but is damaged
  std::string zarray_problem;  // .zarray is missing, damaged or disagrees with .zattrs
  std::optional<DType> dtype;
  std::optional<CellGrid> grid;  // the grid the cells are checked against
  std::string cells_folder;      // "<hash>/0" or "<hash>/table"
  std::vector<std::pair<std::string, CellIndex>> cells;
  // Sharded caches: the array's shards and where each lies in the shard grid.
  int64_t shard_cells = 0;
  std::vector<std::pair<std::string, CellIndex>> shards;
  std::shared_ptr<ZarrArray> array;  // opened with its sharding, when it could be
  bool v3 = false;                   // packed: zarr.json stands for .zarray
  bool repacking = false;            // shards without metadata (a repaired node)
  bool shards_unknown = false;       // packed, in a cache whose shard size is unknown
  std::vector<Finding> findings;     // everything but .zattrs, .zarray and cells
  std::vector<TempEntry> temps;      // temporary files anywhere in the folder
};

void read_definition(Env& env, NodeScan& s, const VerifyOptions* options, bool& multiscales,
                     Shape& def_shape, Shape& def_cells, std::optional<DType>& def_dtype) {
  CachedNode& n = s.node;
  const std::string file = layout::zattrs(n.hash);
  std::optional<std::string> text;
  try {
    text = env.read(file);
  } catch (const Error& e) {
    s.has_zattrs = true;
    s.zattrs_problem = reason_for(e, env.describe(file));
    return;
  }
  if (!text) return;
  s.has_zattrs = true;
  try {
    const Value attrs = parse_json(*text, std::string(layout::kZattrs));
    multiscales = attrs.find("multiscales") != nullptr;
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
    if (options != nullptr && options->definition_hash) {
      const std::optional<std::string> computed = options->definition_hash(*def);
      if (!computed)
        throw CorruptionError("its definition cannot be hashed (a field is missing or malformed)");
      if (*computed != n.hash)
        throw CorruptionError(fmt::format(
            "its definition hashes to {}, not to this folder's name (the definition was changed)",
            *computed));
    }
  } catch (const Error& e) {
    s.zattrs_problem = e.message();
    def_shape = Shape();
    def_cells = Shape();
    def_dtype.reset();
  }
}

// Reads a node folder: its metadata, the positions of its cells, and every
// entry that does not belong. `options` (verify only) adds the definition's hash check.
NodeScan scan_node(const std::shared_ptr<Env>& env_ptr, const std::string& hash,
                   const VerifyOptions* options) {
  Env& env = *env_ptr;
  NodeScan s;
  CachedNode& n = s.node;
  n.hash = hash;
  n.path = env.describe(layout::node(hash));

  std::vector<DirEntry> entries;
  try {
    entries = env.list(layout::node(hash));
  } catch (const Error&) {
    return s;  // replaced meanwhile by something else than a folder
  }
  std::map<std::string, EntryKind> kinds;
  for (const DirEntry& e : entries) kinds[e.name] = e.kind;
  const auto kind_of = [&](std::string_view name) {
    const auto it = kinds.find(std::string(name));
    return it == kinds.end() ? EntryKind::kMissing : it->second;
  };

  bool multiscales = false;
  Shape def_shape;
  Shape def_cells;
  std::optional<DType> def_dtype;
  read_definition(env, s, options, multiscales, def_shape, def_cells, def_dtype);
  const bool definition_ok = s.has_zattrs && s.zattrs_problem.empty();

  // .zgroup
  if (const EntryKind k = kind_of(layout::kZgroup); k != EntryKind::kMissing || definition_ok) {
    const std::string file = layout::zgroup(hash);
    std::string why;
    if (k == EntryKind::kMissing) {
      why = "missing";
    } else if (k != EntryKind::kFile) {
      why = wrong_kind(k, "a file");
    } else {
      try {
        const auto text = env.read(file);
        if (text) {
          const Value g = parse_json(*text, std::string(layout::kZgroup));
          const Value* f = g.find("zarr_format");
          if (f == nullptr || !f->is_int() || f->as_int() != 2)
            throw CorruptionError("not a Zarr v2 group (zarr_format is not 2)");
        }
      } catch (const Error& e) {
        why = reason_for(e, env.describe(file));
      }
    }
    if (!why.empty())
      s.findings.push_back(Finding{file, why, Fix::kRewrite, std::string(layout::kZgroupText)});
  }

  const EntryKind array_kind = kind_of(layout::kArray);
  const EntryKind table_kind = kind_of(layout::kTable);
  const bool image = array_kind != EntryKind::kMissing || (definition_ok && multiscales);
  const bool table = !image && (table_kind != EntryKind::kMissing || definition_ok);
  n.kind =
      image ? CachedNodeKind::kImage : (table ? CachedNodeKind::kTable : CachedNodeKind::kUnknown);

  // The entries of the node folder itself.
  for (const DirEntry& e : entries) {
    const std::string p = join_path(layout::node(hash), e.name);
    const std::string_view name = e.name;
    if (name == layout::kZgroup) continue;  // above
    if (name == layout::kZarrJson && e.kind == EntryKind::kFile && image)
      continue;  // a packed node's NGFF 0.5 group (CacheDirectory::write_v3_group)
    if (name == layout::kZattrs) {
      if (e.kind != EntryKind::kFile)
        s.findings.push_back(Finding{p, wrong_kind(e.kind, "a file"), Fix::kNone});
      continue;  // read_definition reports its content
    }
    if (name == layout::kCompleteMarker) {
      if (e.kind == EntryKind::kFile) {
        n.complete_marker = true;
      } else {
        s.findings.push_back(Finding{p, wrong_kind(e.kind, "the completion marker (a file)")});
      }
      continue;
    }
    if (name == layout::kUseFile || name == layout::kMetaLock) {
      if (e.kind != EntryKind::kFile)
        s.findings.push_back(Finding{p, wrong_kind(e.kind, "a lock file")});
      continue;
    }
    if (name == layout::kArray || name == layout::kTable) {
      if (e.kind != EntryKind::kFolder) {
        s.findings.push_back(Finding{p, wrong_kind(e.kind, "the folder of the node's cells")});
      } else if ((name == layout::kArray) != image) {
        s.findings.push_back(Finding{p, "a folder of cells of the other kind of node"});
      }
      continue;
    }
    if (name == layout::kArtifacts) {
      if (e.kind == EntryKind::kFolder) {
        find_odd_entries(env, p, s.findings);
      } else {
        s.findings.push_back(Finding{p, wrong_kind(e.kind, "the artifacts folder")});
      }
      continue;
    }
    if (layout::is_temp_name(name)) {
      if (e.kind == EntryKind::kFile) {
        s.temps.push_back(TempEntry{p, env.stat(p)});
      } else {
        s.findings.push_back(Finding{p, wrong_kind(e.kind, "a temporary file")});
      }
      continue;
    }
    s.findings.push_back(Finding{p, foreign(e.kind)});
  }

  // .zarray of an image node (zarr.json once packed), checked against the definition.
  s.shard_cells = cache_shard_cells(env);
  if (s.shard_cells == 0 && image && array_kind == EntryKind::kFolder &&
      (env.stat(join_path(layout::array(hash), layout::kZarrJson)).kind != EntryKind::kMissing ||
       env.stat(join_path(layout::array(hash), layout::kShardFolder)).kind !=
           EntryKind::kMissing)) {
    // Packed, but the format file does not say how (it is damaged): nothing
    // here can be judged, and nothing may be repaired, until it is restored.
    s.shards_unknown = true;
    n.metadata_problem = fmt::format(
        "{}: packed into shards, but the cache's format file gives no shard size", layout::kArray);
    n.last_used = fs::file_time_type::min();
    measure(env, layout::node(hash), n.bytes, n.last_used);
    return s;
  }
  if (image && array_kind == EntryKind::kFolder) {
    s.cells_folder = layout::array(hash);
    std::string file = layout::zarray(hash);
    EntryKind k = env.stat(file).kind;
    bool repacking = false;
    if (k == EntryKind::kMissing && s.shard_cells > 0) {
      const std::string v3 = join_path(s.cells_folder, layout::kZarrJson);
      const EntryKind k3 = env.stat(v3).kind;
      if (k3 != EntryKind::kMissing) {
        file = v3;
        k = k3;
        s.v3 = true;
      } else {
        // Shards without metadata: a repaired node waiting to be packed again.
        repacking =
            env.stat(join_path(s.cells_folder, layout::kShardFolder)).kind == EntryKind::kFolder;
        s.repacking = repacking;
      }
    }
    if (k == EntryKind::kMissing) {
      if (s.has_zattrs && !repacking) s.zarray_problem = "missing";
    } else if (k != EntryKind::kFile) {
      s.zarray_problem = wrong_kind(k, "a file");
    } else {
      try {
        const auto array = ZarrArray::open(env_ptr, s.cells_folder, hash, s.shard_cells);
        s.array = array;
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
        s.zarray_problem = reason_for(e, env.describe(file));
        if (s.zarray_problem.empty()) s.zarray_problem = e.what();
      }
    }
  } else if (table && table_kind == EntryKind::kFolder) {
    s.cells_folder = layout::table(hash);
  }
  if (!s.grid && def_dtype) {
    s.dtype = def_dtype;
    s.grid = CellGrid(def_shape, def_cells);
  }
  if (!s.array && s.repacking && s.grid && s.dtype && s.zarray_problem.empty()) {
    // Shards without metadata (being repacked): their geometry is the grid's.
    s.array = ZarrArray::create(env_ptr, s.cells_folder, hash, *s.dtype, *s.grid,
                                Durability::kProcess, s.shard_cells);
  }
  if (s.grid) {
    n.shape = s.grid->shape();
    n.cell_shape = s.grid->cell_shape();
    n.cells_total = s.grid->num_cells();
    if (n.dtype.empty() && s.dtype) n.dtype = std::string(dtype_name(*s.dtype));
  }

  // The cells.
  const bool sharded = image && s.shard_cells > 0;
  if (!s.cells_folder.empty()) {
    if (s.grid) {
      CellIndex index(s.grid->rank());
      CellWalk walk{env, *s.grid, s.cells, s.findings, s.temps};
      if (sharded) {
        walk.walk(s.cells_folder, 0, index,
                  {layout::kZarray, layout::kCellLock, layout::kZarrJson, layout::kShardFolder,
                   layout::kPackLock});
      } else {
        walk.walk(s.cells_folder, 0, index, {layout::kZarray, layout::kCellLock});
      }
    }
    if (sharded && s.array && s.array->shards()) {
      // The shards: "c/i/j/k" over the grid of shards.
      const std::string folder = join_path(s.cells_folder, layout::kShardFolder);
      const EntryKind k = env.stat(folder).kind;
      if (k == EntryKind::kFolder) {
        const Dims& sg = s.array->shards()->shard_grid();
        const CellGrid shard_grid(sg, Dims(sg.rank(), 1));
        CellIndex index(sg.rank());
        CellWalk walk{env, shard_grid, s.shards, s.findings, s.temps};
        walk.walk(folder, 0, index, {});
      } else if (k != EntryKind::kMissing) {
        s.findings.push_back(Finding{folder, wrong_kind(k, "the folder of the node's shards")});
      }
    }
    if (sharded) {
      for (const std::string_view name : {layout::kZarrJson, layout::kPackLock}) {
        const std::string p = join_path(s.cells_folder, name);
        const EntryKind k = env.stat(p).kind;
        if (k != EntryKind::kMissing && k != EntryKind::kFile &&
            !(name == layout::kZarrJson && s.v3))  // zarr.json: zarray_problem
          s.findings.push_back(Finding{p, wrong_kind(k, "a file")});
      }
    }
    for (const std::string_view name : {layout::kZarray, layout::kCellLock}) {
      const std::string p = join_path(s.cells_folder, name);
      const EntryKind k = env.stat(p).kind;
      if (k != EntryKind::kMissing && k != EntryKind::kFile &&
          !(name == layout::kZarray && image))  // .zarray: zarray_problem
        s.findings.push_back(Finding{p, wrong_kind(k, "a file")});
      if (name == layout::kZarray && !image && k != EntryKind::kMissing)
        s.findings.push_back(Finding{p, foreign(k)});
    }
  }

  n.cells_present = static_cast<int64_t>(s.cells.size());
  if (!s.shards.empty() && s.grid) {
    // Cells in shards, from the shard indexes (each cell counted once, also
    // when its single file is still beside its shard).
    const ShardGeometry& g = *s.array->shards();
    std::vector<bool> present(static_cast<size_t>(s.grid->num_cells()), false);
    for (const auto& [file, cell] : s.cells)
      present[static_cast<size_t>(s.grid->linear(cell))] = true;
    for (const auto& [file, shard] : s.shards) {
      std::optional<std::vector<ShardEntry>> index;
      try {
        index = s.array->read_shard_index(shard);
      } catch (const Error&) {
        continue;  // damaged: verify reports it
      }
      if (!index) continue;
      CellIndex cell;
      for (int64_t slot = 0; slot < g.slots(); ++slot) {
        if (!(*index)[static_cast<size_t>(slot)].present() || !g.cell_of(shard, slot, cell))
          continue;
        present[static_cast<size_t>(s.grid->linear(cell))] = true;
      }
    }
    n.cells_present = std::count(present.begin(), present.end(), true);
  }
  n.last_used = fs::file_time_type::min();
  measure(env, layout::node(hash), n.bytes, n.last_used);
  if (s.has_zattrs && !s.zattrs_problem.empty()) {
    n.metadata_problem = std::string(layout::kZattrs) + ": " + s.zattrs_problem;
  } else if (!s.zarray_problem.empty()) {
    n.metadata_problem =
        fmt::format("{}/{}: {}", layout::kArray, layout::kZarray, s.zarray_problem);
  } else if (!s.has_zattrs) {
    n.metadata_problem = "no .zattrs yet (a run is creating the node, or was interrupted)";
  }
  return s;
}

// The node folders of the cache, by hash (folders only: a link or anything
// else at a node's name is not a node).
std::vector<std::string> node_hashes(Env& env) {
  std::vector<std::string> out;
  for (const DirEntry& e : env.list("")) {
    if (e.kind == EntryKind::kFolder && layout::is_node_name(e.name)) out.push_back(e.name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Removes node `hash` whole unless it is in use. A use file that is not a
// file is removed first (the lock must never open it).
bool remove_node(Env& env, const std::string& hash) {
  if (env.stat(layout::node(hash)).kind != EntryKind::kFolder)
    return env.remove(layout::node(hash));
  const EntryKind use = env.stat(layout::use_file(hash)).kind;
  if (use != EntryKind::kMissing && use != EntryKind::kFile) env.remove(layout::use_file(hash));
  return remove_node_folder(env, hash);
}

bool node_busy(Env& env, const std::string& hash) {
  const EntryKind use = env.stat(layout::use_file(hash)).kind;
  return use == EntryKind::kFile && node_in_use(env, hash);
}

// ---- Memo entries: memo/<key>/, locks memo/<key>.lock (flock, as
// cellflow::Memo takes them: exclusive while computing, shared while
// loading), writers' temporary folders and trash in memo/.tmp/.

std::vector<std::string> list_memo_keys(Env& env) {
  std::vector<std::string> out;
  if (env.stat(layout::kMemo).kind != EntryKind::kFolder) return out;
  for (const DirEntry& e : env.list(layout::kMemo)) {
    if (e.kind == EntryKind::kFolder && layout::is_node_name(e.name)) out.push_back(e.name);
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

MemoScan scan_memo_entry(Env& env, const std::string& key) {
  MemoScan s;
  CachedMemoEntry& e = s.entry;
  e.key = key;
  e.path = env.describe(layout::memo_entry(key));
  const std::string file = layout::memo_entry_file(key);
  try {
    std::optional<Value> v;
    try {
      v = read_memo_entry(env, key);
    } catch (const Error& err) {
      throw CorruptionError(reason_for(err, env.describe(file)));
    }
    if (!v) throw CorruptionError("missing (the entry was not committed whole)");
    if (!v->is_object()) throw CorruptionError("not a JSON object");
    e.function = string_field(*v, "function");
    if (const Value* ver = v->find("version"); ver != nullptr && ver->is_int())
      e.version = ver->as_int();
    e.result_type = string_field(*v, "result_type");
    e.created = string_field(*v, "created");
    const std::string stored_key = string_field(*v, "key");
    if (stored_key != key)
      throw CorruptionError(
          fmt::format("records key \"{}\", not this folder's {}", stored_key, key));
    const Value* result = v->find("result");
    if (result == nullptr || !result->is_object()) throw CorruptionError("no \"result\" object");
    e.result_format = string_field(*result, "format");
    s.record = std::move(v);
  } catch (const Error& err) {
    s.record_problem = err.message();
    e.problem = fmt::format("{}: {}", layout::kMemoEntryFile, s.record_problem);
  }
  e.last_used = fs::file_time_type::min();
  measure(env, layout::memo_entry(key), e.bytes, e.last_used);
  return s;
}

std::string hex128(const XXH128_hash_t& h) {
  return fmt::format("{:016x}{:016x}", h.high64, h.low64);
}

// Applies the repair of a finding; returns what it did.
void repair_finding(Env& env, const Finding& f, CacheProblem& p) {
  try {
    switch (f.fix) {
      case Fix::kNone:
      case Fix::kRemoveWhole:
        return;
      case Fix::kRemove:
        env.remove(f.path);
        p.repair = "removed (a link is removed itself, never what it points to)";
        break;
      case Fix::kRewrite:
        if (env.stat(f.path).kind != EntryKind::kFile) env.remove(f.path);
        env.write_atomic(f.path, f.text, Durability::kProcess);
        p.repair = "rewritten";
        break;
    }
    p.repaired = true;
  } catch (const Error& e) {
    p.repair = e.what();
  }
}

// verify_cache's part for memo/.
void verify_memo(const std::shared_ptr<Env>& env_ptr, const VerifyOptions& options,
                 tbb::task_arena& arena, VerifyReport& report) {
  Env& env = *env_ptr;
  const auto now = fs::file_time_type::clock::now();
  const EntryKind memo_kind = env.stat(layout::kMemo).kind;
  if (memo_kind == EntryKind::kMissing) return;
  if (memo_kind != EntryKind::kFolder) {
    CacheProblem p{env.describe(layout::kMemo), wrong_kind(memo_kind, "the memo folder")};
    if (options.repair) repair_finding(env, Finding{std::string(layout::kMemo), {}}, p);
    report.damaged.push_back(std::move(p));
    return;
  }

  // memo/ itself: entries, their locks, memo/.tmp; nothing else.
  std::vector<std::string> keys;
  for (const DirEntry& e : env.list(layout::kMemo)) {
    const std::string p = join_path(layout::kMemo, e.name);
    std::string why;
    if (layout::is_node_name(e.name)) {
      if (e.kind == EntryKind::kFolder) {
        keys.push_back(e.name);
        continue;
      }
      why = wrong_kind(e.kind, "a memo entry (a folder)");
    } else if (e.name.size() == 32 + layout::kMemoLockSuffix.size() &&
               e.name.ends_with(layout::kMemoLockSuffix) &&
               layout::is_node_name(std::string_view(e.name).substr(0, 32))) {
      if (e.kind == EntryKind::kFile) continue;
      why = wrong_kind(e.kind, "a lock file");
    } else if (e.name == layout::kMemoTemp) {
      if (e.kind == EntryKind::kFolder) continue;
      why = wrong_kind(e.kind, "the folder of memo writers' temporary folders");
    } else {
      why = foreign(e.kind);
    }
    CacheProblem prob{env.describe(p), why};
    if (options.repair) repair_finding(env, Finding{p, why}, prob);
    report.damaged.push_back(std::move(prob));
  }
  std::sort(keys.begin(), keys.end());

  // Writers' temporary folders: stale once older than temp_age and no Memo
  // call holds the key's lock (a writer holds it until its folder is renamed
  // into place or removed). Trash is always stale.
  if (env.stat(layout::memo_temp()).kind == EntryKind::kFolder) {
    for (const DirEntry& e : env.list(layout::memo_temp())) {
      const std::string p = join_path(layout::memo_temp(), e.name);
      const EntryInfo info = env.stat(p);
      const bool trash = layout::is_memo_trash_name(e.name);
      if (!trash && now - info.mtime <= options.temp_age) continue;
      std::optional<MemoKeyLock> lock;
      if (!trash && e.name.size() > 32 && e.name[32] == '.' &&
          layout::is_node_name(std::string_view(e.name).substr(0, 32))) {
        lock.emplace(env, e.name.substr(0, 32), /*create=*/false);
        if (lock->state() == MemoKeyLock::State::kBusy) continue;  // a writer is at work
      }
      report.stale_temps.push_back(env.describe(p));
      if (!options.repair) continue;
      try {
        if (env.remove(p)) ++report.stale_removed;
      } catch (const Error&) {
      }
    }
  }

  struct ChunkTask {
    size_t entry;
    std::string file;
    size_t chunk_bytes;
    std::string identity;
  };
  std::vector<std::vector<CacheProblem>> found;
  std::vector<ChunkTask> tasks;
  std::vector<std::string> checked;
  for (const std::string& key : keys) {
    const std::string dir = layout::memo_entry(key);
    MemoScan s = scan_memo_entry(env, key);
    if (env.stat(dir).kind != EntryKind::kFolder) continue;
    ++report.memo_entries;
    const size_t index = checked.size();
    checked.push_back(key);
    found.emplace_back();
    std::vector<CacheProblem>& problems = found.back();
    const auto add = [&](const std::string& path, std::string why) {
      problems.push_back(CacheProblem{env.describe(path), std::move(why)});
    };
    if (!s.record) add(layout::memo_entry_file(key), s.record_problem);
    const std::string blob = join_path(dir, layout::kMemoBlob);
    const std::string image = join_path(dir, layout::kMemoImage);
    const bool want_blob = s.record && s.entry.result_format == "cereal-portable-binary";
    const bool want_image = s.record && s.entry.result_format == "zarr";
    if (s.record && !want_blob && !want_image)
      add(layout::memo_entry_file(key),
          fmt::format("unknown result format \"{}\"", s.entry.result_format));
    // Everything in the entry's folder.
    for (const DirEntry& e : env.list(dir)) {
      const std::string p = join_path(dir, e.name);
      if (e.name == layout::kMemoEntryFile) continue;  // read above (a wrong kind fails the read)
      if (e.name == layout::kArtifacts && e.kind == EntryKind::kFolder) {
        std::vector<Finding> odd;
        find_odd_entries(env, p, odd);
        for (const Finding& f : odd) add(f.path, f.reason);
        continue;
      }
      if (e.name == layout::kMemoBlob && want_blob) {
        if (e.kind != EntryKind::kFile) add(p, wrong_kind(e.kind, "the result file"));
        continue;
      }
      if (e.name == layout::kMemoImage && want_image) {
        if (e.kind != EntryKind::kFolder) add(p, wrong_kind(e.kind, "the result's folder"));
        continue;
      }
      add(p, foreign(e.kind));
    }
    if (!s.record) continue;
    if (want_blob && env.stat(blob).kind == EntryKind::kFile) {
      try {
        const auto bytes = env.read(blob);
        if (!bytes) throw CorruptionError("missing");
        report.bytes_checked += static_cast<int64_t>(bytes->size());
        const Value* result = s.record->find("result");
        const Value* want = result->find("xxh3");
        if (want == nullptr || !want->is_string())
          throw CorruptionError(
              fmt::format("{} records no result checksum", layout::kMemoEntryFile));
        if (hex128(XXH3_128bits(bytes->data(), bytes->size())) != want->as_string())
          throw CorruptionError("checksum mismatch (damaged or truncated)");
      } catch (const Error& e) {
        add(blob, reason_for(e, env.describe(blob)));
      }
    } else if (want_blob && env.stat(blob).kind == EntryKind::kMissing) {
      add(blob, "missing");
    } else if (want_image && env.stat(image).kind == EntryKind::kFolder) {
      const std::string zarray = join_path(image, layout::kZarray);
      try {
        const auto array = ZarrArray::open(env_ptr, image, std::string(layout::kMemoResultOwner));
        const CellGrid& grid = array->grid();
        const auto chunk =
            static_cast<size_t>(grid.cell_shape().product()) * dtype_size(array->dtype());
        std::vector<std::pair<std::string, CellIndex>> cells;
        std::vector<Finding> odd;
        std::vector<TempEntry> temps;
        CellIndex at(grid.rank());
        CellWalk walk{env, grid, cells, odd, temps};
        walk.walk(image, 0, at, {layout::kZarray, layout::kCellLock});
        for (const Finding& f : odd) add(f.path, f.reason);
        for (const TempEntry& t : temps) add(t.path, "a temporary file in a committed result");
        std::set<std::string> present;
        for (const auto& [file, cell] : cells) present.insert(file);
        for (int64_t c = 0; c < grid.num_cells(); ++c) {
          const CellIndex cell = grid.cell_at(c);
          const std::string file = layout::cell(image, cell);
          if (!present.count(file)) {
            if (env.stat(file).kind == EntryKind::kMissing)
              add(file, "missing (a memo result is stored whole)");
            continue;
          }
          tasks.push_back(
              ChunkTask{index, file, chunk, layout::cell_identity(array->owner(), cell)});
        }
      } catch (const Error& e) {
        add(zarray, reason_for(e, env.describe(zarray)));
      }
    } else if (want_image && env.stat(image).kind == EntryKind::kMissing) {
      add(image, "missing");
    }
  }

  std::mutex mu;
  std::atomic<int64_t> bytes{0};
  arena.execute([&] {
    tbb::parallel_for(size_t{0}, tasks.size(), [&](size_t t) {
      const ChunkTask& task = tasks[t];
      std::string why;
      try {
        const auto stored = env.read(task.file);
        if (!stored) {
          // The whole entry was removed meanwhile (not damage).
          if (env.stat(layout::memo_entry(checked[task.entry])).kind == EntryKind::kMissing) return;
          why = "missing (a memo result is stored whole)";
        } else {
          bytes.fetch_add(static_cast<int64_t>(stored->size()), std::memory_order_relaxed);
          std::string out(task.chunk_bytes, '\0');
          ZarrArray::decode_chunk(*stored, out.data(), out.size(), env.describe(task.file),
                                  task.identity);
          return;
        }
      } catch (const Error& e) {
        why = reason_for(e, env.describe(task.file));
      }
      std::lock_guard lock(mu);
      found[task.entry].push_back(CacheProblem{env.describe(task.file), why});
    });
  });
  report.cells_checked += static_cast<int64_t>(tasks.size());
  report.bytes_checked += bytes.load();

  for (size_t i = 0; i < checked.size(); ++i) {
    if (found[i].empty()) continue;
    if (options.repair) {
      std::string repair = "removed the whole memo entry (the next call computes it again)";
      bool removed = false;
      try {
        const MemoRemoval r = remove_memo_entry(env, checked[i]);
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
  const auto env = open_existing_cache(root);
  if (!env)
    throw IoError(fmt::format("cache {}: cannot list it: no such directory", root.string()));
  return node_hashes(*env);
}

namespace {

StoredTable summarize_table_cells(Env& env, const NodeScan& s) {
  StoredTable out;
  for (const auto& [file, cell] : s.cells) {
    const std::string what = env.describe(file);
    try {
      const auto stored = env.read(file);
      if (!stored) continue;
      const Table t = Table::deserialize(
          ZarrArray::decode_chunk_any(*stored, what, layout::cell_identity(s.node.hash, cell)),
          what);
      if (out.cells == 0) out.columns = t.columns();
      out.rows += static_cast<int64_t>(t.num_rows());
      ++out.cells;
    } catch (const Error&) {
      // A damaged cell: verify reports it; a summary skips it.
    }
  }
  return out;
}

}  // namespace

StoredTable summarize_stored_table(const std::shared_ptr<Env>& env, const std::string& hash) {
  return summarize_table_cells(*env, scan_node(env, hash, nullptr));
}

std::vector<CachedNode> scan_cache(const fs::path& root) {
  const auto env = open_cache(root);
  std::vector<CachedNode> out;
  for (const std::string& hash : node_hashes(*env)) {
    NodeScan s = scan_node(env, hash, nullptr);
    if (env->stat(layout::node(hash)).kind != EntryKind::kFolder) continue;  // removed meanwhile
    if (s.node.kind == CachedNodeKind::kTable) {
      StoredTable t = summarize_table_cells(*env, s);
      s.node.table_columns = std::move(t.columns);
      s.node.table_rows = t.rows;
    }
    out.push_back(std::move(s.node));
  }
  return out;
}

std::vector<CachedMemoEntry> scan_memo_entries(const fs::path& root) {
  const auto env = open_cache(root);
  std::vector<CachedMemoEntry> out;
  for (const std::string& key : list_memo_keys(*env)) {
    MemoScan s = scan_memo_entry(*env, key);
    if (env->stat(layout::memo_entry(key)).kind != EntryKind::kFolder) continue;
    out.push_back(std::move(s.entry));
  }
  return out;
}

VerifyReport verify_cache(const fs::path& root, const VerifyOptions& options) {
  return verify_cache(open_cache(root), options);
}

VerifyReport verify_cache(const std::shared_ptr<Env>& env_ptr, const VerifyOptions& options) {
  if (!is_cache(*env_ptr))
    throw InvalidArgument(fmt::format("cache {}: not a cellflow cache (no {})",
                                      env_ptr->root().string(), layout::kFormatFile));
  Env& env = *env_ptr;
  VerifyReport report;
  const auto now = fs::file_time_type::clock::now();
  const auto note_temp = [&](const std::string& path, const EntryInfo& info, bool always) {
    if (!always && now - info.mtime <= options.temp_age) return;
    report.stale_temps.push_back(env.describe(path));
    if (!options.repair) return;
    try {
      if (env.remove(path)) ++report.stale_removed;
    } catch (const Error&) {
    }
  };
  const auto add = [&](const Finding& f) {
    CacheProblem p{env.describe(f.path), f.reason};
    if (options.repair) repair_finding(env, f, p);
    report.damaged.push_back(std::move(p));
  };

  // The cache's own format file.
  {
    const std::string file(layout::kFormatFile);
    std::string why;
    try {
      const auto text = env.read(file);
      const Value v = parse_json(text.value_or(""), file);
      const Value* f = v.find("format");
      if (f == nullptr || !f->is_int()) throw CorruptionError("no \"format\" number");
      if (!is_current_cache_format(static_cast<int>(f->as_int()))) {
        throw InvalidArgument(fmt::format("cache {}: format {}, this cellflow reads format {}",
                                          env.root().string(), f->as_int(), layout::kFormat));
      }
      if (f->as_int() == layout::kShardedFormat && cache_shard_cells(env) == 0)
        throw CorruptionError(fmt::format("a sharded cache (format {}) without a valid \"{}\"",
                                          layout::kShardedFormat, layout::kShardCellsKey));
    } catch (const InvalidArgument&) {
      throw;
    } catch (const Error& e) {
      why = reason_for(e, env.describe(file));
    }
    if (!why.empty()) {
      // Rewritten as format 2 only when no node is packed: the shard size of
      // a sharded cache cannot be told from its shards for certain, and a
      // wrong one would have every packed cell misread (then recomputed).
      bool packed = false;
      for (const std::string& hash : node_hashes(env)) {
        const std::string array = layout::array(hash);
        packed = packed ||
                 env.stat(join_path(array, layout::kZarrJson)).kind != EntryKind::kMissing ||
                 env.stat(join_path(array, layout::kShardFolder)).kind != EntryKind::kMissing;
        if (packed) break;
      }
      if (packed) {
        add(Finding{file,
                    why + fmt::format(" (the cache holds packed nodes: write it again as "
                                      "{{\"format\": {}, \"{}\": N}} with the cache's shard size)",
                                      layout::kShardedFormat, layout::kShardCellsKey),
                    Fix::kNone});
      } else {
        add(Finding{file, why, Fix::kRewrite,
                    fmt::format("{{\"format\": {}}}\n", layout::kFormat)});
      }
    }
  }

  // What lies directly in the root: the format file, node folders, memo/,
  // trees/, temporary files and trash; anything else does not belong.
  for (const DirEntry& e : env.list("")) {
    const std::string_view name = e.name;
    if (name == layout::kFormatFile || name == layout::kMemo) continue;  // checked on their own
    if (layout::is_node_name(name)) {
      if (e.kind != EntryKind::kFolder) add(Finding{e.name, wrong_kind(e.kind, "a node folder")});
      continue;
    }
    if (layout::is_trash_name(name) && e.kind == EntryKind::kFolder) {
      // Always garbage (its removal was interrupted, or is running now:
      // deleting it twice is harmless).
      note_temp(e.name, env.stat(e.name), true);
      continue;
    }
    if (layout::is_temp_name(name) && e.kind == EntryKind::kFile) {
      note_temp(e.name, env.stat(e.name), false);
      continue;
    }
    if (name == layout::kTrees && e.kind == EntryKind::kFolder) {
      std::vector<Finding> odd;
      find_odd_entries(env, e.name, odd);
      for (const Finding& f : odd) add(f);
      continue;
    }
    if (name == layout::kTables && e.kind == EntryKind::kFolder) {
      // TableLog batches: tables/<name>/<batch>, each checked like a cell.
      for (const DirEntry& t : env.list(e.name)) {
        const std::string table = join_path(e.name, t.name);
        if (t.kind != EntryKind::kFolder) {
          add(Finding{table, wrong_kind(t.kind, "a table folder")});
          continue;
        }
        for (const DirEntry& b : env.list(table)) {
          const std::string batch = layout::table_batch(t.name, b.name);  // also its identity
          if (layout::is_temp_name(b.name) && b.kind == EntryKind::kFile) {
            note_temp(batch, env.stat(batch), false);
            continue;
          }
          if (b.kind != EntryKind::kFile) {
            add(Finding{batch, wrong_kind(b.kind, "a table batch file")});
            continue;
          }
          try {
            const auto stored = env.read(batch);
            if (!stored) continue;
            report.bytes_checked += static_cast<int64_t>(stored->size());
            const std::string what = env.describe(batch);
            (void)Table::deserialize(ZarrArray::decode_chunk_any(*stored, what, batch), what);
          } catch (const Error& err) {
            add(Finding{batch, std::string(err.message()) +
                                   " (repair removes the batch: its rows are lost)"});
          }
        }
      }
      continue;
    }
    add(Finding{e.name, foreign(e.kind)});
  }

  // Every node's metadata now; cells are read in parallel afterwards.
  struct CellTask {
    size_t node;
    std::string file;
    bool table;
    size_t chunk_bytes;
    std::string identity;
  };
  // Sharded nodes: every inner chunk of every shard.
  struct ShardTask {
    size_t node;
    std::string file;
    CellIndex shard;
  };
  std::vector<NodeScan> scans;
  std::vector<CellTask> tasks;
  std::vector<ShardTask> shard_tasks;
  for (const std::string& hash : node_hashes(env)) {
    NodeScan s = scan_node(env_ptr, hash, &options);
    if (env.stat(layout::node(hash)).kind != EntryKind::kFolder) continue;
    const size_t index = scans.size();
    ++report.nodes;
    for (const TempEntry& t : s.temps) note_temp(t.path, t.info, false);
    if (!s.has_zattrs) report.unfinished.push_back(s.node.path);
    if (s.grid && s.dtype) {
      const bool table = s.node.kind == CachedNodeKind::kTable;
      const size_t chunk =
          static_cast<size_t>(s.grid->cell_shape().product()) * dtype_size(*s.dtype);
      for (const auto& [file, cell] : s.cells)
        tasks.push_back(
            CellTask{index, file, table, chunk, layout::cell_identity(s.node.hash, cell)});
    }
    for (const auto& [file, shard] : s.shards) shard_tasks.push_back(ShardTask{index, file, shard});
    scans.push_back(std::move(s));
  }

  // Repair of a damaged cell or shard file: removes it.
  const auto remove_damaged = [&env](const std::string& file, CacheProblem& p, const char* done) {
    try {
      env.remove(file);
      p.repaired = true;
      p.repair = done;
    } catch (const Error& e) {
      p.repair = fmt::format("could not delete it: {}", e.what());
    }
  };
  std::mutex mu;
  std::vector<CacheProblem> cell_problems;
  std::vector<int64_t> lost(scans.size(), 0);
  std::vector<int64_t> lost_in_shards(scans.size(), 0);
  std::atomic<int64_t> bytes{0};
  tbb::task_arena arena(options.threads > 0 ? options.threads : tbb::task_arena::automatic);
  arena.execute([&] {
    tbb::parallel_for(size_t{0}, tasks.size(), [&](size_t t) {
      const CellTask& task = tasks[t];
      const std::string what = env.describe(task.file);
      std::string why;
      try {
        const auto stored = env.read(task.file);
        if (!stored) return;  // removed meanwhile (a repair, a gc): not damage
        bytes.fetch_add(static_cast<int64_t>(stored->size()), std::memory_order_relaxed);
        if (task.table) {
          const std::string rows = ZarrArray::decode_chunk_any(*stored, what, task.identity);
          (void)Table::deserialize(rows, what);
        } else {
          std::string out(task.chunk_bytes, '\0');
          ZarrArray::decode_chunk(*stored, out.data(), out.size(), what, task.identity);
        }
        return;
      } catch (const Error& e) {
        why = reason_for(e, what);
      }
      CacheProblem p{what, why};
      if (options.repair)
        remove_damaged(task.file, p, "deleted (the next run recomputes the cell)");
      std::lock_guard lock(mu);
      ++lost[task.node];
      cell_problems.push_back(std::move(p));
    });
  });
  std::atomic<int64_t> shard_cells_checked{0};
  arena.execute([&] {
    tbb::parallel_for(size_t{0}, shard_tasks.size(), [&](size_t t) {
      const ShardTask& task = shard_tasks[t];
      const NodeScan& s = scans[task.node];
      ZarrArray& array = *s.array;
      const ShardGeometry& g = *array.shards();
      const std::string what = env.describe(task.file);
      std::optional<ZarrArray::Shard> shard;
      try {
        shard = array.read_shard(task.shard);
      } catch (const Error& e) {
        // The index is unreadable: none of its cells can be trusted.
        CacheProblem p{what, reason_for(e, what)};
        if (options.repair)
          remove_damaged(task.file, p, "deleted (the next run recomputes its cells)");
        std::lock_guard lock(mu);
        ++lost_in_shards[task.node];
        cell_problems.push_back(std::move(p));
        return;
      }
      if (!shard) return;  // removed meanwhile
      bytes.fetch_add(static_cast<int64_t>(shard->bytes.size()), std::memory_order_relaxed);
      const size_t chunk_bytes =
          static_cast<size_t>(s.grid->cell_shape().product()) * dtype_size(*s.dtype);
      std::string out(chunk_bytes, '\0');
      std::vector<std::string> chunks(static_cast<size_t>(g.slots()));
      std::vector<std::string> bad;
      int64_t checked = 0;
      for (int64_t slot = 0; slot < g.slots(); ++slot) {
        const ShardEntry& e = shard->index[static_cast<size_t>(slot)];
        CellIndex cell;
        if (!e.present()) continue;
        const std::string chunk = shard->bytes.substr(e.offset, e.nbytes);
        if (!g.cell_of(task.shard, slot, cell)) {
          bad.push_back(fmt::format("inner chunk {} lies outside the node's grid", slot));
          continue;
        }
        ++checked;
        try {
          ZarrArray::decode_chunk(chunk, out.data(), out.size(), "",
                                  layout::cell_identity(s.node.hash, cell));
          chunks[static_cast<size_t>(slot)] = chunk;
        } catch (const Error& err) {
          std::string why = err.message();
          if (why.starts_with(": ")) why.erase(0, 2);
          bad.push_back(fmt::format("cell {}: {}", cell.str(), why));
        }
      }
      shard_cells_checked.fetch_add(checked, std::memory_order_relaxed);
      if (bad.empty()) return;
      std::string why = fmt::format("{} damaged inner chunk(s): ", bad.size());
      for (size_t b = 0; b < bad.size(); ++b) why += (b > 0 ? "; " : "") + bad[b];
      CacheProblem p{what, why};
      if (options.repair) {
        try {
          env.write_atomic(task.file, encode_shard(chunks), Durability::kPowerCut);
          p.repaired = true;
          p.repair = "rewrote the shard without them (the next run recomputes them)";
        } catch (const Error& e) {
          p.repair = fmt::format("could not rewrite it: {}", e.what());
        }
      }
      std::lock_guard lock(mu);
      lost_in_shards[task.node] += static_cast<int64_t>(bad.size());
      cell_problems.push_back(std::move(p));
    });
  });
  report.cells_checked = static_cast<int64_t>(tasks.size()) + shard_cells_checked.load();
  report.bytes_checked = bytes.load();
  for (auto& p : cell_problems) report.damaged.push_back(std::move(p));

  for (size_t i = 0; i < scans.size(); ++i) {
    NodeScan& s = scans[i];
    const std::string& hash = s.node.hash;
    if (s.shards_unknown) continue;  // the format file's finding says what to do
    std::vector<Finding> findings = std::move(s.findings);
    const bool definition_ok = s.has_zattrs && s.zattrs_problem.empty();
    bool remove_whole = false;
    if (s.has_zattrs && !s.zattrs_problem.empty()) {
      findings.push_back(Finding{layout::zattrs(hash), s.zattrs_problem, Fix::kRemoveWhole});
      remove_whole = true;  // the node's definition is lost: nothing to check its cells against
    }
    // A packed node's metadata is its zarr.json: never a .zarray beside its
    // shards (a Zarr v2 reader would read the cells in shards as zeros).
    const std::string meta =
        s.v3 ? join_path(s.cells_folder, layout::kZarrJson) : layout::zarray(hash);
    if (!s.zarray_problem.empty()) {
      if (definition_ok && s.grid && s.dtype) {
        findings.push_back(Finding{
            meta, s.zarray_problem, Fix::kRewrite,
            s.v3
                ? zarr_v3_json(*s.dtype, *s.grid, ShardGeometry(*s.grid, s.shard_cells).per_shard())
                : zarray_json(*s.dtype, *s.grid)});
      } else {
        findings.push_back(Finding{meta, s.zarray_problem, Fix::kRemoveWhole});
        remove_whole = true;
      }
    }
    if (lost_in_shards[i] > 0 && s.v3) {
      // The node is incomplete now: no Zarr v3 reader may take its lost
      // cells for fill values. Its next run recomputes them and packs it again.
      findings.push_back(
          Finding{meta,
                  "describes a node that lost cells inside its shards (removed until they "
                  "are recomputed and the node is packed again)"});
    }
    const int64_t present = s.node.cells_present - lost[i] - lost_in_shards[i];
    if (s.node.complete_marker && s.node.cells_total > 0 && present < s.node.cells_total) {
      findings.push_back(
          Finding{layout::complete_marker(hash),
                  fmt::format("marks the node complete, but {} of its {} cells are missing{}",
                              s.node.cells_total - present, s.node.cells_total,
                              lost[i] > 0 ? " or damaged" : "")});
    }
    std::vector<CacheProblem> found;
    for (const Finding& f : findings) {
      CacheProblem p{env.describe(f.path), f.reason};
      // A node removed whole needs no other repair, but a use file that is
      // not a file must go first (the node's lock must never open it).
      if (options.repair && (!remove_whole || f.path == layout::use_file(hash)))
        repair_finding(env, f, p);
      found.push_back(std::move(p));
    }
    if (remove_whole && options.repair) {
      bool removed = false;
      std::string why = "the node is in use by a running process; repair again later";
      try {
        removed = remove_node(env, hash);
      } catch (const Error& e) {
        why = e.what();
      }
      if (!removed && env.stat(layout::node(hash)).kind == EntryKind::kMissing) removed = true;
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

  verify_memo(env_ptr, options, arena, report);
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
  const auto env_ptr = open_cache(root);
  Env& env = *env_ptr;
  GcReport report;
  if (!options.dry_run) {
    // Trash of interrupted removals, and what stands at a node's or memo
    // entry's place without being one (a link is removed, never followed).
    const auto remove_odd = [&](const std::string& path) {
      try {
        if (env.remove(path)) report.unexpected_removed.push_back(env.describe(path));
      } catch (const Error&) {
      }
    };
    for (const DirEntry& e : env.list("")) {
      if (layout::is_trash_name(e.name) && e.kind == EntryKind::kFolder) {
        try {
          if (env.remove(e.name)) ++report.trash_removed;
        } catch (const Error&) {
        }
      } else if ((layout::is_node_name(e.name) && e.kind != EntryKind::kFolder) ||
                 (e.name == layout::kMemo && e.kind != EntryKind::kFolder)) {
        remove_odd(e.name);
      }
    }
    if (env.stat(layout::kMemo).kind == EntryKind::kFolder) {
      for (const DirEntry& e : env.list(layout::kMemo)) {
        const std::string p = join_path(layout::kMemo, e.name);
        const bool lock_name = e.name.size() == 32 + layout::kMemoLockSuffix.size() &&
                               e.name.ends_with(layout::kMemoLockSuffix);
        if ((layout::is_node_name(e.name) && e.kind != EntryKind::kFolder) ||
            (lock_name && e.kind != EntryKind::kFile) ||
            (e.name == layout::kMemoTemp && e.kind != EntryKind::kFolder))
          remove_odd(p);
      }
      if (env.stat(layout::memo_temp()).kind == EntryKind::kFolder) {
        for (const DirEntry& e : env.list(layout::memo_temp())) {
          if (!layout::is_memo_trash_name(e.name)) continue;
          try {
            if (env.remove(join_path(layout::memo_temp(), e.name))) ++report.trash_removed;
          } catch (const Error&) {
          }
        }
      }
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
        if (memo_entry_in_use(env, m.key)) r = MemoRemoval::kInUse;
      } else {
        r = remove_memo_entry(env, m.key);
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
      removed = !node_busy(env, n.hash);
    } else {
      removed = remove_node(env, n.hash);
      if (!removed && env.stat(layout::node(n.hash)).kind == EntryKind::kMissing)
        continue;  // someone else removed it
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

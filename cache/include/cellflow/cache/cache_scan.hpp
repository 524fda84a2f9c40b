// Maintenance of a cache directory from outside a run: list its nodes and
// memo entries (scan_cache, scan_memo_entries), check every stored file
// (verify_cache) and remove nodes and memo entries by age or size budget, or
// nodes by a set to keep (gc_cache). All are safe while other processes
// compute on the same cache: scanning and verifying only read (verify's repair
// removes damaged cells and memo entries, stale temporary files and stale
// completion markers, which runs recompute or ignore), and nodes and memo
// entries are removed whole, by atomic rename, never while a process holds
// their NodeUseLock (nodes) or MemoKeyLock (<cache>/memo/<key>.lock, Memo).
// Thread-compatible: each call is independent.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cellflow/cache/dims.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/store/env.hpp"

namespace cellflow {

enum class CachedNodeKind { kImage, kTable, kUnknown };

/// One node folder of a cache, as found on disk.
struct CachedNode {
  std::string hash;  // the folder's name (32 hex chars)
  std::filesystem::path path;
  CachedNodeKind kind = CachedNodeKind::kUnknown;
  // From .zattrs "cellflow" (empty when the metadata is missing or unreadable).
  std::string id;
  std::string op;
  std::string dtype;
  Shape shape;
  Shape cell_shape;
  int64_t cells_total = 0;    // 0 when the grid is unknown
  int64_t cells_present = 0;  // committed cells inside the grid (files, or in shard indexes)
  bool complete_marker = false;
  /// Table nodes: the columns and the rows of the committed cells (empty and
  /// 0 when none is stored yet; see summarize_stored_table).
  std::vector<std::string> table_columns;
  int64_t table_rows = 0;
  /// Empty when .zattrs (and .zarray for images) were read; else why not.
  std::string metadata_problem;
  uint64_t bytes = 0;  // space allocated on disk for everything in the folder
  std::filesystem::file_time_type last_used{};  // newest mtime in the folder

  bool complete() const { return cells_total > 0 && cells_present == cells_total; }
};

/// Every node folder (named by 32 lowercase hex chars) of the cache at `root`,
/// sorted by hash (a link or anything else at a node's name is not a node, and
/// is never followed). Only reads. Throws InvalidArgument if `root` is not a
/// cellflow cache (no cellflow-cache.json), IoError if it cannot be read.
std::vector<CachedNode> scan_cache(const std::filesystem::path& root);

/// What the committed cells of a table node hold.
struct StoredTable {
  std::vector<std::string> columns;  // of the first readable cell
  /// Rows summed over the readable cells, as stored: an object whose rows an
  /// op merges across cells (label.stats) counts once per cell it touches.
  int64_t rows = 0;
  int64_t cells = 0;  // cells read
};

/// Reads the committed cells of table node `hash` (damaged ones skipped).
/// Only reads.
StoredTable summarize_stored_table(const std::shared_ptr<Env>& env, const std::string& hash);

/// The node folders `root` holds, by hash (cheap: one directory listing).
std::vector<std::string> list_node_hashes(const std::filesystem::path& root);

/// One entry of cellflow::Memo, <cache>/memo/<key>/, as found on disk.
struct CachedMemoEntry {
  std::string key;  // the folder's name (32 hex chars)
  std::filesystem::path path;
  // From entry.json (empty when it is missing or unreadable).
  std::string function;
  int64_t version = 0;
  std::string result_type;    // demangled C++ type
  std::string result_format;  // "cereal-portable-binary" (result.bin) or "zarr" (result/)
  std::string created;        // ISO 8601 UTC
  /// Empty when entry.json was read; else why not.
  std::string problem;
  uint64_t bytes = 0;  // space allocated on disk for everything in the folder
  /// Newest mtime in the folder (every call served from the entry touches entry.json).
  std::filesystem::file_time_type last_used{};
};

/// Every memo entry of the cache at `root`, sorted by key. Only reads. Throws
/// InvalidArgument if `root` is not a cellflow cache.
std::vector<CachedMemoEntry> scan_memo_entries(const std::filesystem::path& root);

/// A file (or folder) that is damaged, and why.
struct CacheProblem {
  std::filesystem::path file;
  std::string reason;
  bool repaired = false;
  std::string repair;  // what repair did ("deleted", "rewritten", ...) or why it could not
};

struct VerifyOptions {
  /// Delete damaged cells (runs recompute them), stale temporary files and
  /// trash folders, completion markers of nodes that lost cells; rewrite
  /// damaged .zgroup / .zarray from the node's definition; remove a node whose
  /// definition (.zattrs) is damaged, unless a process is using it.
  bool repair = false;
  /// Temporary files ("." name ".tmp." ...) older than this are stale (left by
  /// a killed process); younger ones may be in flight and are left alone.
  std::chrono::seconds temp_age{60};
  /// Threads that read cells (0 = all cores).
  int threads = 0;
  /// The hash of a node's stored definition (.zattrs "cellflow"), to check it
  /// names its folder; nullopt when it cannot be computed (then the
  /// definition is damaged). The recipe lives in the graph layer, which the
  /// cache does not depend on: the caller passes it (the CLI passes
  /// cellflow::definition_hash). Unset: the hash is not checked.
  std::function<std::optional<std::string>(const Value& definition)> definition_hash;
};

struct VerifyReport {
  int64_t nodes = 0;
  int64_t memo_entries = 0;
  int64_t cells_checked = 0;
  int64_t bytes_checked = 0;
  std::vector<CacheProblem> damaged;  // in path order
  /// Stale temporary files and trash folders (harmless; removed by repair).
  std::vector<std::filesystem::path> stale_temps;
  int64_t stale_removed = 0;
  /// Node folders whose metadata is not written yet (a run is creating them,
  /// or was killed while doing so; the next run completes them). Not damage.
  std::vector<std::filesystem::path> unfinished;

  /// No damage left (none found, or all of it repaired).
  bool clean() const;
};

/// Reads and checks every file of the cache, through the store's Env (no link
/// is ever followed, no FIFO or socket opened): cellflow-cache.json, each
/// node's .zgroup, .zattrs (parses, names the folder's hash, and — with
/// `options.definition_hash` — hashes to it), 0/.zarray (present for an image
/// node, and matching the definition), every cell (checksum trailer bound to
/// the node and the cell's position, blosc frame sizes, decompression; table
/// cells also parse as rows), and completion markers (every cell present).
/// In a sharded cache (format 3) a packed node's 0/zarr.json stands for its
/// .zarray, and every inner chunk of every shard 0/c/i/j/k is checked as a
/// cell is (the shard index against its crc32c first); repair rewrites a
/// shard without its damaged cells (removes it when its index is damaged),
/// and removes the node's zarr.json and completion marker so that the next
/// run recomputes those cells and packs the node again;
/// each memo entry's entry.json (parses, names the folder's key) and result
/// (result.bin against entry.json's checksum, or every chunk of result/ as
/// node cells are checked). Every entry the layout does not define — a link,
/// a FIFO, a socket, a folder where a file belongs, a foreign file — is
/// reported. Repair removes those (a link itself, never its target), damaged
/// cells and stale markers, rewrites .zgroup, .zarray and the format file,
/// removes a node whose definition is lost and a damaged memo entry whole
/// (unless a process holds its lock), and folders in memo/.tmp left by killed
/// writers. Only reads unless `options.repair`; never touches anything outside
/// the cache. Throws InvalidArgument if `root` is not a cellflow cache.
VerifyReport verify_cache(const std::filesystem::path& root, const VerifyOptions& options = {});
/// The same for the cache held by any Env (a MemoryEnv in fault tests).
VerifyReport verify_cache(const std::shared_ptr<Env>& env, const VerifyOptions& options = {});

/// Which nodes and memo entries gc removes; give exactly one criterion.
struct GcOptions {
  /// Nodes and memo entries not used for longer than this.
  std::optional<std::chrono::seconds> older_than;
  /// Least recently used nodes and memo entries first (one order for both),
  /// until the cache takes at most this many bytes.
  std::optional<uint64_t> max_bytes;
  /// Every node whose hash is not in this set. Memo entries are not touched.
  std::optional<std::set<std::string>> keep;
  /// Report what would be removed, remove nothing.
  bool dry_run = false;
  /// "Now", for the age criterion (tests); default the clock's now.
  std::optional<std::filesystem::file_time_type> now;
};

struct GcReport {
  std::vector<CachedNode> removed;            // in removal order
  std::vector<CachedNode> in_use;             // chosen for removal but in use by a process: kept
  std::vector<CachedMemoEntry> memo_removed;  // in removal order
  std::vector<CachedMemoEntry> memo_in_use;   // chosen, but being loaded or computed: kept
  uint64_t bytes_before = 0;                  // nodes and memo entries
  uint64_t bytes_after = 0;
  int64_t trash_removed = 0;  // trash folders of interrupted removals deleted
  /// Entries at a node's or memo entry's place that are not folders (a link,
  /// a FIFO...), removed (a link itself, never its target).
  std::vector<std::filesystem::path> unexpected_removed;
};

/// Removes whole node folders and memo entries of the cache at `root` (see
/// GcOptions), never a node a process holds a NodeUseLock on nor a memo entry
/// whose lock a Memo call holds. Also removes what stands at a node's or
/// memo entry's place without being a folder (a link itself, never its
/// target). Never touches anything outside the cache. Throws InvalidArgument if `root` is
/// not a cellflow cache or the options do not hold exactly one criterion.
GcReport gc_cache(const std::filesystem::path& root, const GcOptions& options);

}  // namespace cellflow

// The cache directory's layout: every name the store gives to a file or
// folder, in one place. Paths are relative to the cache root (Env paths).
//
//   cellflow-cache.json                  {"format": N}
//   <hash>/.zgroup .zattrs               one OME-Zarr (NGFF 0.4) group per node
//   <hash>/0/.zarray  <hash>/0/i/j/k     the Zarr v2 array of an image node
//   <hash>/0/zarr.json <hash>/0/c/i/j/k  the same array packed into Zarr v3
//                                        shards (sharded caches, format 3)
//   <hash>/0/.cellflow-pack-lock         held while a node is packed
//   <hash>/table/i/j/k                   the row cells of a table node
//   <hash>/.cellflow-complete            every cell committed
//   <hash>/.cellflow-use                 the in-use lease (a lock file)
//   <hash>/.cellflow-meta-lock           the metadata lock of .zattrs
//   <hash>/0/.cellflow-lock, <hash>/table/.cellflow-lock   per-cell locks
//   <hash>/artifacts/                    logs, plots, tables of the node
//   memo/<key>/  memo/<key>.lock  memo/.tmp/   Memo entries
//   memo/<key>/entry.json result.bin result/ artifacts/   what an entry holds
//   trees/                               cache trees (CacheTree)
//   <tree>/.cellflow-committed <tree>/.cellflow-tree.lock  a cache tree's marker and lock
//   <artifacts>/.cellflow-log-lock       serializes appends to a folder's logs
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "cellflow/cache/dims.hpp"

namespace cellflow::layout {

/// The cache format this build writes. 1: cells carried an XXH3 of their
/// bytes only; 2: the checksum also binds the cell to its node and position.
inline constexpr int kFormat = 2;
/// The format of a sharded cache: format 2, plus complete image nodes packed
/// into Zarr v3 shards (zarr.json, c/i/j/k). An older cellflow refuses it, so
/// it never mistakes a packed node for an empty one. The format file also
/// names the most cells a shard holds: {"format": 3, "shard_cells": 512}.
inline constexpr int kShardedFormat = 3;
inline constexpr std::string_view kShardCellsKey = "shard_cells";

inline constexpr std::string_view kFormatFile = "cellflow-cache.json";
inline constexpr std::string_view kZgroup = ".zgroup";
inline constexpr std::string_view kZattrs = ".zattrs";
inline constexpr std::string_view kZarray = ".zarray";
inline constexpr std::string_view kArray = "0";
/// Zarr v3 names inside an image node's array folder (sharded caches).
inline constexpr std::string_view kZarrJson = "zarr.json";
inline constexpr std::string_view kShardFolder = "c";
inline constexpr std::string_view kPackLock = ".cellflow-pack-lock";
inline constexpr std::string_view kTable = "table";
inline constexpr std::string_view kCompleteMarker = ".cellflow-complete";
inline constexpr std::string_view kUseFile = ".cellflow-use";
inline constexpr std::string_view kMetaLock = ".cellflow-meta-lock";
inline constexpr std::string_view kCellLock = ".cellflow-lock";
inline constexpr std::string_view kArtifacts = "artifacts";
inline constexpr std::string_view kMemo = "memo";
inline constexpr std::string_view kMemoTemp = ".tmp";
inline constexpr std::string_view kMemoEntryFile = "entry.json";
inline constexpr std::string_view kMemoBlob = "result.bin";
inline constexpr std::string_view kMemoImage = "result";
inline constexpr std::string_view kMemoLockSuffix = ".lock";
/// Tags in the names of memo/.tmp/ folders: an entry removed by maintenance,
/// or one Memo found damaged and moved out of the way.
inline constexpr std::string_view kMemoRemovedTag = ".removed.";
inline constexpr std::string_view kMemoDamagedTag = ".damaged.";
/// The owner memo result chunks are bound to (an entry is written under a
/// temporary name, then renamed: its chunks cannot be bound to its key).
inline constexpr std::string_view kMemoResultOwner = "memo-result";
inline constexpr std::string_view kTrees = "trees";
/// Tables appended to outside graphs (TableLog): tables/<name>/<batch>.
inline constexpr std::string_view kTables = "tables";
/// A TableLog batch's path, which is also the identity its checksum binds.
inline std::string table_batch(std::string_view table, std::string_view batch) {
  std::string out(kTables);
  out += '/';
  out += table;
  out += '/';
  out += batch;
  return out;
}
inline constexpr std::string_view kTreeCommitted = ".cellflow-committed";
inline constexpr std::string_view kTreeLock = ".cellflow-tree.lock";
inline constexpr std::string_view kLogLock = ".cellflow-log-lock";
inline constexpr std::string_view kTrashTag = ".trash.";
/// The text of every node's .zgroup.
inline constexpr std::string_view kZgroupText = "{\n  \"zarr_format\": 2\n}\n";

/// True for a node folder's name: 32 lowercase hex characters.
bool is_node_name(std::string_view name);
/// True for a temporary file of an atomic write: "." name ".tmp." ...
bool is_temp_name(std::string_view name);
/// True for a node folder being removed: "." hash ".trash." ... in the root.
bool is_trash_name(std::string_view name);
/// True for a trash folder in memo/.tmp (kMemoRemovedTag or kMemoDamagedTag).
bool is_memo_trash_name(std::string_view name);
/// Parses a cell position component ("0", "17"); nullopt if it is not one.
std::optional<int64_t> parse_cell_index(std::string_view name);

inline std::string node(std::string_view hash) { return std::string(hash); }
std::string in_node(std::string_view hash, std::string_view name);
inline std::string zattrs(std::string_view hash) { return in_node(hash, kZattrs); }
inline std::string zgroup(std::string_view hash) { return in_node(hash, kZgroup); }
inline std::string array(std::string_view hash) { return in_node(hash, kArray); }
inline std::string table(std::string_view hash) { return in_node(hash, kTable); }
std::string zarray(std::string_view hash);
inline std::string complete_marker(std::string_view hash) { return in_node(hash, kCompleteMarker); }
inline std::string use_file(std::string_view hash) { return in_node(hash, kUseFile); }
inline std::string artifacts(std::string_view hash) { return in_node(hash, kArtifacts); }
/// "memo/<key>", "memo/<key>.lock", "memo/.tmp".
inline std::string memo_entry(std::string_view key) {
  return std::string(kMemo) + '/' + std::string(key);
}
inline std::string memo_lock(std::string_view key) {
  return memo_entry(key) + std::string(kMemoLockSuffix);
}
inline std::string memo_temp() { return std::string(kMemo) + '/' + std::string(kMemoTemp); }
/// ".<hash>.trash.<unique>": where a removed node folder goes before it is deleted.
inline std::string node_trash(std::string_view hash, std::string_view unique) {
  return '.' + std::string(hash) + std::string(kTrashTag) + std::string(unique);
}
/// "<folder>/i/j/k": a cell's file under an array or table folder.
std::string cell(std::string_view folder, const CellIndex& index);
/// "<folder>/c/i/j/k": a shard's file under an array folder (Zarr v3's
/// default chunk key encoding with separator "/").
std::string shard(std::string_view folder, const CellIndex& shard_index);
/// The key of a cell's identity: "<hash>/<folder name>/i/j/k" as written by
/// cell(); what a cell's checksum binds it to.
std::string cell_identity(std::string_view owner, const CellIndex& index);

/// "memo/<key>/entry.json".
std::string memo_entry_file(std::string_view key);

/// Beside a blockwise task's Zarr output (not in a cache): under MPI, the
/// ranks' per-block lock file (byte <block id>) and this run's markers
/// (done/<id>, failed/<id>, attempts/<id>), cleared when a run starts.
inline constexpr std::string_view kBlockwiseLockFile = ".cellflow-blocks.lock";
inline constexpr std::string_view kBlockwiseRunFolder = ".cellflow-run";

}  // namespace cellflow::layout

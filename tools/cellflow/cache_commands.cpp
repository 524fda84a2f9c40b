#include "cache_commands.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <set>

#include "cellflow/cache/cache_scan.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/memory_cache.hpp"
#include "cellflow/graph/provenance.hpp"
#include "cellflow/graph/value.hpp"
#include "cellflow/store/migrate.hpp"
#include "commands.hpp"

namespace cellflow::cli {
namespace {

namespace fs = std::filesystem;

std::chrono::system_clock::time_point to_system(fs::file_time_type t) {
  return std::chrono::time_point_cast<std::chrono::system_clock::duration>(
      fs::file_time_type::clock::to_sys(t));
}

std::string format_time(fs::file_time_type t, bool utc) {
  if (t == fs::file_time_type::min()) return "-";
  const std::time_t tt = std::chrono::system_clock::to_time_t(to_system(t));
  std::tm tm{};
  if (utc) {
    gmtime_r(&tt, &tm);
  } else {
    localtime_r(&tt, &tm);
  }
  char buf[32];
  std::strftime(buf, sizeof buf, utc ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string shape_text(const Shape& s) {
  if (s.empty()) return "?";
  return fmt::format("{}", fmt::join(s.to_vector(), "x"));
}

std::string cells_text(const CachedNode& n) {
  const std::string total = n.cells_total > 0 ? std::to_string(n.cells_total) : "?";
  return fmt::format("{} ({}/{})", n.complete() ? "complete" : "partial", n.cells_present, total);
}

std::string or_dash(const std::string& s) { return s.empty() ? "-" : s; }

const char* kind_name(CachedNodeKind k) {
  switch (k) {
    case CachedNodeKind::kImage:
      return "image";
    case CachedNodeKind::kTable:
      return "table";
    case CachedNodeKind::kUnknown:
      return "unknown";
  }
  return "unknown";
}

// "cereal 1.2 KiB" / "zarr": how a memo entry stores its result.
std::string memo_result_text(const CachedMemoEntry& m) {
  if (m.result_format == "cereal-portable-binary") return "cereal";
  return or_dash(m.result_format);
}

std::string plural(size_t n, const char* one, const char* many) {
  return fmt::format("{} {}", n, n == 1 ? one : many);
}

Value memo_json(const CachedMemoEntry& m) {
  Value v(Value::Object{
      {"key", m.key},
      {"function", m.function},
      {"version", m.version},
      {"result_type", m.result_type},
      {"result_format", m.result_format},
      {"created", m.created},
      {"bytes", static_cast<int64_t>(m.bytes)},
      {"last_used", format_time(m.last_used, true)},
      {"last_used_unix",
       std::chrono::duration<double>(to_system(m.last_used).time_since_epoch()).count()},
      {"path", m.path.string()},
  });
  if (!m.problem.empty()) v.set("problem", m.problem);
  return v;
}

}  // namespace

int cache_ls_command(const CacheArgs& args) {
  const fs::path root = cache_root_of(args.cache);
  const std::vector<CachedNode> nodes = scan_cache(root);
  const std::vector<CachedMemoEntry> memos = scan_memo_entries(root);
  uint64_t total = 0;
  for (const CachedNode& n : nodes) total += n.bytes;
  for (const CachedMemoEntry& m : memos) total += m.bytes;
  if (args.json) {
    Value list = Value::array();
    for (const CachedNode& n : nodes) {
      Value v(Value::Object{
          {"hash", n.hash},
          {"op", n.op},
          {"id", n.id},
          {"kind", kind_name(n.kind)},
          {"dtype", n.dtype},
          {"shape", Value::list(n.shape.to_vector())},
          {"cell_shape", Value::list(n.cell_shape.to_vector())},
          {"bytes", static_cast<int64_t>(n.bytes)},
          {"cells_present", n.cells_present},
          {"cells_total", n.cells_total},
          {"complete", n.complete()},
          {"complete_marker", n.complete_marker},
          {"last_used", format_time(n.last_used, true)},
          {"last_used_unix",
           std::chrono::duration<double>(to_system(n.last_used).time_since_epoch()).count()},
          {"path", n.path.string()},
      });
      if (!n.metadata_problem.empty()) v.set("problem", n.metadata_problem);
      if (n.kind == CachedNodeKind::kTable) {
        Value columns = Value::array();
        for (const std::string& c : n.table_columns) columns.as_array().emplace_back(c);
        v.set("columns", std::move(columns));
        v.set("rows_stored", n.table_rows);
      }
      list.as_array().push_back(std::move(v));
    }
    Value memo_list = Value::array();
    for (const CachedMemoEntry& m : memos) memo_list.as_array().push_back(memo_json(m));
    fmt::print("{}", to_json(Value(Value::Object{{"cache", root.string()},
                                                 {"total_bytes", static_cast<int64_t>(total)},
                                                 {"nodes", std::move(list)},
                                                 {"memo", std::move(memo_list)}})));
    return kExitOk;
  }
  // Every field that comes from a file is escaped: an id or op with ESC or a
  // newline must not reach the terminal raw.
  struct Row {
    std::string op, id, dtype, shape, cells, problem;
  };
  std::vector<Row> rows;
  size_t op_w = 2;
  size_t id_w = 2;
  size_t dtype_w = 5;
  size_t shape_w = 5;
  size_t cells_w = 5;
  for (const CachedNode& n : nodes) {
    Row r{terminal_text(or_dash(n.op)),
          terminal_text(or_dash(n.id)),
          terminal_text(or_dash(n.dtype)),
          shape_text(n.shape),
          cells_text(n),
          n.metadata_problem.empty() ? "" : "  (" + terminal_text(n.metadata_problem) + ")"};
    if (n.kind == CachedNodeKind::kTable) {
      // A table's cells hold rows: its "shape" is its columns, not u8 bytes.
      r.dtype = "table";
      r.shape = n.table_columns.empty()
                    ? "-"
                    : fmt::format("{} cols, {} rows stored", n.table_columns.size(), n.table_rows);
    }
    op_w = std::max(op_w, r.op.size());
    id_w = std::max(id_w, r.id.size());
    dtype_w = std::max(dtype_w, r.dtype.size());
    shape_w = std::max(shape_w, r.shape.size());
    cells_w = std::max(cells_w, r.cells.size());
    rows.push_back(std::move(r));
  }
  fmt::print("{:<32}  {:<{}}  {:<{}}  {:<{}}  {:<{}}  {:>10}  {:<{}}  {}\n", "hash", "op", op_w,
             "id", id_w, "dtype", dtype_w, "shape", shape_w, "size", "cells", cells_w, "last used");
  for (size_t i = 0; i < nodes.size(); ++i) {
    const CachedNode& n = nodes[i];
    const Row& r = rows[i];
    fmt::print("{:<32}  {:<{}}  {:<{}}  {:<{}}  {:<{}}  {:>10}  {:<{}}  {}{}\n", n.hash, r.op, op_w,
               r.id, id_w, r.dtype, dtype_w, r.shape, shape_w, human_size(n.bytes), r.cells,
               cells_w, format_time(n.last_used, false), r.problem);
  }
  if (!memos.empty()) {
    // Memo entries (cellflow::Memo), one line each, marked "memo".
    size_t fn_w = 8;
    size_t result_w = 6;
    for (const CachedMemoEntry& m : memos) {
      fn_w = std::max(fn_w, terminal_text(or_dash(m.function)).size());
      result_w = std::max(result_w, terminal_text(memo_result_text(m)).size());
    }
    fmt::print("{:<37}  {:<{}}  {:>7}  {:<{}}  {:>10}  {}\n", "memo entry", "function", fn_w,
               "version", "result", result_w, "size", "last used");
    for (const CachedMemoEntry& m : memos) {
      fmt::print("memo {:<32}  {:<{}}  {:>7}  {:<{}}  {:>10}  {}{}\n", m.key,
                 terminal_text(or_dash(m.function)), fn_w,
                 m.problem.empty() ? std::to_string(m.version) : "-",
                 terminal_text(memo_result_text(m)), result_w, human_size(m.bytes),
                 format_time(m.last_used, false),
                 m.problem.empty() ? "" : "  (" + terminal_text(m.problem) + ")");
    }
  }
  fmt::print("{} node{}{}, {} in {}\n", nodes.size(), nodes.size() == 1 ? "" : "s",
             memos.empty() ? "" : ", " + plural(memos.size(), "memo entry", "memo entries"),
             human_size(total), terminal_text(root.string()));
  return kExitOk;
}

int cache_migrate_command(const CacheArgs& args) {
  const fs::path root = cache_root_of(args.cache);
  if (!fs::is_directory(root))
    throw UsageError(fmt::format("cache {}: no such folder", root.string()));
  if (args.shard_cells) {
    const ShardingReport r = shard_cache(posix_env(root), *args.shard_cells);
    fmt::print(
        "cache {}: format {} -> {}, shards of at most {} cells: {} complete image nodes packed, "
        "{} incomplete (packed when a run completes them)\n",
        root.string(), r.from_format, r.to_format, r.shard_cells, r.nodes_packed,
        r.nodes_incomplete);
    return 0;
  }
  const MigrationReport r = migrate_cache(*posix_env(root));
  if (r.from_format == r.to_format) {
    fmt::print("cache {}: already format {}, nothing to do\n", root.string(), r.to_format);
    return 0;
  }
  for (const std::string& why : r.cells_removed)
    fmt::print("damaged cell removed (a run recomputes it): {}\n", why);
  fmt::print(
      "cache {}: format {} -> {}: {} nodes, {} memo entries, {} cells rewritten, {} already "
      "current, {} damaged cells removed\n",
      root.string(), r.from_format, r.to_format, r.nodes, r.memo_entries, r.cells_rewritten,
      r.cells_already_current, r.cells_removed.size());
  return 0;
}

int cache_verify_command(const CacheArgs& args) {
  const fs::path root = cache_root_of(args.cache);
  VerifyOptions options;
  options.repair = args.repair;
  // The graph layer's recipe: a definition must hash to its folder's name.
  options.definition_hash = [](const Value& definition) { return definition_hash(definition); };
  const VerifyReport r = verify_cache(root, options);
  for (const CacheProblem& p : r.damaged) {
    std::string line = fmt::format("damaged: {}: {}", p.file.string(), p.reason);
    if (args.repair) line += p.repaired ? " -> " + p.repair : " -> NOT repaired: " + p.repair;
    fmt::print("{}\n", line);
  }
  for (const fs::path& t : r.stale_temps) {
    fmt::print("stale temporary file (harmless){}: {}\n", args.repair ? ", removed" : "",
               t.string());
  }
  for (const fs::path& u : r.unfinished) {
    fmt::print("unfinished node (metadata not written yet; the next run completes it): {}\n",
               u.string());
  }
  const size_t repaired = static_cast<size_t>(std::count_if(
      r.damaged.begin(), r.damaged.end(), [](const CacheProblem& p) { return p.repaired; }));
  std::string verdict;
  if (r.damaged.empty()) {
    verdict = "clean";
  } else if (r.clean()) {
    verdict = fmt::format("{} damaged file{}, all repaired", r.damaged.size(),
                          r.damaged.size() == 1 ? "" : "s");
  } else {
    verdict = fmt::format("{} damaged file{}{}", r.damaged.size(), r.damaged.size() == 1 ? "" : "s",
                          args.repair ? fmt::format(", {} repaired", repaired)
                                      : " (cellflow cache verify --repair deletes them; runs "
                                        "recompute what is missing)");
  }
  fmt::print("checked {} node{}{}, {} cell{} ({}) in {}: {}\n", r.nodes, r.nodes == 1 ? "" : "s",
             r.memo_entries == 0
                 ? ""
                 : ", " + plural(static_cast<size_t>(r.memo_entries), "memo entry", "memo entries"),
             r.cells_checked, r.cells_checked == 1 ? "" : "s",
             human_size(static_cast<uint64_t>(r.bytes_checked)), root.string(), verdict);
  return r.clean() ? kExitOk : kExitFailed;
}

int cache_gc_command(const CacheArgs& args) {
  const fs::path root = cache_root_of(args.cache);
  const int criteria = static_cast<int>(args.older_than_days.has_value()) +
                       static_cast<int>(args.max_size.has_value()) +
                       static_cast<int>(args.keep_graph.has_value());
  if (criteria != 1) {
    throw UsageError(
        "cache gc: give exactly one of --older-than DAYS, --max-size SIZE or --keep-graph GRAPH");
  }
  GcOptions options;
  options.dry_run = args.dry_run;
  if (args.older_than_days) {
    if (!(*args.older_than_days >= 0)) throw UsageError("cache gc: --older-than must be >= 0 days");
    options.older_than =
        std::chrono::seconds(static_cast<int64_t>(*args.older_than_days * 86400.0));
  }
  if (args.max_size) options.max_bytes = parse_size(*args.max_size, "--max-size");
  if (args.keep_graph) {
    // Hashes do not depend on the cache: build the graph memory-only.
    const Graph graph = load_cli_graph(*args.keep_graph, std::nullopt);
    std::set<std::string> keep;
    for (const GraphNode& n : graph.nodes()) keep.insert(n.hash);
    options.keep = std::move(keep);
  }
  const GcReport r = gc_cache(root, options);
  const char* verb = args.dry_run ? "would remove" : "removed";
  for (const CachedNode& n : r.removed) {
    fmt::print("{} {}  {}  {}  {}  last used {}\n", verb, n.hash, terminal_text(or_dash(n.op)),
               terminal_text(or_dash(n.id)), human_size(n.bytes), format_time(n.last_used, false));
  }
  for (const CachedNode& n : r.in_use) {
    fmt::print("kept {}  {}  {}  (in use by a running process)\n", n.hash,
               terminal_text(or_dash(n.op)), terminal_text(or_dash(n.id)));
  }
  for (const fs::path& p : r.unexpected_removed)
    fmt::print("removed {} (not a folder where the cache expects one; never followed)\n",
               p.string());
  for (const CachedMemoEntry& m : r.memo_removed) {
    fmt::print("{} memo {}  {}  {}  last used {}\n", verb, m.key,
               terminal_text(or_dash(m.function)), human_size(m.bytes),
               format_time(m.last_used, false));
  }
  for (const CachedMemoEntry& m : r.memo_in_use) {
    fmt::print("kept memo {}  {}  (in use by a running process)\n", m.key,
               terminal_text(or_dash(m.function)));
  }
  uint64_t freed = 0;
  for (const CachedNode& n : r.removed) freed += n.bytes;
  for (const CachedMemoEntry& m : r.memo_removed) freed += m.bytes;
  const size_t memo_seen = r.memo_removed.size() + r.memo_in_use.size();
  fmt::print(
      "{} {} node{}{} ({}); {} in use kept; cache {} -> {}\n", verb, r.removed.size(),
      r.removed.size() == 1 ? "" : "s",
      memo_seen == 0 ? "" : " and " + plural(r.memo_removed.size(), "memo entry", "memo entries"),
      human_size(freed), r.in_use.size() + r.memo_in_use.size(), human_size(r.bytes_before),
      human_size(r.bytes_after));
  return kExitOk;
}

}  // namespace cellflow::cli

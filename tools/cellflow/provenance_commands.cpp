#include "provenance_commands.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "cellflow/cache/artifacts.hpp"
#include "cellflow/cache/cache_scan.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"  // write_file_atomic of a user's --out file
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "cellflow/graph/provenance.hpp"
#include "cellflow/graph/suggest.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/store/cache_files.hpp"
#include "commands.hpp"

namespace cellflow::cli {
namespace {

namespace fs = std::filesystem;

// A field of a stored definition, escaped for the terminal: ids and params are
// anyone's text.
std::string str_field(const Value& v, const char* field) {
  const Value* f = v.find(field);
  if (f == nullptr) return "?";
  return terminal_text(f->is_string() ? f->as_string() : to_json_compact(*f));
}

std::string json_field(const Value& v, const char* field, const char* absent) {
  const Value* f = v.find(field);
  return f == nullptr ? absent : terminal_text(to_json_compact(*f));
}

std::string dims_text(const Value& def, const char* field) {
  const Value* f = def.find(field);
  if (f == nullptr || !f->is_array()) return "?";
  std::string out;
  for (const Value& d : f->as_array()) {
    if (!out.empty()) out += 'x';
    out += to_json_compact(d);
  }
  return terminal_text(out);
}

std::string state_text(const CachedNodeSummary& s) {
  if (!s.definition) return "no readable definition";
  const bool complete = s.cells_total > 0 && s.cells_present == s.cells_total;
  std::string text = fmt::format("{} ({}/{} cells)", complete ? "complete" : "partial",
                                 s.cells_present, s.cells_total);
  if (s.complete_marker && !complete) text += ", completion marker stale";
  return text;
}

void print_inputs(const fs::path& root, const Value& def, bool tree, int depth,
                  std::set<std::string>& shown) {
  const Value* inputs = def.find("inputs");
  if (inputs == nullptr || !inputs->is_array()) return;
  const std::string indent(static_cast<size_t>(2 * depth + 4), ' ');
  for (const Value& in : inputs->as_array()) {
    const std::string id = str_field(in, "id");
    const std::string hash = str_field(in, "hash");
    if (!is_node_hash(hash)) {
      fmt::print("{}{} {} (malformed hash)\n", indent, id, hash);
      continue;
    }
    std::optional<CachedNodeSummary> s;
    try {
      s = describe_cached_node(root, hash);
    } catch (const InvalidArgument&) {
    }
    if (!s) {
      fmt::print("{}{} {} (not in the cache)\n", indent, id, hash);
      continue;
    }
    const std::string op = s->definition ? str_field(*s->definition, "op") : "?";
    fmt::print("{}{} {} {} {}\n", indent, id, hash, op, state_text(*s));
    if (tree && s->definition) {
      if (!shown.insert(hash).second) {
        fmt::print("{}  (inputs shown above)\n", indent);
        continue;
      }
      print_inputs(root, *s->definition, tree, depth + 1, shown);
    }
  }
}

int show_memo_entry(Env& env, const fs::path& root, const std::string& key, const Value& e) {
  const fs::path entry = memo_entry_path(root, key);
  fmt::print("memo entry {} ({} version {})\n", str_field(e, "key"), str_field(e, "function"),
             str_field(e, "version"));
  fmt::print("  path       {}\n", terminal_text(entry.string()));
  fmt::print("  result     {} ({})\n", str_field(e, "result_type"), json_field(e, "result", "?"));
  fmt::print("  created    {} ({} s to compute)\n", str_field(e, "created"),
             str_field(e, "seconds"));
  if (const Value* args = e.find("arguments"); args != nullptr && args->is_array()) {
    fmt::print("  arguments\n");
    for (const Value& a : args->as_array()) {
      const Value* v = a.find("value");
      const Value* ignored = a.find("ignored");
      const std::string value =
          ignored != nullptr && ignored->is_bool() && ignored->as_bool() ? "(ignored)"
          : v != nullptr
              ? terminal_text(to_json_compact(*v))
              : fmt::format("({} bytes, xxh3 {})", str_field(a, "bytes"), str_field(a, "xxh3"));
      fmt::print("    {}: {} = {}\n", str_field(a, "index"), str_field(a, "type"), value);
    }
  }
  const auto artifacts = has_memo_artifacts(env, key)
                             ? ArtifactWriter(memo_artifacts_path(root, key)).list()
                             : std::vector<ArtifactInfo>{};
  fmt::print("  artifacts{}\n", artifacts.empty() ? " none" : "");
  for (const ArtifactInfo& a : artifacts)
    fmt::print("    {}  {}\n", terminal_text(a.name), human_size(a.bytes));
  return kExitOk;
}

bool is_lower_hex(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

std::string short_list(const std::vector<std::string>& items) {
  constexpr size_t kShown = 8;
  std::string out;
  for (size_t i = 0; i < items.size() && i < kShown; ++i) out += (i == 0 ? "" : ", ") + items[i];
  if (items.size() > kShown) out += fmt::format(", and {} more", items.size() - kShown);
  return out;
}

/// The hash `cache show` names: a whole hash, a unique prefix of a node's hash
/// or a memo entry's key, or (with args.node_id) node NODE_ID of graph HASH.
std::string resolve_show_target(const fs::path& root, const ProvenanceArgs& args) {
  const std::shared_ptr<Env> env = open_existing_cache(root);
  if (args.node_id) {
    const Graph graph = load_cli_graph(args.hash, std::nullopt);  // hashes need no cache
    std::vector<std::string> ids;
    for (const GraphNode& n : graph.nodes()) {
      if (n.def.id != *args.node_id) {
        ids.push_back(n.def.id);
        continue;
      }
      if (!env || node_folder_state(*env, n.hash).folder == EntryKind::kMissing)
        throw Error(fmt::format(
            "cache show: node \"{}\" of {} (op {}, hash {}) is not in the cache {} (`cellflow run "
            "{} --output {}` computes it)",
            n.def.id, args.hash, n.def.op, n.hash, root.string(), args.hash, n.def.id));
      return n.hash;
    }
    throw UsageError(fmt::format("cache show: {} has no node \"{}\"{} (nodes: {})", args.hash,
                                 *args.node_id, did_you_mean(*args.node_id, ids), short_list(ids)));
  }
  if (is_node_hash(args.hash)) return args.hash;
  if (!is_lower_hex(args.hash) || args.hash.size() > 32) {
    const bool graph_file = args.hash.ends_with(".json") || fs::is_regular_file(args.hash);
    throw UsageError(fmt::format(
        "cache show: \"{}\" is {}", args.hash,
        graph_file ? "a graph file: give the node's id after it (cache show GRAPH.json NODE_ID)"
                   : "not a node hash (32 lowercase hex characters), a prefix of one, or "
                     "GRAPH.json NODE_ID"));
  }
  if (!env || !is_cache(*env))
    throw UsageError(fmt::format("cache show: {} is not a cellflow cache", root.string()));
  // Node hashes and memo keys that start with the prefix.
  std::vector<std::string> known = list_node_hashes(root);
  for (const CachedMemoEntry& m : scan_memo_entries(root)) known.push_back(m.key);
  std::vector<std::string> matches;
  for (const std::string& h : known)
    if (h.starts_with(args.hash)) matches.push_back(h);
  if (matches.size() == 1) return matches.front();
  if (matches.size() > 1) {
    std::vector<std::string> described;
    for (const std::string& h : matches) {
      std::string what = "memo entry";
      if (node_folder_state(*env, h).folder != EntryKind::kMissing) {
        const auto def = stored_definition(root, h);
        what = def ? str_field(*def, "id") + " " + str_field(*def, "op") : "no definition";
      }
      described.push_back(fmt::format("{} ({})", h, what));
    }
    throw UsageError(fmt::format("cache show: \"{}\" is ambiguous: {} hashes start with it: {}",
                                 args.hash, matches.size(), short_list(described)));
  }
  // None: the hashes that share the longest beginning with it, if any.
  size_t best = 0;
  std::vector<std::string> nearest;
  for (const std::string& h : known) {
    const size_t common = static_cast<size_t>(
        std::mismatch(args.hash.begin(), args.hash.end(), h.begin(), h.end()).first -
        args.hash.begin());
    if (common == 0 || common < best) continue;
    if (common > best) nearest.clear();
    best = common;
    nearest.push_back(h);
  }
  std::string hint;
  if (!nearest.empty() && nearest.size() <= 3) {
    for (size_t i = 0; i < nearest.size(); ++i)
      hint += fmt::format("{}\"{}\"", i == 0 ? "" : " or ", nearest[i]);
    hint = " (did you mean " + hint + "?)";
  }
  throw UsageError(
      fmt::format("cache show: no node or memo entry in {} has a hash starting with "
                  "\"{}\"{}",
                  root.string(), args.hash, hint));
}

}  // namespace

bool strict_code_requested() {
  const char* v = std::getenv(kStrictCodeEnv);
  return v != nullptr && *v != '\0' && std::string_view(v) != "0";
}

Durability durability_requested() {
  const char* v = std::getenv(kDurabilityEnv);
  return v != nullptr && std::string_view(v) == "power-cut" ? Durability::kPowerCut
                                                            : Durability::kProcess;
}

int cache_show_command(const std::optional<std::string>& cache, const ProvenanceArgs& args) {
  const fs::path root = cache_root_of(cache);
  const std::string hash = resolve_show_target(root, args);
  const auto env = open_existing_cache(root);
  if (env && node_folder_state(*env, hash).folder == EntryKind::kMissing) {
    if (const auto entry = read_memo_entry(*env, hash))
      return show_memo_entry(*env, root, hash, *entry);
  }
  const CachedNodeSummary s = describe_cached_node(root, hash);
  if (!s.definition) {
    fmt::print("node {}\n  path       {}\n  state      no readable definition (.zattrs)\n", s.hash,
               terminal_text(s.path.string()));
    return kExitFailed;
  }
  const Value& d = *s.definition;
  fmt::print("node {} (id \"{}\", op {} version {})\n", s.hash, str_field(d, "id"),
             str_field(d, "op"), str_field(d, "version"));
  fmt::print("  path       {}\n", terminal_text(s.path.string()));
  fmt::print("  params     {}\n", json_field(d, "params", "{}"));
  if (s.table) {
    // Rows are known once every cell is stored; the count is as stored (an op
    // that merges rows across cells, like label.stats, may give fewer).
    const StoredTable t = summarize_stored_table(env, hash);
    const bool complete = s.cells_total > 0 && s.cells_present == s.cells_total;
    fmt::print("  output     {}{}, cells {} of {}\n",
               table_text(t.columns, complete ? std::optional<int64_t>(t.rows) : std::nullopt),
               complete ? " stored" : "", dims_text(d, "cell_shape"), dims_text(d, "shape"));
  } else {
    fmt::print("  output     {} {}, cells {}\n", str_field(d, "dtype"), dims_text(d, "shape"),
               dims_text(d, "cell_shape"));
  }
  if (d.find("identity") != nullptr) fmt::print("  identity   {}\n", str_field(d, "identity"));
  if (const Value* code = d.find("code"))
    fmt::print("  code       {} build-id {}\n", str_field(*code, "library"),
               str_field(*code, "build_id"));
  fmt::print("  state      {}\n", state_text(s));
  fmt::print("  size       {}\n", human_size(s.bytes));
  const Value* inputs = d.find("inputs");
  const bool any_inputs = inputs != nullptr && inputs->is_array() && !inputs->as_array().empty();
  fmt::print("  inputs{}\n", any_inputs ? "" : "     none (a source)");
  std::set<std::string> shown{s.hash};
  print_inputs(root, d, args.tree, 0, shown);
  fmt::print("  artifacts{}\n", s.artifacts.empty() ? "  none" : "");
  for (const ArtifactInfo& a : s.artifacts)
    fmt::print("    {}  {}\n", terminal_text(a.name), human_size(a.bytes));
  return kExitOk;
}

int graph_from_cache_command(const std::string& cache, const ProvenanceArgs& args) {
  const fs::path root = cache_root_of(cache);
  if (!is_node_hash(args.hash))
    throw UsageError(fmt::format(
        "graph --from-cache: \"{}\" is not a node hash (32 lowercase hex characters)", args.hash));
  const CacheProvenance p = graph_from_cache(root, args.hash);
  // Only a graph that reproduces the stored hashes is worth writing.
  build_from_cache(p, nodes::builtin_registry(), root);
  const std::string json = save_graph(p.def);
  if (!args.out) {
    fmt::print("{}", json);
    return kExitOk;
  }
  write_file_atomic(*args.out, json);
  fmt::print(stderr, "wrote {} ({} node{}, output \"{}\"{})\n", *args.out, p.def.nodes.size(),
             p.def.nodes.size() == 1 ? "" : "s", p.target_id,
             p.strict_code ? "; its hashes include op build-ids: run it with --strict-code" : "");
  return kExitOk;
}

int replay_command(const ProvenanceArgs& args) {
  const fs::path root = cache_root_of(args.cache);
  if (!is_node_hash(args.hash))
    throw UsageError(
        fmt::format("replay: \"{}\" is not a node hash (32 lowercase hex characters)", args.hash));
  RunOptions options;
  options.threads = args.threads;
  const ReplayResult r = replay_from_cache(root, args.hash, nodes::builtin_registry(), options);
  if (args.quiet) return kExitOk;
  for (size_t i : r.graph.ancestors({r.node})) {
    const GraphNode& n = r.graph.nodes()[i];
    const NodeReport& nr = r.report.nodes[i];
    fmt::print("{} {} {}: {} computed, {} loaded, {} cells{}\n",
               i == r.node ? "replayed" : "input   ", n.hash, terminal_text(n.def.id),
               nr.cells_computed, nr.cells_loaded, nr.cells_total,
               i == r.node ? (nr.complete ? ", complete" : ", INCOMPLETE") : "");
  }
  fmt::print("wall time {:.3f} s, cache {}\n", r.report.wall_seconds, root.string());
  return r.report.nodes[r.node].complete ? kExitOk : kExitFailed;
}

}  // namespace cellflow::cli

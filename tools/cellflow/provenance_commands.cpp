#include "provenance_commands.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "cellflow/cache/artifacts.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"  // write_file_atomic of a user's --out file
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "cellflow/graph/provenance.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/store/cache_files.hpp"
#include "commands.hpp"

namespace cellflow::cli {
namespace {

namespace fs = std::filesystem;

std::string str_field(const Value& v, const char* field) {
  const Value* f = v.find(field);
  if (f == nullptr) return "?";
  return f->is_string() ? f->as_string() : to_json_compact(*f);
}

std::string dims_text(const Value& def, const char* field) {
  const Value* f = def.find(field);
  if (f == nullptr || !f->is_array()) return "?";
  std::string out;
  for (const Value& d : f->as_array()) {
    if (!out.empty()) out += 'x';
    out += to_json_compact(d);
  }
  return out;
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
  fmt::print("  path       {}\n", entry.string());
  fmt::print("  result     {} ({})\n", str_field(e, "result_type"),
             e.find("result") ? to_json_compact(*e.find("result")) : "?");
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
              ? to_json_compact(*v)
              : fmt::format("({} bytes, xxh3 {})", str_field(a, "bytes"), str_field(a, "xxh3"));
      fmt::print("    {}: {} = {}\n", str_field(a, "index"), str_field(a, "type"), value);
    }
  }
  const auto artifacts = has_memo_artifacts(env, key)
                             ? ArtifactWriter(memo_artifacts_path(root, key)).list()
                             : std::vector<ArtifactInfo>{};
  fmt::print("  artifacts{}\n", artifacts.empty() ? " none" : "");
  for (const ArtifactInfo& a : artifacts) fmt::print("    {}  {}\n", a.name, human_size(a.bytes));
  return kExitOk;
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
  if (!is_node_hash(args.hash))
    throw UsageError(fmt::format(
        "cache show: \"{}\" is not a node hash (32 lowercase hex characters)", args.hash));
  if (const auto env = open_existing_cache(root);
      env && node_folder_state(*env, args.hash).folder == EntryKind::kMissing) {
    if (const auto entry = read_memo_entry(*env, args.hash))
      return show_memo_entry(*env, root, args.hash, *entry);
  }
  const CachedNodeSummary s = describe_cached_node(root, args.hash);
  if (!s.definition) {
    fmt::print("node {}\n  path       {}\n  state      no readable definition (.zattrs)\n", s.hash,
               s.path.string());
    return kExitFailed;
  }
  const Value& d = *s.definition;
  fmt::print("node {} (id \"{}\", op {} version {})\n", s.hash, str_field(d, "id"),
             str_field(d, "op"), str_field(d, "version"));
  fmt::print("  path       {}\n", s.path.string());
  fmt::print("  params     {}\n", d.find("params") ? to_json_compact(*d.find("params")) : "{}");
  if (s.table) {
    fmt::print("  output     a table, rows per cell of {}, cells {}\n", dims_text(d, "shape"),
               dims_text(d, "cell_shape"));
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
  for (const ArtifactInfo& a : s.artifacts) fmt::print("    {}  {}\n", a.name, human_size(a.bytes));
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
               i == r.node ? "replayed" : "input   ", n.hash, n.def.id, nr.cells_computed,
               nr.cells_loaded, nr.cells_total,
               i == r.node ? (nr.complete ? ", complete" : ", INCOMPLETE") : "");
  }
  fmt::print("wall time {:.3f} s, cache {}\n", r.report.wall_seconds, root.string());
  return r.report.nodes[r.node].complete ? kExitOk : kExitFailed;
}

}  // namespace cellflow::cli

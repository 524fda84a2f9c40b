#include "commands.hpp"

#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <utility>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/files.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/cache/memory_cache.hpp"
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "cellflow/graph/mpi.hpp"
#include "cellflow/graph/printable.hpp"
#include "cellflow/graph/suggest.hpp"
#include "cellflow/graph/value.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/nodes/image_export.hpp"
#include "cellflow/nodes/zarr_export.hpp"
#include "cellflow/plugins/loader.hpp"
#include "dot_state.hpp"
#include "progress.hpp"
#include "provenance_commands.hpp"
#include "subprocess.hpp"

namespace fs = std::filesystem;

namespace cellflow::cli {
namespace {

/// The cache root the user asked for, absolute so that reported paths work
/// from any directory.
fs::path resolve_cache_root(const std::optional<std::string>& cache) {
  fs::path root = cache ? fs::path(*cache) : CacheDirectory::default_root();
  root = fs::absolute(root).lexically_normal();
  if (!root.has_filename() && root.has_parent_path() && root != root.root_path()) {
    root = root.parent_path();  // "/tmp/cache/" -> "/tmp/cache"
  }
  return root;
}

/// Loads and validates the graph. Nothing touches the disk besides reading the
/// graph file: an invalid graph leaves the cache untouched.
Graph load_graph(const std::string& path, std::optional<fs::path> cache_root) {
  GraphDef def;
  try {
    def = load_graph_file(path);
  } catch (const IoError& e) {
    throw UsageError(e.what());  // a graph file that cannot be read is bad usage
  }
  GraphOptions options;
  options.cache_root = std::move(cache_root);
  options.strict_code = strict_code_requested();  // --strict-code
  options.durability = durability_requested();    // --durability
  return Graph::build(std::move(def), nodes::builtin_registry(), std::move(options));
}

std::string graph_source(const Graph& graph, const std::string& path) {
  return graph.def().source.empty() ? path : graph.def().source;
}

/// The index of node `id`, or a usage error listing the known ids.
size_t find_node(const Graph& graph, const std::string& graph_path, const std::string& id,
                 std::string_view what) {
  const auto& nodes = graph.nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].def.id == id) return i;
  }
  std::string known;
  for (const GraphNode& node : nodes) known += (known.empty() ? "" : ", ") + node.def.id;
  throw UsageError(fmt::format("{}: {} \"{}\" is not a node of the graph (nodes: {})",
                               graph_source(graph, graph_path), what, id, known));
}

void apply_memory_budget(const std::optional<std::string>& memory) {
  if (!memory) return;
  const uint64_t budget = parse_size(*memory, "--memory");
  // Below 64 KiB hardly a cell fits: almost always a missing unit.
  constexpr uint64_t kMinBudget = uint64_t{64} << 10;
  if (budget < kMinBudget)
    throw UsageError(fmt::format(
        "--memory {} is {} bytes, too small to hold a cell: give at least 64K (e.g. 512M, 2G)",
        *memory, budget));
  MemoryCache::global().set_budget(budget);
}

int64_t peak_rss_bytes() {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

/// Routes library warnings through the progress display (so they do not
/// tear it) while it exists; restores the previous sink when it goes out of scope.
class LogAboveProgress {
 public:
  explicit LogAboveProgress(TerminalProgress* progress)
      : previous_(set_log_sink(stderr_log_sink(progress))) {}
  ~LogAboveProgress() { set_log_sink(std::move(previous_)); }
  LogAboveProgress(const LogAboveProgress&) = delete;
  LogAboveProgress& operator=(const LogAboveProgress&) = delete;

 private:
  LogSink previous_;
};

/// Materializes `targets` under `policy` (retries, timeouts, worker
/// processes, event log; see RunSession), with a progress display when stderr
/// is a terminal.
RunReport compute(const Graph& graph, std::vector<size_t> targets, const ComputeOptions& c,
                  bool quiet, const RunPolicy& policy = {}) {
  RunSession session(graph, std::move(targets), policy, c.graph_path, c.memory);
  std::unique_ptr<TerminalProgress> progress;
  if (!quiet && isatty(STDERR_FILENO) == 1) {
    progress = std::make_unique<TerminalProgress>(graph, &session.tally());
  }
  const LogAboveProgress log_sink(progress.get());
  RunOptions options;
  options.threads = c.threads;
  // The process reads nothing of the intermediates after the run.
  options.release_unpersisted = true;
  // Isolated cells: a thread per worker process, even past the core count.
  std::unique_ptr<WorkerSlots> slots;
  if (policy.isolate && c.threads > 0) slots = std::make_unique<WorkerSlots>(c.threads);
  if (progress) {
    options.on_progress = [p = progress.get()](const std::vector<NodeProgress>& nodes) {
      p->update(nodes);
    };
  }
  return session.run(std::move(options));
}

/// The report of every node, indexed like graph.nodes() (zeros for nodes the
/// run did not touch).
std::vector<NodeReport> reports_by_node(const Graph& graph, const RunReport& report) {
  std::vector<NodeReport> by_node(graph.nodes().size());
  for (size_t i = 0; i < by_node.size(); ++i) {
    by_node[i].node = i;
    const ImageInfo& info = graph.nodes()[i].info;
    by_node[i].cells_total = CellGrid(info.shape, info.cell_shape).num_cells();
  }
  for (const NodeReport& r : report.nodes) {
    if (r.node < by_node.size()) by_node[r.node] = r;
  }
  return by_node;
}

/// What a node's output is, for the summaries: a table's columns and rows
/// (known once the run completed it) instead of its cells' u8 bytes.
struct OutputFacts {
  bool table = false;
  std::vector<std::string> columns;
  std::optional<int64_t> rows;
  std::string text;  // "f32 40x48x56" or table_text()
};

std::vector<OutputFacts> output_facts(const Graph& graph, const std::vector<NodeReport>& reports) {
  std::vector<OutputFacts> out;
  for (size_t i = 0; i < graph.nodes().size(); ++i) {
    const GraphNode& node = graph.nodes()[i];
    OutputFacts f;
    if (node.info.kind != OutputKind::kTable) {
      f.text = fmt::format("{} {}", dtype_name(node.info.dtype), fmt::join(node.info.shape, "x"));
      out.push_back(std::move(f));
      continue;
    }
    f.table = true;
    f.columns = node.kernel->table_columns();
    if (reports[i].complete) {
      // Every cell is stored: reading the merged table computes nothing.
      const Table t = graph.table(i);
      f.columns = t.columns();
      f.rows = static_cast<int64_t>(t.num_rows());
    }
    f.text = table_text(f.columns, f.rows, /*names=*/false);
    out.push_back(std::move(f));
  }
  return out;
}

void print_summary_table(const Graph& graph, const std::vector<NodeReport>& reports,
                         const std::vector<OutputFacts>& outputs, const RunReport& report,
                         const fs::path& cache_root, std::FILE* out) {
  size_t id_width = 4;
  size_t op_width = 2;
  size_t output_width = 6;
  for (size_t i = 0; i < graph.nodes().size(); ++i) {
    id_width = std::max(id_width, terminal_text(graph.nodes()[i].def.id).size());
    op_width = std::max(op_width, terminal_text(graph.nodes()[i].def.op).size());
    output_width = std::max(output_width, outputs[i].text.size());
  }
  fmt::print(out, "{:<{}}  {:<{}}  {:<{}}  {:<32}  {:>8}  {:>8}  {:>8}  {:>9}\n", "node", id_width,
             "op", op_width, "output", output_width, "hash", "computed", "loaded", "total",
             "seconds");
  for (size_t i = 0; i < graph.nodes().size(); ++i) {
    const GraphNode& node = graph.nodes()[i];
    const NodeReport& r = reports[i];
    fmt::print(out, "{:<{}}  {:<{}}  {:<{}}  {:<32}  {:>8}  {:>8}  {:>8}  {:>9.3f}\n",
               terminal_text(node.def.id), id_width, terminal_text(node.def.op), op_width,
               outputs[i].text, output_width, node.hash, r.cells_computed, r.cells_loaded,
               r.cells_total, r.seconds);
  }
  fmt::print(out, "wall time {:.3f} s, peak RSS {:.1f} MiB, cache {}\n", report.wall_seconds,
             static_cast<double>(peak_rss_bytes()) / (1024.0 * 1024.0),
             terminal_text(cache_root.string()));
}

void write_summary_json(const std::string& file, const std::string& graph_path, const Graph& graph,
                        const std::vector<NodeReport>& reports,
                        const std::vector<OutputFacts>& outputs, const RunReport& report,
                        const fs::path& cache_root) {
  Value nodes = Value::array();
  for (size_t i = 0; i < graph.nodes().size(); ++i) {
    const GraphNode& node = graph.nodes()[i];
    const NodeReport& r = reports[i];
    Value v(Value::Object{
        {"id", node.def.id},
        {"op", node.def.op},
        {"hash", node.hash},
        {"path", (cache_root / node.hash).string()},
        {"kind", outputs[i].table ? "table" : "image"},
        {"dtype", std::string(dtype_name(node.info.dtype))},
        {"shape", Value::list(node.info.shape.to_vector())},
        {"cell_shape", Value::list(node.info.cell_shape.to_vector())},
        {"cells_total", r.cells_total},
        {"cells_computed", r.cells_computed},
        {"cells_loaded", r.cells_loaded},
        {"cells_corrupt", r.cells_corrupt},
        {"seconds", r.seconds},
        {"persisted", node.persist},
    });
    if (outputs[i].table) {
      Value columns = Value::array();
      for (const std::string& c : outputs[i].columns) columns.as_array().emplace_back(c);
      v.set("columns", std::move(columns));
      if (outputs[i].rows) v.set("rows", *outputs[i].rows);
    }
    nodes.as_array().push_back(std::move(v));
  }
  const Value summary(Value::Object{
      {"graph", graph_path},
      {"cache", cache_root.string()},
      {"wall_seconds", report.wall_seconds},
      {"peak_rss_bytes", peak_rss_bytes()},
      {"nodes", std::move(nodes)},
  });
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << to_json(summary);
  out.close();
  if (!out) throw IoError(fmt::format("{}: cannot write the summary", file));
}

std::string arity(const Op& op) {
  const int lo = op.min_inputs();
  const int hi = op.max_inputs();
  const auto inputs = [](int n) { return fmt::format("{} input{}", n, n == 1 ? "" : "s"); };
  if (hi == lo) return inputs(lo);
  if (hi < 0 || hi == INT_MAX) return fmt::format("{} or more inputs", lo);
  return fmt::format("{} to {} inputs", lo, hi);
}

}  // namespace

std::string terminal_text(std::string_view text, bool one_line) {
  return printable_text(text, one_line);
}

std::string table_text(const std::vector<std::string>& columns, std::optional<int64_t> rows,
                       bool names) {
  if (columns.empty()) return "table, columns not known yet (no cell stored)";
  std::string text =
      fmt::format("table, {} column{}", columns.size(), columns.size() == 1 ? "" : "s");
  if (names) text += " (" + terminal_text(fmt::format("{}", fmt::join(columns, ", "))) + ")";
  if (rows) text += fmt::format(", {} row{}", *rows, *rows == 1 ? "" : "s");
  return text;
}

LogSink stderr_log_sink(TerminalProgress* progress) {
  return [progress](LogLevel level, const std::string& message) {
    if (level < LogLevel::kWarning) return;
    const std::string line =
        fmt::format("cellflow: {}: {}", level == LogLevel::kWarning ? "warning" : "error",
                    terminal_text(message));
    if (progress != nullptr) {
      progress->message(line);
    } else {
      fmt::print(stderr, "{}\n", line);
    }
  };
}

void load_plugins(const std::vector<std::string>& paths) {
  plugins::load_plugins_from_env(nodes::builtin_registry());
  for (const std::string& path : paths) plugins::load_plugin(path, nodes::builtin_registry());
}

std::string human_size(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, units[u]);
}

fs::path cache_root_of(const std::optional<std::string>& cache) {
  return resolve_cache_root(cache);
}

Graph load_cli_graph(const std::string& path, std::optional<fs::path> cache_root) {
  return load_graph(path, std::move(cache_root));
}

int run_command(const RunArgs& args_in) {
  RunArgs args = args_in;
  // Under an MPI launcher every rank runs the graph collectively; rank 0 alone
  // prints and writes the summary (aggregated over ranks).
  bool lead_rank = true;
  if (args.policy.mpi || mpi::launched()) {
    if (!mpi::available()) throw UsageError("--mpi: this cellflow was built without MPI");
    args.policy.mpi = true;
    lead_rank = mpi::init().rank == 0;
    if (!lead_rank) args.quiet = true;
  }
  const ComputeOptions& c = args.compute;
  apply_memory_budget(c.memory);
  const fs::path cache_root = resolve_cache_root(c.cache);
  const Graph graph = load_graph(c.graph_path, cache_root);
  std::vector<size_t> targets;
  for (const std::string& id : args.outputs) {
    targets.push_back(find_node(graph, c.graph_path, id, "--output"));
  }

  const RunReport report = compute(graph, targets, c, args.quiet, args.policy);
  const std::vector<NodeReport> reports = reports_by_node(graph, report);
  // Only for what is printed or written (a table node's rows are read for it).
  const bool describe = !args.quiet || (args.summary_json && lead_rank);
  const std::vector<OutputFacts> outputs =
      describe ? output_facts(graph, reports) : std::vector<OutputFacts>{};
  if (args.summary_json && lead_rank) {
    write_summary_json(*args.summary_json, c.graph_path, graph, reports, outputs, report,
                       cache_root);
  }
  // With --progress-json -, stdout holds JSON lines only: the table goes to stderr.
  if (!args.quiet) {
    const bool json_on_stdout = args.policy.progress_json && *args.policy.progress_json == "-";
    print_summary_table(graph, reports, outputs, report, cache_root,
                        json_on_stdout ? stderr : stdout);
  }
  return kExitOk;
}

int ops_command(bool json, const std::optional<std::string>& name) {
  auto ops = nodes::builtin_registry().list();
  if (name) {
    // One op: NAME exactly, else a usage error naming the nearest ones.
    std::vector<std::string> names;
    for (const auto& op : ops) names.emplace_back(op->name());
    std::erase_if(ops, [&](const auto& op) { return op->name() != *name; });
    if (ops.empty())
      throw UsageError(fmt::format("ops: unknown op \"{}\"{} (`cellflow ops` lists them all)",
                                   *name, did_you_mean(*name, names)));
  }
  if (json) {
    Value list = Value::array();
    for (const auto& op : ops) {
      Value params = Value::array();
      for (const ParamSpec& p : op->params()) {
        params.as_array().emplace_back(Value::Object{
            {"name", p.name},
            {"type", std::string(param_type_name(p.type))},
            {"default", p.default_value},
            {"doc", p.doc},
            {"required", p.required},
        });
      }
      list.as_array().emplace_back(Value::Object{
          {"name", std::string(op->name())},
          {"version", op->version()},
          {"doc", std::string(op->doc())},
          {"inputs", Value::Object{{"min", op->min_inputs()}, {"max", op->max_inputs()}}},
          {"params", std::move(params)},
      });
    }
    fmt::print("{}", to_json(Value(Value::Object{{"ops", std::move(list)}})));
    return kExitOk;
  }
  for (const auto& op : ops) {
    fmt::print("{} (version {}, {})\n  {}\n", op->name(), op->version(), arity(*op), op->doc());
    const std::vector<ParamSpec> params = op->params();
    size_t name_width = 0;
    size_t type_width = 0;
    for (const ParamSpec& p : params) {
      name_width = std::max(name_width, p.name.size());
      type_width = std::max(type_width, param_type_name(p.type).size());
    }
    for (const ParamSpec& p : params) {
      const std::string dflt = p.required ? "required"
                               : p.default_value.is_null()
                                   ? "optional"
                                   : "default " + to_json_compact(p.default_value);
      fmt::print("    {:<{}}  {:<{}}  {}  {}\n", p.name, name_width, param_type_name(p.type),
                 type_width, p.doc, "(" + dflt + ")");
    }
    fmt::print("\n");
  }
  return kExitOk;
}

int graph_command(const GraphArgs& args) {
  if (args.from_cache) {
    ProvenanceArgs p;
    p.hash = args.graph_path;
    p.out = args.out;
    return graph_from_cache_command(*args.from_cache, p);
  }
  if (args.out) throw UsageError("graph: --out goes with --from-cache");
  if (args.graph_path.empty())
    throw UsageError("graph: give the GRAPH file (or --from-cache DIR HASH)");
  if (args.dot == args.hashes) throw UsageError("graph: give exactly one of --dot or --hashes");
  if (args.cache && !args.dot) throw UsageError("graph: --cache goes with --dot");
  // Hashes do not depend on where the cache lives: build memory-only.
  const Graph graph = load_graph(args.graph_path, std::nullopt);
  if (args.dot) {
    std::string dot = graph.to_dot();
    if (!dot.ends_with('\n')) dot += '\n';
    if (args.cache) dot = dot_with_cache_state(graph, dot, resolve_cache_root(args.cache));
    fmt::print("{}", dot);
  } else {
    for (const GraphNode& node : graph.nodes())
      fmt::print("{} {}\n", terminal_text(node.def.id), node.hash);
  }
  return kExitOk;
}

int export_command(const ExportArgs& args) {
  const ComputeOptions& c = args.compute;
  apply_memory_budget(c.memory);
  const fs::path cache_root = resolve_cache_root(c.cache);
  const Graph graph = load_graph(c.graph_path, cache_root);
  const size_t node = find_node(graph, c.graph_path, args.node_id, "node");
  // A table node exports to CSV only, and CSV holds only tables.
  const bool table = graph.nodes()[node].info.kind == OutputKind::kTable;
  const bool csv = fs::path(args.to).extension() == ".csv";
  if (table && !csv)
    throw UsageError(
        fmt::format("export: node \"{}\" is a table: export it to a .csv file (got \"{}\")",
                    args.node_id, args.to));
  if (!table && csv)
    throw UsageError(
        fmt::format("export: node \"{}\" is an image: .csv is for table nodes (got \"{}\")",
                    args.node_id, args.to));
  if (!args.format.empty() && !nodes::is_zarr_path(args.to))
    throw UsageError(
        fmt::format("export: --format {} is for .zarr and .ome.zarr outputs (got \"{}\")",
                    args.format, args.to));
  // NGFF (OME-Zarr) by the path, unless --format says which.
  const std::string format = !args.format.empty()               ? args.format
                             : nodes::is_ome_zarr_path(args.to) ? "ngff-0.4"
                                                                : "zarr2";
  const bool ngff = format.starts_with("ngff");
  if (args.levels != 1 && !ngff)
    throw UsageError(fmt::format(
        "export: --levels needs an .ome.zarr output or --format ngff-0.4 / ngff-0.5 (got \"{}\")",
        args.to));

  if (!args.labels.empty() && !ngff)
    throw UsageError(fmt::format(
        "export: --labels needs an .ome.zarr output or --format ngff-0.4 / ngff-0.5 (got \"{}\")",
        args.to));
  std::vector<size_t> wanted{node};
  for (const std::string& id : args.labels) {
    const size_t label = find_node(graph, c.graph_path, id, "label node");
    if (graph.nodes()[label].info.kind != OutputKind::kImage)
      throw UsageError(fmt::format("export: --labels \"{}\" is a table, not a label image", id));
    if (label == node)
      throw UsageError(fmt::format("export: --labels \"{}\" is the exported node itself", id));
    wanted.push_back(label);
  }

  compute(graph, wanted, c, /*quiet=*/false);
  const fs::path to(args.to);
  if (to.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(to.parent_path(), ec);
    if (ec)
      throw IoError(
          fmt::format("{}: cannot create the folder: {}", to.parent_path().string(), ec.message()));
  }
  if (table) {
    const std::string text = graph.table(node).to_csv();
    // Written aside and renamed into place: a failed write (a full disk)
    // leaves the previous export as it was.
    write_file_atomic(to, text);
    fmt::print("wrote {} (node {}, {})\n", args.to, args.node_id, graph.nodes()[node].hash);
    return kExitOk;
  }
  if (nodes::is_zarr_path(to)) {
    nodes::ZarrExportOptions zarr;
    zarr.levels = args.levels;
    zarr.downsample = nodes::parse_downsample(args.downsample);
    zarr.threads = c.threads;
    zarr.zarr_format = format == "zarr3" || format == "ngff-0.5" ? 3 : 2;
    const ImageInfo& info = graph.nodes()[node].info;
    zarr.space = info.space.filled(info.shape.rank());
    zarr.labels = info.labels;
    if (ngff) {
      std::vector<std::shared_ptr<CachedCellImage>> held;
      std::vector<nodes::LabelExport> labels;
      for (const std::string& id : args.labels) {
        held.push_back(graph.image(id));
        labels.push_back({id, held.back().get(), graph.node(id).info.space});
      }
      nodes::export_ome_zarr(*graph.image(node), to, zarr, labels);
    } else {
      nodes::export_zarr(*graph.image(node), to, zarr);
    }
    fmt::print("wrote {} (node {}, {})\n", args.to, args.node_id, graph.nodes()[node].hash);
    return kExitOk;
  }
  nodes::ExportOptions options;
  options.upscale = args.upscale;
  options.space = graph.nodes()[node].info.space;
  nodes::export_image(*graph.image(node), to, options);
  fmt::print("wrote {} (node {}, {})\n", args.to, args.node_id, graph.nodes()[node].hash);
  return kExitOk;
}

}  // namespace cellflow::cli

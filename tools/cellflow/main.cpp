// cellflow: the command-line program. Parses arguments with CLI11, calls the
// library through commands.cpp, and turns every error into one line on stderr
// and an exit code: 0 success, 1 a computation failed, 2 bad usage or an
// invalid graph.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>

#include "blockwise_command.hpp"
#include "cache_commands.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/graph/suggest.hpp"
#include "commands.hpp"
#include "provenance_commands.hpp"
#include "worker.hpp"

namespace {

using cellflow::cli::kExitFailed;
using cellflow::cli::kExitUsage;

int fail(int code, const std::string& message) {
  // One line, whatever the message holds, and no control characters.
  fmt::print(stderr, "cellflow: error: {}\n", cellflow::cli::terminal_text(message));
  return code;
}

void add_compute_options(CLI::App& cmd, cellflow::cli::ComputeOptions& c) {
  cmd.add_option("GRAPH", c.graph_path, "The graph (JSON)")->required();
  cmd.add_option("--cache", c.cache,
                 "Cache directory (default: $CELLFLOW_CACHE, else ./cellflow-cache)");
  cmd.add_option("--threads", c.threads, "Worker threads (0 = all cores)")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  cmd.add_option("--memory", c.memory,
                 "In-memory cell cache budget, e.g. 512M, 2G (default: $CELLFLOW_MEMORY, else 2G)");
}

int cli_main(int argc, char** argv) {
  cellflow::set_log_sink(cellflow::cli::stderr_log_sink());

  CLI::App app("cellflow: lazily evaluated, cached, cell-wise N-D image pipelines", "cellflow");
  app.set_version_flag("--version", CELLFLOW_VERSION);
  app.require_subcommand(1);
  app.footer("Exit codes: 0 success, 1 a computation failed, 2 bad usage or an invalid graph.");

  // --plugin is accepted by every command; plugins load before anything else runs.
  std::vector<std::string> plugin_paths;
  const auto add_plugin_option = [&plugin_paths](CLI::App* cmd) {
    cmd->add_option("--plugin", plugin_paths,
                    "Load the ops of this plugin library (repeatable; also $CELLFLOW_PLUGIN_PATH, "
                    "a colon-separated list of files and folders)");
  };

  cellflow::cli::RunArgs run;
  CLI::App* run_cmd = app.add_subcommand(
      "run", "Compute the graph's outputs (or the --output nodes), persisting every node");
  add_compute_options(*run_cmd, run.compute);
  add_plugin_option(run_cmd);
  run_cmd
      ->add_option("--output", run.outputs,
                   "Compute this node instead of the graph's outputs (repeatable)")
      ->allow_extra_args(false);
  run_cmd->add_option("--summary-json", run.summary_json,
                      "Write a JSON summary of every node (hash, path, cells computed/loaded)");
  run_cmd->add_flag("-q,--quiet", run.quiet, "No progress display and no summary table");
  run_cmd
      ->add_option(
          "--max-retries", run.policy.max_retries,
          "Retry a failing cell up to N times before the run fails (an op's own policy wins)")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  run_cmd
      ->add_option("--timeout", run.policy.timeout_seconds,
                   "Time limit in seconds per cell attempt, 0 = none (an op's own policy wins). "
                   "Cooperative in-process (ops that check for cancellation stop); with "
                   "--isolate the worker is killed")
      ->check(CLI::Validator(
          [](std::string& text) {
            double v = 0;
            if (!CLI::detail::lexical_cast(text, v) || !(v >= 0))
              return fmt::format("must be a number of seconds >= 0 (0 = none), got \"{}\"", text);
            return std::string();
          },
          "SECONDS>=0"))
      ->capture_default_str();
  run_cmd->add_flag(
      "--mpi", run.policy.mpi,
      "Run collectively over MPI ranks sharing the cache (automatic under mpirun/srun)");
  run_cmd->add_flag("--isolate", run.policy.isolate,
                    "Compute each cell in a worker process: a crashing or hung op costs only its "
                    "worker, and the cell is retried or reported");
  run_cmd->add_option("--progress-json", run.policy.progress_json,
                      "Append machine-readable events to FILE, one JSON object per line "
                      "(run_start, cell, progress, run_end); - for stdout");
  run_cmd->add_option("--trace", run.policy.trace,
                      "Write a Chrome/Perfetto trace (JSON) of the run to FILE: one event per cell "
                      "computed, loaded, stored or waited for, per thread (and per rank under MPI: "
                      "FILE.rank<N>.json for rank N > 0); open it in https://ui.perfetto.dev");

  cellflow::cli::WorkerArgs worker;
  CLI::App* worker_cmd =
      app.add_subcommand("worker", "Compute one cell (used by run --isolate)")->group("");
  worker_cmd->add_option("GRAPH", worker.graph_path, "The graph (JSON)")->required();
  worker_cmd->add_option("--node", worker.node_id, "Node id")->required();
  worker_cmd->add_option("--cell", worker.cell, "Cell index, e.g. 1,0,2")->required();
  worker_cmd->add_option("--cache", worker.cache, "Cache directory")->required();
  worker_cmd->add_option("--memory", worker.memory, "In-memory cell cache budget");
  add_plugin_option(worker_cmd);

  cellflow::cli::BlockwiseArgs bw;
  CLI::App* bw_cmd = app.add_subcommand(
      "blockwise",
      "Run a blockwise task (JSON, docs/blockwise.md): an op applied block by block, in threads "
      "or worker processes, with retries, timeouts and done-checks; report done, skipped, failed "
      "and orphaned blocks");
  bw_cmd->add_option("TASK", bw.task_path, "The task (JSON)")->required();
  bw_cmd->add_option("--cache", bw.cache,
                     "Cache directory of graph-node inputs (default: $CELLFLOW_CACHE, else "
                     "./cellflow-cache)");
  bw_cmd->add_option("--threads", bw.threads, "Run N blocks at once in this process")
      ->check(CLI::Range(1, 4096));
  bw_cmd
      ->add_option("--workers", bw.workers,
                   "Run N blocks at once, each attempt in its own worker process (a crash or a "
                   "hang costs only that attempt)")
      ->check(CLI::Range(1, 4096));
  bw_cmd
      ->add_option("--timeout", bw.timeout_seconds,
                   "Time limit in seconds per block attempt, 0 = none (overrides the task's); "
                   "worker processes are killed, threads stop cooperatively")
      ->check(CLI::NonNegativeNumber);
  bw_cmd
      ->add_option("--max-retries", bw.max_retries,
                   "Attempts after a block's first failing one (overrides the task's)")
      ->check(CLI::Range(0, 1000));
  bw_cmd->add_option("--report-json", bw.report_json,
                     "Write the report (counts, and the ids of done, skipped, failed and orphaned "
                     "blocks) to FILE; - for stdout");
  bw_cmd->add_flag("--mpi", bw.mpi,
                   "Share the blocks with the other MPI ranks running this task (automatic "
                   "under mpirun/srun); rank 0 reports");
  bw_cmd->add_flag("--progress", bw.progress, "One line on stderr per finished block");
  bw_cmd->add_flag("-q,--quiet", bw.quiet, "No summary");
  add_plugin_option(bw_cmd);

  std::string bw_worker_task;
  std::string bw_worker_block;
  std::optional<std::string> bw_worker_cache;
  CLI::App* bw_worker_cmd =
      app.add_subcommand("blockwise-worker", "Process one block (used by blockwise --workers)")
          ->group("");
  bw_worker_cmd->add_option("TASK", bw_worker_task, "The task (JSON)")->required();
  bw_worker_cmd
      ->add_option("--block", bw_worker_block,
                   "The block: {\"id\", \"index\", \"read_roi\", \"write_roi\"}")
      ->required();
  bw_worker_cmd->add_option("--cache", bw_worker_cache, "Cache directory");
  add_plugin_option(bw_worker_cmd);

  cellflow::cli::CacheArgs cache_args;
  CLI::App* cache_cmd = app.add_subcommand(
      "cache", "Inspect and maintain a cache directory (safe while runs use it)");
  cache_cmd->require_subcommand(1);
  const auto add_cache_option = [&cache_args](CLI::App* cmd) {
    cmd->add_option("--cache", cache_args.cache,
                    "Cache directory (default: $CELLFLOW_CACHE, else ./cellflow-cache)");
  };
  CLI::App* cache_ls = cache_cmd->add_subcommand(
      "ls",
      "One line per node: hash, op, id, dtype, shape, size, complete|partial, last used; then "
      "one per memo entry (cellflow::Memo): key, function, version, result, size, last used");
  add_cache_option(cache_ls);
  cache_ls->add_flag("--json", cache_args.json, "As JSON");
  CLI::App* cache_verify = cache_cmd->add_subcommand(
      "verify", "Read and check every file; exit 0 only when the cache is clean");
  add_cache_option(cache_verify);
  cache_verify->add_flag("--repair", cache_args.repair,
                         "Delete damaged cells, damaged memo entries and stale temporary "
                         "files, clear completion markers of nodes that lost cells, rewrite "
                         "damaged metadata (exit 0 when everything was repaired)");
  CLI::App* cache_migrate = cache_cmd->add_subcommand(
      "migrate",
      "Bring a cache written by an older cellflow to this one's format (checks every cell, "
      "keeps the sound ones, nothing is recomputed); run it while nothing else uses the cache");
  cache_migrate->add_option("CACHE", cache_args.cache, "Cache directory (or --cache)");
  cache_migrate->add_option("--shard-cells", cache_args.shard_cells,
                            "Make the cache sharded (format 3): pack every complete image node "
                            "into Zarr v3 shards of at most N cells (512 is typical)");
  add_cache_option(cache_migrate);
  CLI::App* cache_gc = cache_cmd->add_subcommand(
      "gc",
      "Remove whole nodes and memo entries by age or size budget, or nodes by a graph to keep "
      "(never one in use)");
  add_cache_option(cache_gc);
  add_plugin_option(cache_gc);
  cache_gc->add_option("--older-than", cache_args.older_than_days,
                       "Remove nodes and memo entries not used for more than DAYS (fractions "
                       "allowed)");
  cache_gc->add_option("--max-size", cache_args.max_size,
                       "Remove least recently used nodes and memo entries until the cache "
                       "takes at most SIZE (e.g. 500M, 20G)");
  cache_gc->add_option("--keep-graph", cache_args.keep_graph,
                       "Remove every node that GRAPH.json does not use (memo entries are "
                       "left alone)");
  cache_gc->add_flag("--dry-run", cache_args.dry_run, "Only print what would be removed");

  bool ops_json = false;
  CLI::App* ops_cmd = app.add_subcommand("ops", "List the available ops with their params");
  ops_cmd->add_flag("--json", ops_json, "As JSON");
  std::optional<std::string> ops_name;
  ops_cmd->add_option("NAME", ops_name, "Show only this op");
  add_plugin_option(ops_cmd);

  cellflow::cli::GraphArgs graph;
  CLI::App* graph_cmd =
      app.add_subcommand("graph", "Show a graph: GraphViz (--dot) or node hashes (--hashes)");
  graph_cmd->add_option("GRAPH", graph.graph_path,
                        "The graph (JSON); with --from-cache, the HASH of a cached node");
  graph_cmd->add_option("--from-cache", graph.from_cache,
                        "Print the JSON graph that produced node HASH, rebuilt from the stored "
                        "definitions of this cache directory (hashes checked)");
  graph_cmd->add_option("--out", graph.out, "With --from-cache: write the graph to this file");
  graph_cmd->add_option("--cache", graph.cache,
                        "With --dot: colour each node by its state in this cache directory: "
                        "complete (green), partial (yellow), missing (grey), with k/n cells");
  add_plugin_option(graph_cmd);
  CLI::Option* dot = graph_cmd->add_flag("--dot", graph.dot, "Print the graph in GraphViz format");
  CLI::Option* hashes =
      graph_cmd->add_flag("--hashes", graph.hashes, "Print \"id hash\" for every node");
  dot->excludes(hashes);

  cellflow::cli::ExportArgs exp;
  CLI::App* export_cmd = app.add_subcommand(
      "export",
      "Write a node as .tif, .nrrd, .mha, .png, .zarr or .ome.zarr (computing what is missing)");
  add_compute_options(*export_cmd, exp.compute);
  add_plugin_option(export_cmd);
  export_cmd->add_option("NODE_ID", exp.node_id, "The node to export")->required();
  export_cmd->add_option("--to", exp.to, "Output file; the extension picks the format")->required();
  export_cmd->add_option("--upscale", exp.upscale, "Repeat each pixel NxN times (PNG)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  export_cmd
      ->add_option(
          "--levels", exp.levels,
          "Pyramid levels of an OME-Zarr export (.ome.zarr or --format ngff-*; 2x downsampling)")
      ->check(CLI::Range(1, 32))
      ->capture_default_str();
  export_cmd
      ->add_option(
          "--downsample", exp.downsample,
          "How OME-Zarr levels are made: auto (mean for floats and 8/16-bit integers, mode "
          "for 32/64-bit integer labels), mean, mode or max")
      ->check(CLI::IsMember({"auto", "mean", "mode", "max"}))
      ->capture_default_str();
  export_cmd
      ->add_option("--format", exp.format,
                   "Zarr flavour of a .zarr / .ome.zarr export: zarr2 or zarr3 (a plain array), "
                   "ngff-0.4 (OME-Zarr on Zarr v2) or ngff-0.5 (OME-Zarr on Zarr v3). Default: "
                   "ngff-0.4 for .ome.zarr, zarr2 for other .zarr paths")
      ->check(CLI::IsMember({"zarr2", "zarr3", "ngff-0.4", "ngff-0.5"}));
  export_cmd
      ->add_option("--labels", exp.labels,
                   "Label nodes written beside the image as OME-NGFF label images "
                   "(labels/<node id>, pyramid by mode); OME-Zarr exports only; repeat it or give "
                   "a comma-separated list")
      ->delimiter(',');

  // Provenance: cache show, replay (provenance_commands.cpp).
  cellflow::cli::ProvenanceArgs prov;
  CLI::App* cache_show = cache_cmd->add_subcommand(
      "show", "A node's definition, state, size, inputs (recursively with --tree) and artifacts");
  add_cache_option(cache_show);
  cache_show
      ->add_option("HASH", prov.hash,
                   "The node's hash (or a memo entry's key), a unique prefix of one, or a "
                   "GRAPH.json file followed by NODE_ID")
      ->required();
  cache_show->add_option("NODE_ID", prov.node_id,
                         "With GRAPH.json: the node whose hash the graph gives");
  cache_show->add_flag("--tree", prov.tree, "Show the inputs' inputs, up to the sources");
  CLI::App* replay_cmd = app.add_subcommand(
      "replay",
      "Complete a cached node (only its missing cells) from the cache's stored definitions");
  replay_cmd->add_option("HASH", prov.hash, "The node's hash")->required();
  replay_cmd->add_option("--cache", prov.cache,
                         "Cache directory (default: $CELLFLOW_CACHE, else ./cellflow-cache)");
  replay_cmd->add_option("--threads", prov.threads, "Worker threads (0 = all cores)")
      ->check(CLI::Range(0, 4096));
  replay_cmd->add_flag("-q,--quiet", prov.quiet, "No summary");
  add_plugin_option(replay_cmd);
  // --strict-code: an op's hash includes its library's build-id (README); set
  // through the environment so that worker processes inherit it.
  // --durability: what a committed cell survives (README "Durability"); also
  // through the environment, for worker processes.
  std::string durability;
  for (CLI::App* cmd : {run_cmd, export_cmd, replay_cmd}) {
    cmd->add_option("--durability", durability,
                    "What a committed cell survives: process (a killed process; default) or "
                    "power-cut (every cell and folder entry synced before it counts)")
        ->check(CLI::IsMember({"process", "power-cut"}));
  }
  // --shard-cells: a new cache stores complete nodes in shards (README "Sharded
  // nodes"); through the environment like --durability.
  std::optional<int64_t> shard_cells;
  for (CLI::App* cmd : {run_cmd, export_cmd, replay_cmd}) {
    cmd->add_option("--shard-cells", shard_cells,
                    "A cache this creates stores each complete image node in Zarr v3 shards of "
                    "at most N cells (e.g. 512; 0: one file per cell, the default); an existing "
                    "cache keeps its format (see cache migrate)")
        ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  }
  bool strict_code = false;
  for (CLI::App* cmd : {run_cmd, graph_cmd, export_cmd}) {
    cmd->add_flag("--strict-code", strict_code,
                  "Hash each op with the ELF build-id of its library: any rebuilt library "
                  "invalidates its nodes");
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
      return app.exit(e);  // --help, --version
    }
    const auto parsed = app.get_subcommands();
    if (parsed.empty() && argc > 1 && argv[1][0] != '-') {
      return fail(kExitUsage,
                  fmt::format("unknown command \"{}\"{} (commands: run, blockwise, ops, graph, "
                              "export, cache, replay; see 'cellflow --help')",
                              argv[1],
                              cellflow::did_you_mean(argv[1], {"run", "blockwise", "ops", "graph",
                                                               "export", "cache", "replay"})));
    }
    // The deepest command given, for its help and its names.
    CLI::App* cmd = parsed.empty() ? &app : parsed.front();
    while (!cmd->get_subcommands().empty()) cmd = cmd->get_subcommands().front();
    std::string hint;
    std::vector<std::string> flags;
    for (const CLI::Option* o : cmd->get_options())
      for (const std::string& n : o->get_lnames()) flags.push_back("--" + n);
    std::vector<std::string> subcommands;
    for (const CLI::App* sub : cmd->get_subcommands({}))
      if (!sub->get_group().empty()) subcommands.push_back(sub->get_name());
    for (int i = 1; i < argc && hint.empty(); ++i) {
      const std::string arg = argv[i];
      const std::string flag = arg.substr(0, arg.find('='));
      if (flag.starts_with("--") && std::find(flags.begin(), flags.end(), flag) == flags.end()) {
        hint = cellflow::did_you_mean(flag, flags);
      } else if (!subcommands.empty() && !arg.starts_with("-") && arg != cmd->get_name() &&
                 std::find(subcommands.begin(), subcommands.end(), arg) == subcommands.end()) {
        hint = cellflow::did_you_mean(arg, subcommands);
        if (!hint.empty()) hint = fmt::format(": unknown command \"{}\"{}", arg, hint);
      }
    }
    std::string help = "cellflow --help";
    if (cmd != &app) {
      help = " " + cmd->get_name() + " --help";
      for (CLI::App* p = cmd->get_parent(); p != nullptr && p != &app; p = p->get_parent())
        help = " " + p->get_name() + help;
      help = "cellflow" + help;
    }
    return fail(kExitUsage, fmt::format("{}{} (see '{}')", e.what(), hint, help));
  }

  // An empty --cache would resolve to the current folder's parent confusion
  // ("cannot make absolute path"): refuse it in words.
  for (const std::optional<std::string>* cache :
       {&run.compute.cache, &exp.compute.cache, &cache_args.cache, &graph.cache, &prov.cache,
        &worker.cache, &bw.cache}) {
    if (*cache && (*cache)->empty())
      return fail(kExitUsage,
                  "--cache must name a folder (got \"\"); leave it out to use $CELLFLOW_CACHE, "
                  "else ./cellflow-cache");
  }

  try {
    if (strict_code) ::setenv(cellflow::cli::kStrictCodeEnv, "1", 1);
    if (!durability.empty()) ::setenv(cellflow::cli::kDurabilityEnv, durability.c_str(), 1);
    if (shard_cells) ::setenv("CELLFLOW_SHARD_CELLS", std::to_string(*shard_cells).c_str(), 1);
    cellflow::cli::load_plugins(plugin_paths);
    run.policy.plugins = plugin_paths;  // worker processes load them too
    if (run_cmd->parsed()) return cellflow::cli::run_command(run);
    bw.plugins = plugin_paths;
    if (bw_cmd->parsed()) return cellflow::cli::blockwise_command(bw);
    if (bw_worker_cmd->parsed())
      return cellflow::cli::blockwise_worker_command(bw_worker_task, bw_worker_block,
                                                     bw_worker_cache);
    if (ops_cmd->parsed()) return cellflow::cli::ops_command(ops_json, ops_name);
    if (graph_cmd->parsed()) return cellflow::cli::graph_command(graph);
    if (export_cmd->parsed()) return cellflow::cli::export_command(exp);
    if (worker_cmd->parsed()) return cellflow::cli::worker_command(worker);
    if (cache_ls->parsed()) return cellflow::cli::cache_ls_command(cache_args);
    if (cache_verify->parsed()) return cellflow::cli::cache_verify_command(cache_args);
    if (cache_gc->parsed()) return cellflow::cli::cache_gc_command(cache_args);
    if (cache_migrate->parsed()) return cellflow::cli::cache_migrate_command(cache_args);
    if (cache_show->parsed()) return cellflow::cli::cache_show_command(cache_args.cache, prov);
    if (replay_cmd->parsed()) return cellflow::cli::replay_command(prov);
    return fail(kExitUsage, "no command given (see 'cellflow --help')");
  } catch (const cellflow::cli::UsageError& e) {
    return fail(kExitUsage, e.what());
  } catch (const cellflow::InvalidArgument& e) {
    return fail(kExitUsage, e.what());
  } catch (const cellflow::GraphError& e) {
    return fail(kExitUsage, e.what());
  } catch (const cellflow::PluginError& e) {
    return fail(kExitUsage, e.what());
  } catch (const std::exception& e) {
    return fail(kExitFailed, e.what());
  } catch (...) {
    return fail(kExitFailed, "unknown error");
  }
}

/// A write to stdout or stderr that failed (a full disk, a closed pipe) fails
/// the command: output that was lost is not a success.
int check_streams(int code) {
  errno = 0;
  if (std::fflush(stdout) != 0 || std::ferror(stdout) != 0) {
    const int err = errno;
    fmt::print(stderr, "cellflow: error: cannot write to standard output: {}\n",
               err != 0 ? std::strerror(err) : "write error");
    code = kExitFailed;
  }
  if (std::fflush(stderr) != 0 || std::ferror(stderr) != 0) code = kExitFailed;
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  int code = kExitFailed;
  try {
    code = cli_main(argc, argv);
  } catch (...) {
    // Only reachable if setting up the command line itself failed.
    code = kExitFailed;
  }
  return check_streams(code);
}

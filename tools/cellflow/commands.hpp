// The subcommands of the `cellflow` program. Each returns the process exit
// code or throws; main() turns exceptions into one line on stderr and an exit
// code (see UsageError). Not thread-safe: called once from main().
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/graph/graph.hpp"
#include "run_session.hpp"

namespace cellflow::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;  // a computation failed
inline constexpr int kExitUsage = 2;   // bad usage or an invalid graph

/// Bad usage found before anything ran (unreadable graph file, unknown
/// --output id, bad --memory): exit code 2 whatever the underlying error.
class UsageError : public Error {
  using Error::Error;
};

/// Options shared by the commands that compute (`run`, `export`).
struct ComputeOptions {
  std::string graph_path;
  std::optional<std::string> cache;
  int threads = 0;
  std::optional<std::string> memory;
};

struct RunArgs {
  ComputeOptions compute;
  std::vector<std::string> outputs;
  std::optional<std::string> summary_json;
  bool quiet = false;
  RunPolicy policy;  // --max-retries, --timeout, --isolate, --progress-json
};

struct GraphArgs {
  std::string graph_path;  // with from_cache: the node's hash
  bool dot = false;
  bool hashes = false;
  std::optional<std::string> from_cache;  // --from-cache DIR (provenance_commands.hpp)
  std::optional<std::string> out;         // --out FILE, with --from-cache
  std::optional<std::string> cache;       // --cache DIR, with --dot: colour by cache state
};

struct ExportArgs {
  ComputeOptions compute;
  std::string node_id;
  std::string to;
  int upscale = 1;
  int levels = 1;                   // .ome.zarr pyramid levels
  std::string downsample = "auto";  // .ome.zarr: auto, mean, mode or max
  std::string format;               // .zarr: zarr2, zarr3, ngff-0.4, ngff-0.5 ("" by extension)
  std::vector<std::string> labels;  // OME-Zarr: label nodes written as labels/<id>
};

class TerminalProgress;

/// `text` safe to print on a terminal: control characters (ESC, CR, BEL, DEL...)
/// are written as "\\x1b" and friends, so that node ids, params and messages
/// cannot move the cursor or change colours. Newlines become spaces when
/// `one_line`, else stay.
std::string terminal_text(std::string_view text, bool one_line = true);

/// How a table node's output reads in listings (never as its u8 cell bytes):
/// "table, 3 columns (label, count, mean), 12 rows" (the names only with
/// `names`), with the rows left out when not known and "columns not known yet"
/// before a cell is stored; escaped.
std::string table_text(const std::vector<std::string>& columns, std::optional<int64_t> rows,
                       bool names = true);

/// Prints warnings and errors of the library on stderr as "cellflow: warning:
/// ...", above `progress` when it is given (and outlives the sink).
LogSink stderr_log_sink(TerminalProgress* progress = nullptr);

/// Loads the plugins of $CELLFLOW_PLUGIN_PATH, then `paths`, into
/// nodes::builtin_registry(). Throws PluginError.
void load_plugins(const std::vector<std::string>& paths);

/// `bytes` for people: "512 B", "1.5 KiB", "2.0 GiB".
std::string human_size(uint64_t bytes);

/// The cache root of --cache (else $CELLFLOW_CACHE, else ./cellflow-cache),
/// absolute so that reported paths work from any directory.
std::filesystem::path cache_root_of(const std::optional<std::string>& cache);
/// Loads and validates a graph file with the ops the program knows (built-ins
/// and loaded plugins). A file that cannot be read is a UsageError.
Graph load_cli_graph(const std::string& path, std::optional<std::filesystem::path> cache_root);

int run_command(const RunArgs& args);
/// Lists every op, or only `name` (a UsageError naming the nearest when unknown).
int ops_command(bool json, const std::optional<std::string>& name = std::nullopt);
int graph_command(const GraphArgs& args);
int export_command(const ExportArgs& args);

}  // namespace cellflow::cli

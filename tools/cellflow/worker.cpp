#include "worker.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/memory_cache.hpp"
#include "commands.hpp"
#include "subprocess.hpp"

namespace cellflow::cli {
namespace {

constexpr const char* kDoneComputed = "cellflow-worker: computed";
constexpr const char* kDonePresent = "cellflow-worker: present";

thread_local bool t_last_computed = false;

CellIndex parse_cell(const std::string& text, const CellGrid& grid) {
  std::vector<int64_t> v;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string part = text.substr(pos, comma - pos);
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(part.c_str(), &end, 10);
    if (part.empty() || end != part.c_str() + part.size() || errno != 0 || x < 0)
      throw UsageError(
          fmt::format("worker: --cell \"{}\" is not a list of indexes like 1,0,2", text));
    v.push_back(x);
    pos = comma + 1;
  }
  if (static_cast<int>(v.size()) != grid.rank())
    throw UsageError(fmt::format("worker: --cell \"{}\" has {} indexes, the node's grid {}", text,
                                 v.size(), grid.rank()));
  const CellIndex cell = CellIndex::from(v);
  for (int d = 0; d < grid.rank(); ++d) {
    if (cell[d] >= grid.grid_shape()[d])
      throw UsageError(fmt::format("worker: --cell {} is outside the node's grid {}", cell.str(),
                                   grid.grid_shape().str()));
  }
  return cell;
}

std::string cell_arg(const CellIndex& cell) { return fmt::format("{}", fmt::join(cell, ",")); }

}  // namespace

int worker_command(const WorkerArgs& args) {
  watch_parent();
  if (!args.cache) throw UsageError("worker: --cache is required");
  if (args.memory) MemoryCache::global().set_budget(parse_size(*args.memory, "--memory"));
  const Graph graph = load_cli_graph(args.graph_path, cache_root_of(args.cache));
  const size_t node = graph.index(args.node_id);
  const std::shared_ptr<CachedCellImage> image = graph.image(node);
  const CellIndex cell = parse_cell(args.cell, image->grid());
  const bool computed = image->ensure(cell);
  fmt::print("{}\n", computed ? kDoneComputed : kDonePresent);
  std::fflush(stdout);
  return kExitOk;
}

IsolatedCellRunner::IsolatedCellRunner(const Graph& graph, WorkerContext context)
    : graph_(graph),
      context_(std::move(context)),
      exe_(self_exe()),
      computed_(new std::atomic<int64_t>[graph.nodes().size()]) {
  for (size_t i = 0; i < graph.nodes().size(); ++i) computed_[i] = 0;
}

int64_t IsolatedCellRunner::computed(size_t node) const {
  return node < graph_.nodes().size() ? computed_[node].load() : 0;
}

bool IsolatedCellRunner::take_last_computed() {
  const bool v = t_last_computed;
  t_last_computed = false;
  return v;
}

void IsolatedCellRunner::operator()(size_t node, const CellIndex& cell,
                                    double timeout_seconds) const {
  t_last_computed = false;
  const GraphNode& n = graph_.nodes().at(node);
  const std::string node_frame = fmt::format("node \"{}\"", n.def.id);
  const std::string cell_frame = "cell " + cell.str();
  const auto fail = [&](auto error) {
    error.add_context(cell_frame);
    error.add_context(node_frame);
    throw error;
  };

  std::vector<std::string> argv{
      "worker", context_.graph_path, "--node",  n.def.id,
      "--cell", cell_arg(cell),      "--cache", context_.cache_root.string()};
  if (context_.memory) {
    argv.push_back("--memory");
    argv.push_back(*context_.memory);
  }
  for (const std::string& p : context_.plugins) {
    argv.push_back("--plugin");
    argv.push_back(p);
  }
  const WorkerExit exit = run_worker_process(argv, timeout_seconds);
  if (exit.how == WorkerExit::How::kTimedOut || exit.how == WorkerExit::How::kCancelled)
    fail(Cancelled(exit.describe(timeout_seconds)));
  if (exit.how == WorkerExit::How::kSignaled) fail(NodeError(exit.describe(timeout_seconds)));
  const std::string& out = exit.output;
  forward_warnings(out, node_frame + ": " + cell_frame);
  if (exit.code != 0) {
    fail(NodeError(fmt::format("{}: {}", exit.describe(timeout_seconds),
                               worker_error(out, {node_frame, cell_frame}))));
  }
  const bool computed = out.find(kDoneComputed) != std::string::npos;
  if (!computed && out.find(kDonePresent) == std::string::npos) {
    fail(NodeError("worker exited 0 without committing the cell"));
  }
  if (computed) computed_[node].fetch_add(1);
  t_last_computed = computed;
}

}  // namespace cellflow::cli

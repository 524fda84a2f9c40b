#include "run_session.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/graph/mpi.hpp"
#include "cellflow/graph/value.hpp"
#include "commands.hpp"
#include "trace.hpp"

namespace cellflow::cli {
namespace fs = std::filesystem;

/// The --progress-json file: one JSON object per line, each written with a
/// single write() so that lines from concurrent threads never interleave and
/// a killed process leaves only whole lines.
class EventLog {
 public:
  explicit EventLog(const std::string& file) {
    if (file == "-") {
      fd_ = STDOUT_FILENO;
      return;
    }
    fd_ = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      throw UsageError(
          fmt::format("--progress-json {}: cannot open it: {}", file, std::strerror(errno)));
    }
    own_ = true;
    file_ = file;
  }
  ~EventLog() {
    if (own_) ::close(fd_);
  }
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Stamps the event's time under the lock, so the file is in time order even
  // when threads race to log.
  void write(Value event) {
    std::lock_guard lock(mu_);
    if (failed_) return;
    event.set(
        "time",
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
    const std::string line = to_json_compact(event) + "\n";
    const char* p = line.data();
    size_t left = line.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        // The run matters more than its log: warn once, then stop logging.
        failed_ = true;
        log_warning(fmt::format("--progress-json {}: cannot write: {}; no more events are logged",
                                file_.empty() ? "-" : file_, std::strerror(errno)));
        return;
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
  }

 private:
  int fd_ = -1;
  bool own_ = false;
  bool failed_ = false;
  std::string file_;
  std::mutex mu_;
};

namespace {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Value event(const char* kind) {
  Value v = Value::object();
  v.set("event", kind);
  v.set("time", unix_now());
  return v;
}

const char* status_name(CellEvent::Kind kind) {
  switch (kind) {
    case CellEvent::Kind::kDone:
      return "done";
    case CellEvent::Kind::kRetry:
      return "retry";
    case CellEvent::Kind::kFailed:
      return "failed";
  }
  return "?";
}

}  // namespace

RunSession::RunSession(const Graph& graph, std::vector<size_t> targets, RunPolicy policy,
                       const std::string& graph_path, const std::optional<std::string>& memory)
    : graph_(graph),
      targets_(targets.empty() ? graph.outputs() : std::move(targets)),
      policy_(std::move(policy)),
      tally_(graph.nodes().size()) {
  if (policy_.max_retries < 0) throw UsageError("--max-retries must be >= 0");
  if (!(policy_.timeout_seconds >= 0)) throw UsageError("--timeout must be >= 0 seconds");
  // Before the cache is touched: an unwritable trace file is bad usage.
  if (policy_.trace) trace_ = std::make_unique<TraceRecorder>(*policy_.trace);
  if (policy_.isolate && !graph.cache_root()) {
    throw UsageError("--isolate needs a cache: worker processes hand their cells over through it");
  }
  if (graph.cache_root()) {
    // A cache that cannot be opened at all (no permission, not a folder, a
    // read-only place where it does not exist yet) is bad usage.
    try {
      graph.cache();
    } catch (const IoError& e) {
      throw UsageError(e.what());
    }
    for (size_t i : graph.ancestors(targets_)) {
      const GraphNode& n = graph.nodes()[i];
      if (!n.persist) continue;  // its cells live in memory (or in the user's file)
      // A node folder that cannot even be created (read-only or full media, no
      // permission) fails the run here, with the real cause: the executor
      // creates every node it may touch, and would fail later on a file inside.
      try {
        graph.cache()->ensure_node_folder(n.hash);
      } catch (Error& e) {
        e.add_context(fmt::format("node \"{}\"", n.def.id));
        throw;
      }
    }
  }
  if (policy_.isolate) {
    WorkerContext context;
    context.graph_path = fs::absolute(graph_path).string();
    context.cache_root = *graph.cache_root();
    context.memory = memory;
    for (const std::string& p : policy_.plugins)
      context.plugins.push_back(fs::absolute(p).string());
    runner_ = std::make_unique<IsolatedCellRunner>(graph, std::move(context));
  }
  if (policy_.progress_json) log_ = std::make_unique<EventLog>(*policy_.progress_json);
}

RunSession::~RunSession() = default;

void RunSession::mark_complete_nodes(RunReport& report) const {
  // materialize() marks the nodes it computed cells of. A node whose last
  // cells a killed run committed (so that this run had nothing to do for it)
  // would stay unmarked; mark it too, after checking every cell.
  CacheDirectory* cache = graph_.cache();
  if (cache == nullptr) return;
  for (size_t i : graph_.ancestors(targets_)) {
    const GraphNode& n = graph_.nodes()[i];
    if (!n.persist || cache->is_complete(n.hash)) continue;
    try {
      if (!confirm_complete(graph_, i)) continue;
    } catch (const IoError&) {
      continue;  // a read-only cache: the marker is an optimization, never needed
    }
    for (NodeReport& r : report.nodes) {
      if (r.node == i) r.complete = true;
    }
  }
}

RunReport RunSession::run(RunOptions options) {
  options.max_retries = policy_.max_retries;
  options.timeout_seconds = policy_.timeout_seconds;
  const auto& nodes = graph_.nodes();
  if (runner_) {
    options.cell_runner = [r = runner_.get()](size_t node, const CellIndex& cell, double timeout) {
      (*r)(node, cell, timeout);
    };
  }
  options.on_cell = [this, isolated = runner_ != nullptr](const CellEvent& ev) {
    // A cell runner's events cannot say whether the worker computed the cell.
    const bool computed = isolated ? IsolatedCellRunner::take_last_computed() : ev.computed;
    tally_.record(ev, computed);
    if (trace_) trace_->record_cell(ev, graph_.nodes()[ev.node].def.id, computed);
    if (!log_) return;
    Value v = event("cell");
    v.set("node", graph_.nodes()[ev.node].def.id);
    v.set("cell", Value::list(ev.cell.to_vector()));
    v.set("status", status_name(ev.kind));
    v.set("attempt", ev.attempt);
    if (ev.kind == CellEvent::Kind::kDone) v.set("computed", computed);
    v.set("seconds", ev.seconds);
    if (ev.kind != CellEvent::Kind::kDone) v.set("error", ev.error);
    log_->write(v);
  };

  // Progress snapshots: the terminal's every time, the log's when something
  // changed, at most about twice a second (and the last one at the end).
  std::mutex progress_mu;
  std::string last_logged;
  std::vector<NodeProgress> last_seen;
  double last_time = -1;
  const auto snapshot_event = [&](const std::vector<NodeProgress>& progress) {
    Value list = Value::array();
    for (const NodeProgress& p : progress) {
      const CellTally::NodeStats st = tally_.stats(p.node, p.cells_scheduled - p.cells_done);
      list.as_array().emplace_back(Value::Object{
          {"id", nodes[p.node].def.id},
          {"total", p.cells_total},
          {"scheduled", p.cells_scheduled},
          {"done", p.cells_done},
          {"computed", st.computed},
          {"hits", p.cells_total - p.cells_scheduled + st.found},
          {"retries", st.retries},
          {"failed", st.failed},
          {"rate", st.rate},
          {"eta", st.eta ? Value(*st.eta) : Value()},
      });
    }
    Value v = event("progress");
    v.set("elapsed", tally_.elapsed());
    v.set("nodes", std::move(list));
    return v;
  };
  const auto log_progress = [&](const std::vector<NodeProgress>& progress, bool force) {
    std::lock_guard lock(progress_mu);
    last_seen = progress;
    std::string key;
    for (const NodeProgress& p : progress)
      key += fmt::format("{}:{}/{};", p.node, p.cells_done, p.cells_scheduled);
    const double now = tally_.elapsed();
    if (key == last_logged || (!force && now - last_time < 0.5)) return;
    last_logged = key;
    last_time = now;
    log_->write(snapshot_event(progress));
  };
  if (log_) {
    options.on_progress = [terminal = std::move(options.on_progress),
                           &log_progress](const std::vector<NodeProgress>& progress) {
      if (terminal) terminal(progress);
      log_progress(progress, false);
    };
  }

  if (log_) {
    Value list = Value::array();
    for (const GraphNode& n : nodes) {
      list.as_array().emplace_back(Value::Object{
          {"id", n.def.id},
          {"op", n.def.op},
          {"hash", n.hash},
          {"cells_total", CellGrid(n.info.shape, n.info.cell_shape).num_cells()},
      });
    }
    Value targets = Value::array();
    for (size_t t : targets_) targets.as_array().emplace_back(nodes[t].def.id);
    Value v = event("run_start");
    v.set("pid", static_cast<int64_t>(::getpid()));
    v.set("graph", graph_.def().source);
    v.set("cache", graph_.cache_root() ? graph_.cache_root()->string() : std::string());
    v.set("targets", std::move(targets));
    v.set("threads", options.threads);
    v.set("max_retries", policy_.max_retries);
    v.set("timeout", policy_.timeout_seconds);
    v.set("isolate", policy_.isolate);
    v.set("nodes", std::move(list));
    log_->write(v);
  }
  const auto finish = [&] {
    if (trace_) trace_->finish();  // written on failure too: it shows what ran
    if (!log_) return;
    std::vector<NodeProgress> seen;
    {
      std::lock_guard lock(progress_mu);
      seen = last_seen;
    }
    if (!seen.empty()) log_progress(seen, true);
  };
  if (trace_) trace_->start();
  try {
    RunReport report = policy_.mpi ? mpi::materialize(graph_, targets_, options)
                                   : materialize(graph_, targets_, options);
    if (runner_) {
      for (NodeReport& r : report.nodes) r.cells_computed += runner_->computed(r.node);
    }
    mark_complete_nodes(report);
    finish();
    if (log_) {
      int64_t computed = 0;
      int64_t loaded = 0;
      Value list = Value::array();
      for (const NodeReport& r : report.nodes) {
        computed += r.cells_computed;
        loaded += r.cells_loaded;
        list.as_array().emplace_back(Value::Object{
            {"id", nodes[r.node].def.id},
            {"cells_total", r.cells_total},
            {"cells_computed", r.cells_computed},
            {"cells_loaded", r.cells_loaded},
            {"cells_corrupt", r.cells_corrupt},
            {"complete", r.complete},
            {"persisted", r.persisted},
        });
      }
      Value v = event("run_end");
      v.set("ok", true);
      v.set("wall_seconds", report.wall_seconds);
      v.set("cells_computed", computed);
      v.set("cells_loaded", loaded);
      v.set("nodes", std::move(list));
      log_->write(v);
    }
    return report;
  } catch (const std::exception& e) {
    finish();
    if (log_) {
      int64_t computed = 0;
      int64_t failed = 0;
      for (size_t i = 0; i < nodes.size(); ++i) {
        const CellTally::NodeStats st = tally_.stats(i, 0);
        computed += st.computed;
        failed += st.failed;
      }
      Value v = event("run_end");
      v.set("ok", false);
      v.set("wall_seconds", tally_.elapsed());
      v.set("cells_computed", computed);
      v.set("cells_failed", failed);
      v.set("error", std::string(e.what()));
      log_->write(v);
    }
    throw;
  }
}

}  // namespace cellflow::cli

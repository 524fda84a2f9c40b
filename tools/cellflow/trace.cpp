#include "trace.hpp"

#include <fmt/format.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/graph/value.hpp"
#include "commands.hpp"

namespace cellflow::cli {
namespace {

namespace fs = std::filesystem;

int64_t thread_id() { return static_cast<int64_t>(::syscall(SYS_gettid)); }

/// This process's rank when an MPI launcher started it (Open MPI, MPICH/PMI,
/// PMIx, Slurm), else -1.
int64_t launcher_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') {
      char* end = nullptr;
      const long rank = std::strtol(v, &end, 10);
      if (end != v && *end == '\0' && rank >= 0) return rank;
    }
  }
  return -1;
}

/// `node "smooth"` -> `smooth` (CachedCellImage names are error-context frames).
std::string node_of(const std::string& image) {
  const size_t a = image.find('"');
  const size_t b = image.rfind('"');
  if (a != std::string::npos && b > a) return image.substr(a + 1, b - a - 1);
  return image;
}

}  // namespace

TraceRecorder::TraceRecorder(const std::string& file)
    : path_(file),
      pid_(::getpid()),
      steady_start_(std::chrono::steady_clock::now()),
      unix_start_us_(std::chrono::duration<double, std::micro>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count()) {
  if (const int64_t rank = launcher_rank(); rank >= 0) {
    pid_ = rank;
    mpi_rank_ = true;
    if (rank > 0) {
      const fs::path p(file);
      path_ = (p.parent_path() /
               (p.stem().string() + fmt::format(".rank{}", rank) + p.extension().string()))
                  .string();
    }
  }
  // Fail before computing anything if the trace cannot be written.
  std::ofstream probe(path_, std::ios::binary | std::ios::trunc);
  if (!probe) {
    throw UsageError(fmt::format("--trace {}: cannot write it: {}", path_, std::strerror(errno)));
  }
}

TraceRecorder::~TraceRecorder() {
  if (installed_) set_cell_trace_sink(nullptr);
}

void TraceRecorder::start() {
  set_cell_trace_sink(this);
  installed_ = true;
}

double TraceRecorder::to_us(std::chrono::steady_clock::time_point t) const {
  return unix_start_us_ + std::chrono::duration<double, std::micro>(t - steady_start_).count();
}

void TraceRecorder::record(const CellTraceEvent& event) {
  const char* kind = cell_trace_kind_name(event.kind);
  std::string node = event.image != nullptr ? node_of(*event.image) : std::string();
  Event e{fmt::format("{} {}", kind, node),
          kind,
          to_us(event.begin),
          std::chrono::duration<double, std::micro>(event.end - event.begin).count(),
          thread_id(),
          std::move(node),
          event.cell != nullptr ? event.cell->str() : std::string(),
          0,
          -1,
          {}};
  std::lock_guard lock(mu_);
  events_.push_back(std::move(e));
}

void TraceRecorder::record_cell(const CellEvent& event, const std::string& node_id, bool computed) {
  const auto end = std::chrono::steady_clock::now();
  const double dur = event.seconds * 1e6;
  const char* status = event.kind == CellEvent::Kind::kDone    ? "cell"
                       : event.kind == CellEvent::Kind::kRetry ? "cell (retried)"
                                                               : "cell (failed)";
  Event e{fmt::format("{} {}", status, node_id),
          "run",
          to_us(end) - dur,
          dur,
          thread_id(),
          node_id,
          event.cell.str(),
          event.attempt,
          event.kind == CellEvent::Kind::kDone ? (computed ? 1 : 0) : -1,
          event.error};
  std::lock_guard lock(mu_);
  events_.push_back(std::move(e));
}

void TraceRecorder::finish() {
  if (installed_) {
    set_cell_trace_sink(nullptr);
    installed_ = false;
  }
  if (finished_) return;
  finished_ = true;
  std::vector<Event> events;
  {
    std::lock_guard lock(mu_);
    events.swap(events_);
  }
  std::sort(events.begin(), events.end(),
            [](const Event& a, const Event& b) { return a.ts_us < b.ts_us; });
  std::string out = "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n";
  auto append = [&out, first = true](const Value& v) mutable {
    if (!first) out += ",\n";
    first = false;
    out += to_json_compact(v);
  };
  const std::string process = mpi_rank_ ? fmt::format("cellflow rank {} (pid {})", pid_, ::getpid())
                                        : fmt::format("cellflow (pid {})", pid_);
  append(Value(Value::Object{{"ph", "M"},
                             {"name", "process_name"},
                             {"pid", pid_},
                             {"args", Value(Value::Object{{"name", process}})}}));
  std::set<int64_t> threads;
  for (const Event& e : events) threads.insert(e.tid);
  const auto main_tid = static_cast<int64_t>(::getpid());
  for (int64_t tid : threads) {
    append(Value(Value::Object{
        {"ph", "M"},
        {"name", "thread_name"},
        {"pid", pid_},
        {"tid", tid},
        {"args",
         Value(Value::Object{
             {"name", tid == main_tid ? std::string("main") : fmt::format("worker {}", tid)}})}}));
  }
  for (const Event& e : events) {
    Value args(Value::Object{{"node", e.node}, {"cell", e.cell}});
    if (e.attempt > 0) args.set("attempt", e.attempt);
    if (e.computed >= 0) args.set("computed", e.computed == 1);
    if (!e.error.empty()) args.set("error", e.error);
    append(Value(Value::Object{{"name", e.name},
                               {"cat", std::string(e.category)},
                               {"ph", "X"},
                               {"ts", e.ts_us},
                               {"dur", std::max(0.0, e.dur_us)},
                               {"pid", pid_},
                               {"tid", e.tid},
                               {"args", std::move(args)}}));
  }
  out += "\n]}\n";
  std::ofstream f(path_, std::ios::binary | std::ios::trunc);
  f << out;
  f.close();
  if (!f) log_warning(fmt::format("--trace {}: cannot write the trace", path_));
}

}  // namespace cellflow::cli

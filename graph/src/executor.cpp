#include "cellflow/graph/executor.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/cache/trace.hpp"
#include "cellflow/graph/cancel.hpp"
#include "cellflow/graph/scheduler.hpp"
#include "cellflow/store/wait_lock.hpp"

namespace cellflow {
namespace {

using Clock = std::chrono::steady_clock;

// Reports progress from a background thread until stopped.
class ProgressThread {
 public:
  ProgressThread(const RunOptions& options, std::function<std::vector<NodeProgress>()> snapshot)
      : options_(options), snapshot_(std::move(snapshot)) {
    if (options_.on_progress) thread_ = std::thread([this] { loop(); });
  }
  ~ProgressThread() { stop(); }
  void stop() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
    options_.on_progress(snapshot_());
  }

 private:
  void loop() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, std::chrono::milliseconds(std::max(10, options_.progress_interval_ms)));
      if (stopping_) break;
      lock.unlock();
      options_.on_progress(snapshot_());
      lock.lock();
    }
  }

  const RunOptions& options_;
  std::function<std::vector<NodeProgress>()> snapshot_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

// One materialize() call: which cells it must produce (plan), the scheduler
// tasks that produce them (schedule), and what happened (report).
class Materialization {
 public:
  Materialization(const Graph& graph, std::vector<size_t> targets, const RunOptions& options)
      : graph_(graph),
        nodes_(graph.nodes()),
        options_(options),
        targets_(targets.empty() ? graph.outputs() : std::move(targets)),
        target_(nodes_.size(), 0),
        runs_(nodes_.size()),
        order_(graph.ancestors(targets_)) {
    for (size_t t : targets_) target_[t] = 1;
  }

  RunReport run() {
    const auto t0 = Clock::now();
    plan();
    {
      ProgressThread progress(options_, [this] { return snapshot(); });
      Scheduler::Options so;
      so.threads = options_.threads;
      so.on_failure = OnFailure::kStop;
      so.stop = options_.stop;
      so.on_attempt = [this](const AttemptEvent& ev) { on_attempt(ev); };
      Scheduler scheduler(std::move(so));
      schedule(scheduler);
      scheduler.run();
      // The cells other processes were computing: wait for their commits (a
      // dead process's lock is released by the kernel, and then we compute).
      for (const auto& [i, cell] : deferred_) {
        const ScopedWaitLimit wait(ScopedWaitLimit::from_seconds(timeout_of(i)));
        runs_[i].image->ensure(cell);
      }
    }
    RunReport report = make_report();
    report.wall_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return report;
  }

 private:
  // A node's timeout per cell attempt (its op's own policy wins); it also
  // bounds every lock wait for the node (ScopedWaitLimit): a lease, metadata
  // or cell lock that another process holds never stalls a run past it.
  double timeout_of(size_t i) const {
    return nodes_[i].op->timeout_seconds() >= 0 ? nodes_[i].op->timeout_seconds()
                                                : options_.timeout_seconds;
  }
  int retries_of(size_t i) const {
    return nodes_[i].op->max_retries() >= 0 ? nodes_[i].op->max_retries()
                                            : std::max(0, options_.max_retries);
  }

  CachedCellImage& image_of(size_t i) {
    NodeRun& r = runs_[i];
    if (!r.image) {
      const ScopedWaitLimit wait(ScopedWaitLimit::from_seconds(timeout_of(i)));
      r.image = graph_.image(i);
      r.before = r.image->stats();
    }
    return *r.image;
  }

  // Backward pass: which cells must this run produce? A target's missing
  // cells, and then the missing input cells those read, transitively. Cells
  // already committed are never recomputed. The completion marker is not
  // trusted here: a cell deleted since it was written must be recomputed
  // (one stat() per cell).
  void plan() {
    // Every node this run may touch gets its image now, so that loads of
    // committed cells are counted in the report.
    for (size_t i : order_) image_of(i);
    for (size_t i : order_) {
      const auto cells = static_cast<size_t>(image_of(i).grid().num_cells());
      runs_[i].scheduled.assign(cells, 0);
      runs_[i].task.assign(cells, kNoTask);
    }
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
      const size_t i = *it;
      NodeRun& r = runs_[i];
      if (target_[i]) {
        CachedCellImage& img = image_of(i);
        // A contiguous range of cells (a slab in raster order): neighbours
        // share the input cells of their halos only at the slab's two faces.
        const int64_t total = img.grid().num_cells();
        const int64_t parts = std::max(1, options_.partition_size);
        const int64_t first = total * options_.partition_rank / parts;
        const int64_t last = total * (options_.partition_rank + 1) / parts;
        for (int64_t c = first; c < last; ++c)
          if (!img.available(img.grid().cell_at(c))) schedule_cell(i, c);
      }
      if (r.scheduled_count == 0) continue;
      r.needed = true;
      const GraphNode& n = nodes_[i];
      const CellGrid& grid = image_of(i).grid();
      for (size_t k = 0; k < n.inputs.size(); ++k) {
        const size_t in = n.inputs[k];
        CachedCellImage& iimg = image_of(in);
        const CellGrid& igrid = iimg.grid();
        const auto mark = [&](const CellIndex& ic) {
          const int64_t l = igrid.linear(ic);
          if (!runs_[in].scheduled[static_cast<size_t>(l)] && !iimg.available(ic))
            schedule_cell(in, l);
        };
        if (n.kernel->needs_prepare()) {
          // A global op's prepare() reads its whole input.
          for_each_index(igrid.cells_touching(igrid.bounds()), mark);
          continue;
        }
        for (int64_t c = 0; c < grid.num_cells(); ++c) {
          if (!r.scheduled[static_cast<size_t>(c)]) continue;
          const Box need =
              n.kernel->input_region(k, grid.cell_box(grid.cell_at(c)), nodes_[in].info);
          for_each_index(igrid.cells_touching(need), mark);
        }
      }
    }
  }

  void schedule_cell(size_t i, int64_t c) {
    auto& s = runs_[i].scheduled[static_cast<size_t>(c)];
    if (s) return;
    s = 1;
    ++runs_[i].scheduled_count;
  }

  // One scheduler task per cell to produce, and per global pass; a task waits
  // for the input cells (or the global pass) it reads.
  void schedule(Scheduler& scheduler) {
    for (size_t i : order_) {
      NodeRun& r = runs_[i];
      if (r.scheduled_count == 0) continue;
      const GraphNode& n = nodes_[i];
      const CellGrid& grid = image_of(i).grid();
      if (n.kernel->needs_prepare()) {
        r.prepare = add_task(scheduler, i, std::nullopt, Scheduler::Policy{});
        for (size_t in : n.inputs)
          for (size_t t : runs_[in].task)
            if (t != kNoTask) reads(scheduler, r.prepare, t);
      }
      const Scheduler::Policy policy{retries_of(i), timeout_of(i), -1};
      // Processes sharing a cache start at different cells, so that they
      // take different cells instead of queueing on each other's locks.
      const int64_t total = grid.num_cells();
      const int64_t shift =
          static_cast<int64_t>(static_cast<uint64_t>(::getpid()) * 2654435761ULL %
                               static_cast<uint64_t>(std::max<int64_t>(1, total)));
      for (int64_t k = 0; k < total; ++k) {
        const int64_t c = (k + shift) % total;
        if (!r.scheduled[static_cast<size_t>(c)]) continue;
        const CellIndex cell = grid.cell_at(c);
        const size_t me = add_task(scheduler, i, cell, policy);
        r.task[static_cast<size_t>(c)] = me;
        // A global op's cells wait for its pass, and read their input cells
        // again: those stay in memory for them.
        if (r.prepare != kNoTask) scheduler.precede(r.prepare, me);
        const Box box = grid.cell_box(cell);
        for (size_t k = 0; k < n.inputs.size(); ++k) {
          const size_t in = n.inputs[k];
          if (runs_[in].scheduled_count == 0) continue;
          const CellGrid& igrid = image_of(in).grid();
          for_each_index(igrid.cells_touching(n.kernel->input_region(k, box, nodes_[in].info)),
                         [&](const CellIndex& ic) {
                           const size_t t = runs_[in].task[static_cast<size_t>(igrid.linear(ic))];
                           if (t != kNoTask) reads(scheduler, me, t);
                         });
        }
      }
    }
  }

  // Task `reader` reads the cell that task `producer` makes: it waits for it,
  // and the cell stays in memory until it is done (see release_inputs).
  void reads(Scheduler& scheduler, size_t reader, size_t producer) {
    scheduler.precede(producer, reader);
    task_reads_[reader].push_back(producer);
    ++task_readers_[producer];
  }

  // Whether a cell of node i may leave memory once this run stops reading it:
  // when reading it back is cheap and changes nothing, i.e. it is committed
  // to the store, or it is a file-backed source (read again from the user's
  // file); and any non-target cell when the caller reads nothing after the
  // run (RunOptions::release_unpersisted). Otherwise a cell that only memory
  // holds stays, for later readers and other runs in the process; the memory
  // budget evicts it.
  bool releasable(size_t i) const {
    const GraphNode& n = nodes_[i];
    return (graph_.cache() != nullptr && n.persist) ||
           (n.inputs.empty() && !n.persist && !n.op->persist_by_default()) ||
           (options_.release_unpersisted && !target_[i]);
  }

  // After task t succeeded: each cell it read that no other task of this run
  // will read is dropped from memory, so that its buffer goes back to the
  // pool warm and the next cell reuses it instead of touching fresh pages
  // (on a VM first touch costs more than the codec), and the run's memory
  // follows its working set instead of everything it made. Its own cell
  // goes at once if nothing in the run reads it.
  void release_inputs(size_t t) {
    if (task_released_[t].exchange(1)) return;  // a late attempt that also returned
    for (size_t p : task_reads_[t])
      if (task_readers_[p].fetch_sub(1) == 1) release_cell(p);
    if (task_readers_[t].load() == 0) release_cell(t);
  }

  void release_cell(size_t t) {
    const size_t i = task_node_[t];
    if (!task_is_cell_[t] || !releasable(i) || !runs_[i].image) return;
    runs_[i].image->release(task_cell_[t]);
  }

  // A cell's task (cell given) or a node's global pass (cell empty).
  size_t add_task(Scheduler& scheduler, size_t i, std::optional<CellIndex> cell,
                  Scheduler::Policy policy) {
    const size_t t = scheduler.add(
        [this, i, cell](const AttemptContext& ctx) {
          const TaskOutcome outcome = cell ? produce_cell(i, *cell, ctx) : global_pass(i);
          if (outcome == TaskOutcome::kDone) release_inputs(ctx.task);
          return outcome;
        },
        policy);
    task_reads_.emplace_back();
    task_readers_.emplace_back(0);
    task_released_.emplace_back(0);
    task_node_.push_back(i);
    task_cell_.push_back(cell ? *cell : CellIndex());
    task_is_cell_.push_back(cell ? 1 : 0);
    task_computed_.push_back(0);
    return t;
  }

  TaskOutcome produce_cell(size_t i, const CellIndex& cell, const AttemptContext& ctx) {
    NodeRun& r = runs_[i];
    bool computed = false;
    if (options_.share_work && r.image->busy_elsewhere(cell) && !r.image->available(cell)) {
      std::lock_guard lock(deferred_mu_);
      deferred_.emplace_back(i, cell);
    } else if (options_.cell_runner && nodes_[i].persist && graph_.cache() != nullptr) {
      // A worker process hands its cell over through the cache; a node that
      // is not persisted (e.g. a source read from the user's file) is computed here.
      options_.cell_runner(i, cell, ctx.timeout_seconds);
    } else {
      computed = r.image->ensure(cell);
    }
    task_computed_[ctx.task] = computed ? 1 : 0;
    return TaskOutcome::kDone;
  }

  TaskOutcome global_pass(size_t i) {
    // Its reads of input cells another process holds wait no longer than a
    // cell attempt.
    const ScopedWaitLimit wait(ScopedWaitLimit::from_seconds(timeout_of(i)));
    CellTraceSink* sink = cell_trace_sink();
    CellTraceEvent ev;
    const std::string name = fmt::format("node \"{}\"", nodes_[i].def.id);
    ev.kind = CellTraceEvent::Kind::kGlobal;
    ev.image = &name;
    ev.begin = Clock::now();
    graph_.prepare(i);
    ev.end = Clock::now();
    if (sink != nullptr) sink->record(ev);
    // The global pass counts in the node's seconds.
    runs_[i].nanos.fetch_add(
        std::chrono::duration_cast<std::chrono::nanoseconds>(ev.end - ev.begin).count(),
        std::memory_order_relaxed);
    return TaskOutcome::kDone;
  }

  void on_attempt(const AttemptEvent& ev) {
    if (ev.attempt == 0 || !task_is_cell_[ev.task]) return;  // not run, or a global pass
    const size_t i = task_node_[ev.task];
    CellEvent ce;
    ce.node = i;
    ce.cell = task_cell_[ev.task];
    ce.attempt = ev.attempt;
    ce.seconds = ev.seconds;
    ce.error = ev.error;
    switch (ev.outcome) {
      case TaskOutcome::kDone:
      case TaskOutcome::kSkipped:
        ce.kind = CellEvent::Kind::kDone;
        ce.computed = task_computed_[ev.task] != 0;
        runs_[i].nanos.fetch_add(static_cast<int64_t>(ev.seconds * 1e9), std::memory_order_relaxed);
        runs_[i].done.fetch_add(1, std::memory_order_relaxed);
        break;
      case TaskOutcome::kPending:
        ce.kind = CellEvent::Kind::kRetry;
        log_warning(fmt::format("node \"{}\": cell {}: attempt {} of {} failed: {}; retrying",
                                nodes_[i].def.id, ce.cell.str(), ev.attempt, retries_of(i) + 1,
                                ev.error));
        break;
      default:  // failed, or cancelled because the run is stopping
        ce.kind = CellEvent::Kind::kFailed;
        break;
    }
    if (options_.on_cell) options_.on_cell(ce);
  }

  std::vector<NodeProgress> snapshot() const {
    std::vector<NodeProgress> out;
    for (size_t i : order_) {
      const NodeRun& r = runs_[i];
      out.push_back(NodeProgress{i, static_cast<int64_t>(r.scheduled.size()), r.scheduled_count,
                                 r.done.load(std::memory_order_relaxed)});
    }
    return out;
  }

  RunReport make_report() {
    RunReport report;
    CacheDirectory* cache = graph_.cache();
    for (size_t i = 0; i < nodes_.size(); ++i) {
      NodeReport nr;
      nr.node = i;
      nr.cells_total = CellGrid(nodes_[i].info.shape, nodes_[i].info.cell_shape).num_cells();
      NodeRun& r = runs_[i];
      if (r.image) {
        const CellImageStats after = r.image->stats();
        nr.cells_computed = after.computed - r.before.computed;
        nr.cells_loaded = after.loaded - r.before.loaded;
        nr.cells_corrupt = after.corrupt - r.before.corrupt;
      }
      nr.seconds = static_cast<double>(r.nanos.load()) * 1e-9;
      nr.persisted = cache != nullptr && nodes_[i].persist;
      if (nr.persisted && options_.partition_size > 1) {
        nr.complete = false;  // the caller checks once all processes finished
      } else if (nr.persisted) {
        // Any node this run touched is checked cell by cell when unmarked.
        nr.complete = r.image ? confirm_complete(graph_, i) : cache->is_complete(nodes_[i].hash);
      } else {
        nr.complete = r.needed && r.done.load() == r.scheduled_count;
      }
      report.nodes.push_back(nr);
    }
    return report;
  }

  static constexpr size_t kNoTask = SIZE_MAX;

  struct NodeRun {
    bool needed = false;
    std::shared_ptr<CachedCellImage> image;
    std::vector<char> scheduled;  // per cell: this run must produce it
    int64_t scheduled_count = 0;
    std::vector<size_t> task;  // per cell: its scheduler task, when scheduled
    size_t prepare = kNoTask;  // the global pass's task
    std::atomic<int64_t> done{0};
    std::atomic<int64_t> nanos{0};
    CellImageStats before;
  };

  const Graph& graph_;
  const std::vector<GraphNode>& nodes_;
  const RunOptions& options_;
  std::vector<size_t> targets_;
  std::vector<char> target_;  // per node: one of targets_
  std::deque<NodeRun> runs_;
  std::vector<size_t> order_;
  // Per scheduler task.
  std::vector<size_t> task_node_;
  std::vector<CellIndex> task_cell_;
  std::vector<char> task_is_cell_;
  std::vector<char> task_computed_;                // written by the task's own attempt
  std::deque<std::vector<size_t>> task_reads_;     // the cell tasks it reads
  std::deque<std::atomic<int64_t>> task_readers_;  // tasks still to read its cell
  std::deque<std::atomic<char>> task_released_;    // release_inputs ran
  std::mutex deferred_mu_;
  std::vector<std::pair<size_t, CellIndex>> deferred_;  // cells other processes were computing
};

}  // namespace

bool confirm_complete(const Graph& graph, size_t node) {
  CacheDirectory* cache = graph.cache();
  const GraphNode& n = graph.nodes()[node];
  if (cache == nullptr || !n.persist) return false;
  if (cache->is_complete(n.hash)) return true;
  const auto image = graph.image(node);
  const CellGrid& grid = image->grid();
  for (int64_t c = 0; c < grid.num_cells(); ++c)
    if (!image->available(grid.cell_at(c))) return false;
  cache->mark_complete(n.hash);
  return true;
}

RunReport materialize(const Graph& graph, std::vector<size_t> targets, const RunOptions& options) {
  return Materialization(graph, std::move(targets), options).run();
}

}  // namespace cellflow

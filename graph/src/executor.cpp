#include "cellflow/graph/executor.hpp"

#include <fmt/format.h>
#include <tbb/flow_graph.h>
#include <tbb/task_arena.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/graph/cancel.hpp"
#include "cellflow/store/wait_lock.hpp"

namespace cellflow {
namespace {

using Clock = std::chrono::steady_clock;
using FlowNode = tbb::flow::continue_node<tbb::flow::continue_msg>;

struct NodeRun {
  bool needed = false;
  std::shared_ptr<CachedCellImage> image;
  std::vector<char> scheduled;  // per cell: this run must produce it
  int64_t scheduled_count = 0;
  std::vector<FlowNode*> flow;  // per cell, when scheduled
  FlowNode* prepare = nullptr;
  std::atomic<int64_t> done{0};
  std::atomic<int64_t> nanos{0};
  CellImageStats before;
};

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

}  // namespace

RunReport materialize(const Graph& graph, std::vector<size_t> targets, const RunOptions& options) {
  const auto t0 = Clock::now();
  if (targets.empty()) targets = graph.outputs();
  const auto& nodes = graph.nodes();
  CacheDirectory* cache = graph.cache();
  std::deque<NodeRun> runs(nodes.size());
  const std::vector<size_t> order = graph.ancestors(targets);
  std::vector<char> is_target(nodes.size(), 0);
  for (size_t t : targets) is_target[t] = 1;

  // A node's timeout per cell attempt (its op's own policy wins); it also
  // bounds every lock wait for the node (ScopedWaitLimit): a lease, metadata
  // or cell lock that another process holds never stalls a run past it.
  const auto timeout_of = [&](size_t i) {
    return nodes[i].op->timeout_seconds() >= 0 ? nodes[i].op->timeout_seconds()
                                               : options.timeout_seconds;
  };
  const auto image_of = [&](size_t i) -> CachedCellImage& {
    if (!runs[i].image) {
      const ScopedWaitLimit wait(ScopedWaitLimit::from_seconds(timeout_of(i)));
      runs[i].image = graph.image(i);
      runs[i].before = runs[i].image->stats();
    }
    return *runs[i].image;
  };

  // Backward pass: which cells must this run produce? A target's missing
  // cells, and then the missing input cells those read, transitively. Cells
  // already committed are never recomputed.
  // Every node this run may touch gets its image now, so that loads of
  // committed cells are counted in the report.
  for (size_t i : order) image_of(i);
  for (size_t i : order) {
    const auto cells =
        static_cast<size_t>(CellGrid(nodes[i].info.shape, nodes[i].info.cell_shape).num_cells());
    runs[i].scheduled.assign(cells, 0);
    runs[i].flow.assign(cells, nullptr);
  }
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const size_t i = *it;
    NodeRun& r = runs[i];
    const GraphNode& n = nodes[i];
    const CellGrid grid(n.info.shape, n.info.cell_shape);
    // The completion marker is not trusted here: a cell deleted since it was
    // written must be recomputed. Checking is one stat() per cell.
    if (is_target[i]) {
      CachedCellImage& img = image_of(i);
      for (int64_t c = 0; c < grid.num_cells(); ++c) {
        auto& s = r.scheduled[static_cast<size_t>(c)];
        if (!s && !img.available(grid.cell_at(c))) {
          s = 1;
          ++r.scheduled_count;
        }
      }
    }
    if (r.scheduled_count == 0) continue;
    r.needed = true;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const size_t in = n.inputs[k];
      const GraphNode& inode = nodes[in];
      NodeRun& ir = runs[in];
      const CellGrid igrid(inode.info.shape, inode.info.cell_shape);
      CachedCellImage& iimg = image_of(in);
      const auto mark = [&](const CellIndex& ic) {
        const auto l = static_cast<size_t>(igrid.linear(ic));
        if (!ir.scheduled[l] && !iimg.available(ic)) {
          ir.scheduled[l] = 1;
          ++ir.scheduled_count;
        }
      };
      if (n.kernel->needs_prepare()) {
        // A global op's prepare() reads its whole input.
        for_each_index(igrid.cells_touching(igrid.bounds()), mark);
      } else {
        for (int64_t c = 0; c < grid.num_cells(); ++c) {
          if (!r.scheduled[static_cast<size_t>(c)]) continue;
          const Box need = n.kernel->input_region(k, grid.cell_box(grid.cell_at(c)), inode.info);
          for_each_index(igrid.cells_touching(need), mark);
        }
      }
    }
  }

  const auto snapshot = [&] {
    std::vector<NodeProgress> out;
    for (size_t i : order) {
      const NodeRun& r = runs[i];
      out.push_back(NodeProgress{i, static_cast<int64_t>(r.scheduled.size()), r.scheduled_count,
                                 r.done.load(std::memory_order_relaxed)});
    }
    return out;
  };

  {
    ProgressThread progress(options, snapshot);
    std::atomic<bool> stopping{false};
    std::mutex deferred_mu;
    std::vector<std::pair<size_t, CellIndex>> deferred;  // cells other processes were computing
    // One cell: retried up to `retries` times; each attempt has its own deadline.
    const auto run_cell = [&](size_t i, const CellIndex& cell, int retries, double timeout) {
      NodeRun& r = runs[i];
      for (int attempt = 1;; ++attempt) {
        const auto s = Clock::now();
        CellEvent ev;
        ev.node = i;
        ev.cell = cell;
        ev.attempt = attempt;
        try {
          const CancelToken token(timeout > 0 ? s + std::chrono::duration_cast<Clock::duration>(
                                                        std::chrono::duration<double>(timeout))
                                              : Clock::time_point::max(),
                                  &stopping);
          ScopedCancelToken scope(&token);
          const ScopedWaitLimit wait(ScopedWaitLimit::from_seconds(timeout));
          if (options.share_work && r.image->busy_elsewhere(cell) && !r.image->available(cell)) {
            std::lock_guard lock(deferred_mu);
            deferred.emplace_back(i, cell);
          } else if (options.cell_runner) {
            options.cell_runner(i, cell, timeout);
          } else {
            ev.computed = r.image->ensure(cell);
          }
          ev.seconds = std::chrono::duration<double>(Clock::now() - s).count();
          r.nanos.fetch_add(
              std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - s).count(),
              std::memory_order_relaxed);
          r.done.fetch_add(1, std::memory_order_relaxed);
          if (options.on_cell) options.on_cell(ev);
          return;
        } catch (const std::exception& e) {
          ev.seconds = std::chrono::duration<double>(Clock::now() - s).count();
          ev.error = e.what();
          const bool last = attempt > retries || stopping.load();
          ev.kind = last ? CellEvent::Kind::kFailed : CellEvent::Kind::kRetry;
          if (options.on_cell) options.on_cell(ev);
          if (last) {
            stopping.store(true);
            throw;
          }
          log_warning(fmt::format("node \"{}\": cell {}: attempt {} of {} failed: {}; retrying",
                                  nodes[i].def.id, cell.str(), attempt, retries + 1, e.what()));
        }
      }
    };
    tbb::task_arena arena(options.threads > 0 ? options.threads : tbb::task_arena::automatic);
    arena.execute([&] {
      tbb::flow::graph g;
      tbb::flow::broadcast_node<tbb::flow::continue_msg> start(g);
      std::deque<FlowNode> flow_nodes;
      for (size_t i : order) {
        NodeRun& r = runs[i];
        if (r.scheduled_count == 0) continue;
        const GraphNode& n = nodes[i];
        const CellGrid& grid = image_of(i).grid();
        if (n.kernel->needs_prepare()) {
          r.prepare = &flow_nodes.emplace_back(
              g, [&graph, &r, &timeout_of, i](const tbb::flow::continue_msg&) {
                // Its reads of input cells another process holds wait no longer
                // than a cell attempt.
                const ScopedWaitLimit wait(ScopedWaitLimit::from_seconds(timeout_of(i)));
                const auto s = Clock::now();
                graph.prepare(i);  // the global pass counts in the node's seconds
                r.nanos.fetch_add(
                    std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - s).count(),
                    std::memory_order_relaxed);
              });
          bool any = false;
          for (size_t in : n.inputs)
            for (FlowNode* f : runs[in].flow)
              if (f != nullptr) {
                tbb::flow::make_edge(*f, *r.prepare);
                any = true;
              }
          if (!any) tbb::flow::make_edge(start, *r.prepare);
        }
        const int retries =
            n.op->max_retries() >= 0 ? n.op->max_retries() : std::max(0, options.max_retries);
        const double timeout = timeout_of(i);
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
          FlowNode& f = flow_nodes.emplace_back(
              g, [&, i, cell, retries, timeout](const tbb::flow::continue_msg&) {
                run_cell(i, cell, retries, timeout);
              });
          r.flow[static_cast<size_t>(c)] = &f;
          bool any = false;
          if (r.prepare != nullptr) {
            tbb::flow::make_edge(*r.prepare, f);
            any = true;
          }
          const Box box = grid.cell_box(cell);
          for (size_t k = 0; k < n.inputs.size(); ++k) {
            const size_t in = n.inputs[k];
            if (runs[in].scheduled_count == 0) continue;
            const GraphNode& inode = nodes[in];
            const CellGrid igrid(inode.info.shape, inode.info.cell_shape);
            for_each_index(
                igrid.cells_touching(n.kernel->input_region(k, box, inode.info)),
                [&](const CellIndex& ic) {
                  if (FlowNode* p = runs[in].flow[static_cast<size_t>(igrid.linear(ic))]) {
                    tbb::flow::make_edge(*p, f);
                    any = true;
                  }
                });
          }
          if (!any) tbb::flow::make_edge(start, f);
        }
      }
      start.try_put(tbb::flow::continue_msg());
      g.wait_for_all();
      // The cells other processes were computing: wait for their commits (a
      // dead process's lock is released by the kernel, and then we compute).
      for (const auto& [i, cell] : deferred) {
        const ScopedWaitLimit wait(ScopedWaitLimit::from_seconds(timeout_of(i)));
        runs[i].image->ensure(cell);
      }
    });
  }

  RunReport report;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const GraphNode& n = nodes[i];
    NodeReport nr;
    nr.node = i;
    nr.cells_total = CellGrid(n.info.shape, n.info.cell_shape).num_cells();
    NodeRun& r = runs[i];
    if (r.image) {
      const CellImageStats after = r.image->stats();
      nr.cells_computed = after.computed - r.before.computed;
      nr.cells_loaded = after.loaded - r.before.loaded;
      nr.cells_corrupt = after.corrupt - r.before.corrupt;
    }
    nr.seconds = static_cast<double>(r.nanos.load()) * 1e-9;
    if (cache) {
      nr.complete = cache->is_complete(n.hash);
      // Any node this run touched: a killed earlier run may have committed its last cells.
      if (!nr.complete && r.image) {
        CachedCellImage& img = image_of(i);
        bool all = true;
        for (int64_t c = 0; all && c < nr.cells_total; ++c)
          all = img.available(img.grid().cell_at(c));
        if (all) {
          cache->mark_complete(n.hash);
          nr.complete = true;
        }
      }
    } else {
      nr.complete = r.needed && r.done.load() == r.scheduled_count;
    }
    report.nodes.push_back(nr);
  }
  report.wall_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return report;
}

}  // namespace cellflow

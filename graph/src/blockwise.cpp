#include "cellflow/graph/blockwise.hpp"

#include <fmt/format.h>
#include <tbb/global_control.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/cancel.hpp"

namespace cellflow {
namespace {

using Clock = std::chrono::steady_clock;

int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

std::string task_label(const BlockwiseTask& t) { return fmt::format("task \"{}\"", t.name); }

// The geometry of one task's blocks: where block `index` lies, and which
// blocks' write ROIs meet a region.
struct BlockGrid {
  int rank = 0;
  Box total_read;
  Box total_write;
  Dims context_lo, context_hi;
  Shape read_shape, write_shape;
  Dims counts;  // blocks per axis
  Fit fit = Fit::kValid;

  int64_t num_blocks() const { return counts.rank() == 0 ? 0 : counts.product(); }

  Block block(int64_t id) const {
    Block b;
    b.id = id;
    b.index = Dims(rank);
    int64_t rest = id;
    for (int d = rank - 1; d >= 0; --d) {
      b.index[d] = rest % counts[d];
      rest /= counts[d];
    }
    Dims wb(rank), we(rank);
    for (int d = 0; d < rank; ++d) {
      wb[d] = total_write.begin()[d] + b.index[d] * write_shape[d];
      we[d] = wb[d] + write_shape[d];
    }
    b.write_roi = Box(wb, we);
    b.read_roi = b.write_roi.grow(context_lo, context_hi);
    if (fit == Fit::kShrink) {
      b.write_roi = b.write_roi.intersect(total_write);
      b.read_roi = b.read_roi.intersect(total_read);
    }
    return b;
  }

  int64_t linear(const Dims& index) const {
    int64_t id = 0;
    for (int d = 0; d < rank; ++d) id = id * counts[d] + index[d];
    return id;
  }

  /// Calls fn(id) for every block whose write ROI meets `region`.
  template <class Fn>
  void blocks_writing(const Box& region, Fn&& fn) const {
    if (num_blocks() == 0 || region.rank() != rank || region.empty()) return;
    Dims lo(rank), hi(rank);  // inclusive block index ranges
    for (int d = 0; d < rank; ++d) {
      const int64_t w = write_shape[d];
      const int64_t o = total_write.begin()[d];
      lo[d] = std::max<int64_t>(0, floor_div(region.begin()[d] - o, w));
      hi[d] = std::min<int64_t>(counts[d] - 1, floor_div(region.end()[d] - o - 1, w));
      if (lo[d] > hi[d]) return;
    }
    Dims end = hi;
    for (int d = 0; d < rank; ++d) end[d] += 1;
    for_each_index(Box(lo, end), [&](const Dims& index) {
      const int64_t id = linear(index);
      // Shrunk boundary blocks write less than the unshrunk candidates.
      if (fit != Fit::kShrink || !block(id).write_roi.intersect(region).empty()) fn(id);
    });
  }

  /// daisy's level ("colour") of a block: blocks of one colour are at least
  /// write shape + the larger context apart on some axis, so they never conflict.
  int64_t colour(const Dims& index) const {
    int64_t c = 0;
    for (int d = 0; d < rank; ++d) {
      const int64_t w = write_shape[d];
      const int64_t levels = ceil_div(std::max(context_lo[d], context_hi[d]) + w, w);
      c = c * levels + index[d] % levels;
    }
    return c;
  }
};

BlockGrid make_grid(const BlockwiseTask& t) {
  const std::string where = task_label(t);
  const int rank = t.total_roi.rank();
  if (rank < 1 || rank > kMaxRank)
    throw InvalidArgument(fmt::format("{}: field \"total_roi\" must have rank 1 to {} (got {})",
                                      where, kMaxRank, rank));
  if (t.read_roi.rank() != rank || t.write_roi.rank() != rank)
    throw InvalidArgument(
        fmt::format("{}: total_roi {}, read_roi {} and write_roi {} must have the same rank", where,
                    t.total_roi.str(), t.read_roi.str(), t.write_roi.str()));
  for (int d = 0; d < rank; ++d) {
    if (t.write_roi.end()[d] <= t.write_roi.begin()[d])
      throw InvalidArgument(fmt::format("{}: field \"write_roi\" must not be empty (got {})", where,
                                        t.write_roi.str()));
    if (t.total_roi.end()[d] < t.total_roi.begin()[d])
      throw InvalidArgument(fmt::format("{}: field \"total_roi\" has end < begin (got {})", where,
                                        t.total_roi.str()));
  }
  if (!t.read_roi.contains(t.write_roi))
    throw InvalidArgument(fmt::format("{}: field \"read_roi\" {} must contain write_roi {}", where,
                                      t.read_roi.str(), t.write_roi.str()));
  BlockGrid g;
  g.rank = rank;
  g.fit = t.fit;
  g.total_read = t.total_roi;
  g.read_shape = t.read_roi.shape();
  g.write_shape = t.write_roi.shape();
  g.context_lo = Dims(rank);
  g.context_hi = Dims(rank);
  for (int d = 0; d < rank; ++d) {
    g.context_lo[d] = t.write_roi.begin()[d] - t.read_roi.begin()[d];
    g.context_hi[d] = t.read_roi.end()[d] - t.write_roi.end()[d];
  }
  Dims wb(rank), we(rank);
  for (int d = 0; d < rank; ++d) {
    wb[d] = t.total_roi.begin()[d] + g.context_lo[d];
    we[d] = std::max(wb[d], t.total_roi.end()[d] - g.context_hi[d]);
  }
  g.total_write = Box(wb, we);
  g.counts = Dims(rank);
  for (int d = 0; d < rank; ++d) {
    const int64_t extent = we[d] - wb[d];
    const int64_t w = g.write_shape[d];
    // valid: whole write ROIs only; overhang/shrink: any write ROI that
    // begins inside the total write ROI.
    g.counts[d] = t.fit == Fit::kValid ? extent / w : ceil_div(extent, w);
  }
  return g;
}

void validate_for_run(const BlockwiseTask& t) {
  const std::string where = task_label(t);
  if (t.name.empty()) throw InvalidArgument("blockwise task: field \"name\" must not be empty");
  if (!t.process) throw InvalidArgument(fmt::format("{}: field \"process\" is not set", where));
  if (t.max_retries < 0)
    throw InvalidArgument(
        fmt::format("{}: field \"max_retries\" must be >= 0 (got {})", where, t.max_retries));
  if (!(t.timeout_seconds >= 0))
    throw InvalidArgument(fmt::format("{}: field \"timeout_seconds\" must be >= 0 (got {})", where,
                                      t.timeout_seconds));
  if (t.num_workers < 0)
    throw InvalidArgument(
        fmt::format("{}: field \"num_workers\" must be >= 0 (got {})", where, t.num_workers));
}

enum class Outcome { kDone, kSkipped, kFailed, kOrphaned };

// One block in the run's dependency graph.
struct Node {
  size_t task = 0;
  Block block;
  std::vector<size_t> successors;
  std::atomic<int64_t> pending{0};    // predecessors not finished yet
  std::atomic<bool> poisoned{false};  // a predecessor failed or was orphaned
};

struct TaskRun {
  const BlockwiseTask* task = nullptr;
  BlockGrid grid;
  size_t first_node = 0;
  int cap = INT_MAX;  // blocks of this task running at once
  std::mutex mu;
  int running = 0;
  std::deque<size_t> waiting;  // ready, but the task is at its cap
  std::atomic<int64_t> done{0}, skipped{0}, failed{0}, orphaned{0}, retries{0};
  std::vector<BlockFailure> failures;  // under mu
};

// The tasks of a run, upstream first; checks names and cycles.
std::vector<const BlockwiseTask*> collect_tasks(const std::vector<const BlockwiseTask*>& roots) {
  std::vector<const BlockwiseTask*> order;
  std::unordered_map<const BlockwiseTask*, int> state;  // 1 visiting, 2 done
  std::unordered_map<std::string, const BlockwiseTask*> names;
  const auto visit = [&](auto&& self, const BlockwiseTask* t) -> void {
    if (t == nullptr) throw InvalidArgument("blockwise: a task (or an upstream task) is null");
    int& s = state[t];
    if (s == 2) return;
    if (s == 1)
      throw InvalidArgument(
          fmt::format("{}: field \"upstream\": the tasks form a cycle", task_label(*t)));
    s = 1;
    for (const BlockwiseTask* u : t->upstream) self(self, u);
    state[t] = 2;
    auto [it, inserted] = names.emplace(t->name, t);
    if (!inserted && it->second != t)
      throw InvalidArgument(
          fmt::format("{}: field \"name\": two different tasks have this name", task_label(*t)));
    order.push_back(t);
  };
  for (const BlockwiseTask* t : roots) visit(visit, t);
  return order;
}

class Runner {
 public:
  explicit Runner(const std::vector<const BlockwiseTask*>& tasks) {
    const std::vector<const BlockwiseTask*> order = collect_tasks(tasks);
    for (const BlockwiseTask* t : order) validate_for_run(*t);
    runs_ = std::deque<TaskRun>(order.size());
    size_t total = 0;
    for (size_t i = 0; i < order.size(); ++i) {
      TaskRun& r = runs_[i];
      r.task = order[i];
      r.grid = make_grid(*r.task);
      r.first_node = total;
      if (r.task->num_workers > 0) r.cap = r.task->num_workers;
      total += static_cast<size_t>(r.grid.num_blocks());
      index_[r.task] = i;
    }
    nodes_ = std::make_unique<Node[]>(total);
    num_nodes_ = total;
    for (size_t i = 0; i < runs_.size(); ++i) {
      const TaskRun& r = runs_[i];
      for (int64_t id = 0; id < r.grid.num_blocks(); ++id) {
        Node& n = nodes_[r.first_node + static_cast<size_t>(id)];
        n.task = i;
        n.block = r.grid.block(id);
      }
    }
    add_edges();
  }

  std::vector<const TaskRun*> runs() const {
    std::vector<const TaskRun*> out;
    for (const TaskRun& r : runs_) out.push_back(&r);
    return out;
  }

  int concurrency() const {
    int c = 0;
    for (const TaskRun& r : runs_) {
      if (r.task->num_workers == 0) return tbb::task_arena::automatic;
      c = std::max(c, r.task->num_workers);
    }
    if (c == 0) return tbb::task_arena::automatic;
    // TBB runs no more threads than this limit (the machine's cores unless a
    // global_control raised it); asking for more only makes TBB warn.
    const auto limit = static_cast<int>(
        tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism));
    return std::max(1, std::min(c, limit));
  }

  void run() {
    tbb::task_arena arena(concurrency());
    arena.execute([&] {
      std::vector<size_t> roots;
      for (size_t i = 0; i < num_nodes_; ++i)
        if (nodes_[i].pending.load(std::memory_order_relaxed) == 0) roots.push_back(i);
      for (size_t i : roots) make_ready(i);
      group_.wait();
    });
  }

 private:
  void add_edges() {
    std::vector<std::pair<size_t, size_t>> edges;
    for (size_t ti = 0; ti < runs_.size(); ++ti) {
      const TaskRun& r = runs_[ti];
      const BlockGrid& g = r.grid;
      for (int64_t id = 0; id < g.num_blocks(); ++id) {
        const size_t me = r.first_node + static_cast<size_t>(id);
        const Block& b = nodes_[me].block;
        // Conflicts inside the task: order every conflicting pair by colour,
        // then id. A pair is found from the side whose read ROI meets the
        // other's write ROI; the reverse case is found from the other side.
        if (r.task->read_write_conflict) {
          const int64_t my_colour = g.colour(b.index);
          g.blocks_writing(b.read_roi, [&](int64_t other) {
            if (other == id) return;
            const size_t them = r.first_node + static_cast<size_t>(other);
            const int64_t their_colour = g.colour(nodes_[them].block.index);
            const bool me_first =
                my_colour < their_colour || (my_colour == their_colour && id < other);
            if (me_first)
              edges.emplace_back(me, them);
            else
              edges.emplace_back(them, me);
          });
        }
        // Upstream tasks: wait for every upstream block that writes what we read.
        for (const BlockwiseTask* u : r.task->upstream) {
          const TaskRun& ur = runs_[index_.at(u)];
          if (ur.grid.rank != g.rank)
            throw InvalidArgument(
                fmt::format("{}: field \"upstream\": upstream {} has rank {}, this task rank {}",
                            task_label(*r.task), task_label(*u), ur.grid.rank, g.rank));
          ur.grid.blocks_writing(b.read_roi, [&](int64_t other) {
            edges.emplace_back(ur.first_node + static_cast<size_t>(other), me);
          });
        }
      }
    }
    std::sort(edges.begin(), edges.end());
    edges.erase(std::unique(edges.begin(), edges.end()), edges.end());
    for (const auto& [from, to] : edges) {
      nodes_[from].successors.push_back(to);
      nodes_[to].pending.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // A block whose predecessors all finished: run it (or queue it behind the
  // task's cap), or, if one of them failed, orphan it and its dependents.
  void make_ready(size_t first) {
    std::vector<size_t> orphans{first};
    while (!orphans.empty()) {
      const size_t i = orphans.back();
      orphans.pop_back();
      Node& n = nodes_[i];
      TaskRun& r = runs_[n.task];
      if (!n.poisoned.load(std::memory_order_acquire)) {
        {
          std::lock_guard lock(r.mu);
          if (r.running >= r.cap) {
            r.waiting.push_back(i);
            continue;
          }
          ++r.running;
        }
        spawn(i);
        continue;
      }
      r.orphaned.fetch_add(1, std::memory_order_relaxed);
      for (size_t s : n.successors) {
        nodes_[s].poisoned.store(true, std::memory_order_release);
        if (nodes_[s].pending.fetch_sub(1, std::memory_order_acq_rel) == 1) orphans.push_back(s);
      }
    }
  }

  void spawn(size_t i) {
    group_.run([this, i] { finish(i, run_block(i)); });
  }

  Outcome run_block(size_t i) {
    Node& n = nodes_[i];
    TaskRun& r = runs_[n.task];
    const BlockwiseTask& t = *r.task;
    std::string error;
    const int attempts = t.max_retries + 1;
    for (int attempt = 1; attempt <= attempts; ++attempt) {
      try {
        const auto start = Clock::now();
        const auto deadline = t.timeout_seconds > 0
                                  ? start + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(t.timeout_seconds))
                                  : Clock::time_point::max();
        const CancelToken token(deadline);
        const ScopedCancelToken scope(&token);
        if (t.check && t.check(n.block)) {
          // On a retry, an earlier attempt of this run did the work.
          return attempt == 1 ? Outcome::kSkipped : Outcome::kDone;
        }
        t.process(n.block);
        if (Clock::now() > deadline)
          throw Cancelled(fmt::format("timed out: process() returned after the limit of {} s",
                                      t.timeout_seconds));
        if (t.check && !t.check(n.block))
          throw NodeError("check() says the block is not done after process() returned");
        return Outcome::kDone;
      } catch (const std::exception& e) {
        error = e.what();
      } catch (...) {
        error = "unknown exception";
      }
      if (attempt < attempts) r.retries.fetch_add(1, std::memory_order_relaxed);
    }
    std::lock_guard lock(r.mu);
    r.failures.push_back(BlockFailure{n.block, attempts, error});
    return Outcome::kFailed;
  }

  void finish(size_t i, Outcome outcome) {
    Node& n = nodes_[i];
    TaskRun& r = runs_[n.task];
    switch (outcome) {
      case Outcome::kDone:
        r.done.fetch_add(1, std::memory_order_relaxed);
        break;
      case Outcome::kSkipped:
        r.skipped.fetch_add(1, std::memory_order_relaxed);
        break;
      case Outcome::kFailed:
        r.failed.fetch_add(1, std::memory_order_relaxed);
        break;
      case Outcome::kOrphaned:
        r.orphaned.fetch_add(1, std::memory_order_relaxed);
        break;
    }
    size_t next = SIZE_MAX;
    {
      std::lock_guard lock(r.mu);
      if (!r.waiting.empty()) {
        next = r.waiting.front();
        r.waiting.pop_front();
      } else {
        --r.running;
      }
    }
    if (next != SIZE_MAX) spawn(next);  // takes over this block's slot
    const bool poison = outcome == Outcome::kFailed || outcome == Outcome::kOrphaned;
    for (size_t s : n.successors) {
      if (poison) nodes_[s].poisoned.store(true, std::memory_order_release);
      if (nodes_[s].pending.fetch_sub(1, std::memory_order_acq_rel) == 1) make_ready(s);
    }
  }

  std::deque<TaskRun> runs_;
  std::unordered_map<const BlockwiseTask*, size_t> index_;
  std::unique_ptr<Node[]> nodes_;
  size_t num_nodes_ = 0;
  tbb::task_group group_;
};

}  // namespace

std::string_view fit_name(Fit fit) {
  switch (fit) {
    case Fit::kValid:
      return "valid";
    case Fit::kOverhang:
      return "overhang";
    case Fit::kShrink:
      return "shrink";
  }
  return "?";
}

Fit parse_fit(std::string_view name) {
  if (name == "valid") return Fit::kValid;
  if (name == "overhang") return Fit::kOverhang;
  if (name == "shrink") return Fit::kShrink;
  throw InvalidArgument(
      fmt::format("fit must be \"valid\", \"overhang\" or \"shrink\" (got \"{}\")", name));
}

std::vector<Block> enumerate_blocks(const BlockwiseTask& task) {
  const BlockGrid g = make_grid(task);
  std::vector<Block> out;
  out.reserve(static_cast<size_t>(g.num_blocks()));
  for (int64_t id = 0; id < g.num_blocks(); ++id) out.push_back(g.block(id));
  return out;
}

bool BlockwiseReport::ok() const {
  return std::all_of(tasks.begin(), tasks.end(), [](const TaskReport& t) { return t.ok(); });
}

const TaskReport& BlockwiseReport::task(std::string_view name) const {
  for (const TaskReport& t : tasks)
    if (t.name == name) return t;
  throw InvalidArgument(fmt::format("blockwise report: no task \"{}\"", name));
}

std::string BlockwiseReport::summary() const {
  std::string out;
  for (const TaskReport& t : tasks) {
    out += fmt::format("{}: {} blocks, {} done, {} skipped, {} failed, {} orphaned\n", t.name,
                       t.blocks, t.done, t.skipped, t.failed, t.orphaned);
  }
  return out;
}

BlockwiseReport run_blockwise(const std::vector<const BlockwiseTask*>& tasks) {
  const auto t0 = Clock::now();
  Runner runner(tasks);
  runner.run();
  BlockwiseReport report;
  for (const TaskRun* r : runner.runs()) {
    TaskReport t;
    t.name = r->task->name;
    t.blocks = r->grid.num_blocks();
    t.done = r->done.load();
    t.skipped = r->skipped.load();
    t.failed = r->failed.load();
    t.orphaned = r->orphaned.load();
    t.retries = r->retries.load();
    t.failures = r->failures;
    std::sort(t.failures.begin(), t.failures.end(),
              [](const BlockFailure& a, const BlockFailure& b) { return a.block.id < b.block.id; });
    report.tasks.push_back(std::move(t));
  }
  report.wall_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return report;
}

BlockwiseReport run_blockwise(const BlockwiseTask& task) { return run_blockwise({&task}); }

}  // namespace cellflow

#include "cellflow/graph/blockwise.hpp"

#include <fmt/format.h>
#include <tbb/global_control.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/scheduler.hpp"

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

// A task's share of a run: its blocks' scheduler tasks are first_task +
// block id.
struct TaskRun {
  const BlockwiseTask* task = nullptr;
  BlockGrid grid;
  size_t first_task = 0;
  int group = -1;  // its scheduler group (num_workers), or -1
  // Threads that ran its init_worker callback.
  std::mutex init_mu;
  std::set<std::thread::id> initialized;
  std::atomic<int64_t> retries{0};
};

// Runs init_worker once in each thread before the first block it processes.
void ensure_worker_initialized(TaskRun& r) {
  if (!r.task->init_worker) return;
  const std::thread::id me = std::this_thread::get_id();
  {
    std::lock_guard lock(r.init_mu);
    if (r.initialized.count(me) != 0) return;
  }
  try {
    r.task->init_worker();
  } catch (const std::exception& e) {
    throw NodeError(fmt::format("init_worker failed: {}", e.what()));
  }
  std::lock_guard lock(r.init_mu);
  r.initialized.insert(me);
}

// One attempt of a block: the checks and the process function.
TaskOutcome attempt_block(TaskRun& r, const Block& block) {
  const BlockwiseTask& t = *r.task;
  if (t.check && t.check(block)) return TaskOutcome::kSkipped;
  ensure_worker_initialized(r);
  t.process(block);
  const auto& after = t.post_check ? t.post_check : t.check;
  if (after && !after(block))
    throw NodeError(fmt::format("{} says the block is not done after process() returned",
                                t.post_check ? "post_check()" : "check()"));
  return TaskOutcome::kDone;
}

// The arena's threads: max(num_workers), or all cores when a task says 0.
int concurrency(const std::deque<TaskRun>& runs) {
  int c = 0;
  for (const TaskRun& r : runs) {
    if (r.task->num_workers == 0) return 0;
    c = std::max(c, r.task->num_workers);
  }
  if (c == 0) return 0;
  // TBB runs no more threads than this limit (the machine's cores unless a
  // global_control raised it); asking for more only makes TBB warn.
  const auto limit = static_cast<int>(
      tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism));
  return std::max(1, std::min(c, limit));
}

// Every block waits for what it depends on: the conflicting blocks of its
// own task that come first, and the upstream blocks whose output it reads.
void add_edges(Scheduler& scheduler, const std::deque<TaskRun>& runs,
               const std::unordered_map<const BlockwiseTask*, size_t>& index) {
  for (const TaskRun& r : runs) {
    const BlockGrid& g = r.grid;
    for (int64_t id = 0; id < g.num_blocks(); ++id) {
      const size_t me = r.first_task + static_cast<size_t>(id);
      const Block b = g.block(id);
      // Conflicts inside the task: order every conflicting pair by colour,
      // then id. A pair is found from the side whose read ROI meets the
      // other's write ROI; the reverse case is found from the other side.
      if (r.task->read_write_conflict) {
        const int64_t my_colour = g.colour(b.index);
        g.blocks_writing(b.read_roi, [&](int64_t other) {
          if (other == id) return;
          const size_t them = r.first_task + static_cast<size_t>(other);
          const int64_t their_colour = g.colour(g.block(other).index);
          const bool me_first =
              my_colour < their_colour || (my_colour == their_colour && id < other);
          if (me_first)
            scheduler.precede(me, them);
          else
            scheduler.precede(them, me);
        });
      }
      for (const BlockwiseTask* u : r.task->upstream) {
        const TaskRun& ur = runs[index.at(u)];
        if (ur.grid.rank != g.rank)
          throw InvalidArgument(
              fmt::format("{}: field \"upstream\": upstream {} has rank {}, this task rank {}",
                          task_label(*r.task), task_label(*u), ur.grid.rank, g.rank));
        ur.grid.blocks_writing(b.read_roi, [&](int64_t other) {
          scheduler.precede(ur.first_task + static_cast<size_t>(other), me);
        });
      }
    }
  }
}

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
  const std::vector<const BlockwiseTask*> order = collect_tasks(tasks);
  for (const BlockwiseTask* t : order) validate_for_run(*t);
  std::deque<TaskRun> runs(order.size());
  std::unordered_map<const BlockwiseTask*, size_t> index;
  for (size_t i = 0; i < order.size(); ++i) {
    runs[i].task = order[i];
    runs[i].grid = make_grid(*order[i]);
    index[order[i]] = i;
  }

  // One scheduler task per block; a failed block orphans what waits for it.
  std::vector<TaskRun*> run_of;  // per scheduler task
  Scheduler::Options so;
  so.threads = concurrency(runs);
  so.on_failure = OnFailure::kContinue;
  so.on_attempt = [&run_of](const AttemptEvent& ev) {
    if (ev.outcome == TaskOutcome::kPending)
      run_of[ev.task]->retries.fetch_add(1, std::memory_order_relaxed);
  };
  Scheduler scheduler(std::move(so));
  for (TaskRun& r : runs) {
    const BlockwiseTask& t = *r.task;
    if (t.num_workers > 0) r.group = scheduler.add_group(t.num_workers);
    r.first_task = scheduler.size();
    const Scheduler::Policy policy{t.max_retries, t.timeout_seconds, r.group};
    for (int64_t id = 0; id < r.grid.num_blocks(); ++id) {
      scheduler.add(
          [&r, block = r.grid.block(id)](const AttemptContext&) { return attempt_block(r, block); },
          policy);
      run_of.push_back(&r);
    }
  }
  add_edges(scheduler, runs, index);
  scheduler.run();

  BlockwiseReport report;
  for (TaskRun& r : runs) {
    TaskReport t;
    t.name = r.task->name;
    t.blocks = r.grid.num_blocks();
    t.retries = r.retries.load();
    for (int64_t id = 0; id < t.blocks; ++id) {
      const size_t task = r.first_task + static_cast<size_t>(id);
      switch (scheduler.outcome(task)) {
        case TaskOutcome::kDone:
          ++t.done;
          break;
        case TaskOutcome::kSkipped:
          ++t.skipped;
          break;
        case TaskOutcome::kFailed:
          ++t.failed;
          t.failures.push_back(
              BlockFailure{r.grid.block(id), scheduler.attempts(task), scheduler.error(task)});
          break;
        default:  // orphaned (nothing cancels a blockwise run)
          ++t.orphaned;
          break;
      }
    }
    report.tasks.push_back(std::move(t));
  }
  report.wall_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return report;
}

BlockwiseReport run_blockwise(const BlockwiseTask& task) { return run_blockwise({&task}); }

}  // namespace cellflow

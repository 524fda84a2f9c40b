#include "cellflow/graph/scheduler.hpp"

#include <fmt/format.h>
#include <tbb/flow_graph.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <utility>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/cancel.hpp"
#include "cellflow/store/wait_lock.hpp"

namespace cellflow {
namespace {

using Clock = std::chrono::steady_clock;
using FlowNode = tbb::flow::continue_node<tbb::flow::continue_msg>;

struct Task {
  Scheduler::Body body;
  Scheduler::Policy policy;
  std::vector<size_t> successors;
  int predecessors = 0;
  std::atomic<bool> poisoned{false};  // a predecessor failed or was orphaned
  TaskOutcome outcome = TaskOutcome::kPending;
  int attempts = 0;
  std::string error;
  FlowNode* flow = nullptr;
};

struct Group {
  int max_running = 1;
  std::mutex mu;
  int running = 0;
  std::deque<size_t> waiting;  // ready, but the group is at its limit
};

}  // namespace

double AttemptContext::seconds_left() const {
  if (timeout_seconds <= 0) return 0;
  const double left = std::chrono::duration<double>(deadline - Clock::now()).count();
  return std::max(left, 1e-3);
}

struct Scheduler::Impl {
  Options options;
  std::deque<Task> tasks;
  std::deque<Group> groups;
  std::vector<std::pair<size_t, size_t>> edges;
  bool ran = false;

  // Tasks without predecessors, outside any group, in the order they are
  // released (see run()); next_root is the first not yet released.
  std::vector<size_t> roots;
  std::atomic<size_t> next_root{0};
  int64_t threads = 1;                       // the arena's
  std::deque<std::atomic<int>> waiting_for;  // per task: predecessors not finished
  std::atomic<int64_t> queued{0};            // tasks ready, not started
  std::atomic<int64_t> running{0};           // tasks in an attempt

  std::atomic<bool> stopping{false};  // kStop: a task failed
  std::mutex first_mu;
  std::exception_ptr first_failure;

  bool stop_requested() const {
    return stopping.load(std::memory_order_relaxed) ||
           (options.stop != nullptr && options.stop->load(std::memory_order_relaxed));
  }

  void report(size_t i, int attempt, TaskOutcome outcome, double seconds, std::string error) {
    if (!options.on_attempt) return;
    AttemptEvent ev;
    ev.task = i;
    ev.attempt = attempt;
    ev.outcome = outcome;
    ev.seconds = seconds;
    ev.error = std::move(error);
    options.on_attempt(ev);
  }

  // Every attempt of task i, until one succeeds or none is left.
  TaskOutcome attempt_all(size_t i) {
    Task& t = tasks[i];
    const double timeout = t.policy.timeout_seconds;
    for (int attempt = 1;; ++attempt) {
      if (stop_requested()) {
        report(i, 0, TaskOutcome::kCancelled, 0, {});
        return TaskOutcome::kCancelled;
      }
      t.attempts = attempt;
      AttemptContext ctx;
      ctx.task = i;
      ctx.attempt = attempt;
      ctx.timeout_seconds = timeout > 0 ? timeout : 0;
      const auto start = Clock::now();
      if (timeout > 0)
        ctx.deadline = start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(timeout));
      std::exception_ptr failure;
      const auto elapsed = [&] {
        return std::chrono::duration<double>(Clock::now() - start).count();
      };
      try {
        const CancelToken token(ctx.deadline, &stopping, options.stop);
        const ScopedCancelToken scope(&token);
        const ScopedWaitLimit wait(ScopedWaitLimit::from_seconds(timeout));
        TaskOutcome o = t.body(ctx);
        if (o != TaskOutcome::kSkipped) o = TaskOutcome::kDone;
        if (Clock::now() > ctx.deadline)
          throw Cancelled(
              fmt::format("timed out: the attempt returned after its limit of {} s", timeout));
        // On a retry, an earlier attempt of this run did the work.
        if (o == TaskOutcome::kSkipped && attempt > 1) o = TaskOutcome::kDone;
        report(i, attempt, o, elapsed(), {});
        return o;
      } catch (const std::exception& e) {
        t.error = e.what();
        failure = std::current_exception();
      } catch (...) {
        t.error = "unknown exception";
        failure = std::current_exception();
      }
      // A run that is stopping cancelled this attempt: not this task's failure.
      if (stop_requested()) {
        report(i, attempt, TaskOutcome::kCancelled, elapsed(), t.error);
        return TaskOutcome::kCancelled;
      }
      if (attempt > t.policy.max_retries) {
        record_failure_if_first(failure);
        report(i, attempt, TaskOutcome::kFailed, elapsed(), t.error);
        return TaskOutcome::kFailed;
      }
      report(i, attempt, TaskOutcome::kPending, elapsed(), t.error);
    }
  }

  // kStop: the first failure stops the run and is what run() rethrows.
  void record_failure_if_first(std::exception_ptr failure) {
    if (options.on_failure != OnFailure::kStop) return;
    std::lock_guard lock(first_mu);
    if (first_failure) return;
    first_failure = std::move(failure);
    stopping.store(true);
  }

  // Releases roots while fewer tasks are ready or running than the arena has
  // threads, plus one (see run()).
  void top_up() {
    while (queued.load() + running.load() <= threads && next_root.load() < roots.size()) {
      const size_t k = next_root.fetch_add(1);
      if (k >= roots.size()) return;
      ++queued;
      tasks[roots[k]].flow->try_put(tbb::flow::continue_msg());
    }
  }

  void finish(size_t i, TaskOutcome outcome) {
    Task& t = tasks[i];
    t.outcome = outcome;
    const bool poison = outcome == TaskOutcome::kFailed || outcome == TaskOutcome::kOrphaned;
    for (size_t s : t.successors)
      if (waiting_for[s].fetch_sub(1) == 1) ++queued;
    // Roots go in before the successors are spawned, so that the successors
    // (spawned last) run first in this thread.
    top_up();
    for (size_t s : t.successors) {
      if (poison) tasks[s].poisoned.store(true, std::memory_order_release);
      tasks[s].flow->try_put(tbb::flow::continue_msg());
    }
  }

  // Task i's predecessors have all finished.
  void ready(size_t i) {
    Task& t = tasks[i];
    --queued;
    if (stop_requested()) {
      report(i, 0, TaskOutcome::kCancelled, 0, {});
      finish(i, TaskOutcome::kCancelled);
      return;
    }
    if (t.poisoned.load(std::memory_order_acquire)) {
      report(i, 0, TaskOutcome::kOrphaned, 0, {});
      finish(i, TaskOutcome::kOrphaned);
      return;
    }
    Group* group = t.policy.group >= 0 ? &groups[static_cast<size_t>(t.policy.group)] : nullptr;
    if (group != nullptr) {
      std::lock_guard lock(group->mu);
      if (group->running >= group->max_running) {
        group->waiting.push_back(i);
        return;
      }
      ++group->running;
    }
    // Run it, then (in a group) the tasks that waited for a slot, in this thread.
    for (size_t cur = i;;) {
      ++running;
      const TaskOutcome o = attempt_all(cur);
      --running;
      finish(cur, o);
      if (group == nullptr) return;
      std::lock_guard lock(group->mu);
      if (group->waiting.empty()) {
        --group->running;
        return;
      }
      cur = group->waiting.front();
      group->waiting.pop_front();
    }
  }
};

Scheduler::Scheduler(Options options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
}

Scheduler::~Scheduler() = default;

int Scheduler::add_group(int max_running) {
  Group& g = impl_->groups.emplace_back();
  g.max_running = std::max(1, max_running);
  return static_cast<int>(impl_->groups.size() - 1);
}

size_t Scheduler::add(Body body, Policy policy) {
  if (policy.group >= static_cast<int>(impl_->groups.size()))
    throw std::logic_error("Scheduler::add: no such group");
  Task& t = impl_->tasks.emplace_back();
  t.body = std::move(body);
  t.policy = policy;
  return impl_->tasks.size() - 1;
}

void Scheduler::precede(size_t before, size_t after) {
  if (before >= size() || after >= size() || before == after)
    throw std::logic_error("Scheduler::precede: bad task index");
  impl_->edges.emplace_back(before, after);
}

size_t Scheduler::size() const { return impl_->tasks.size(); }

void Scheduler::run() {
  Impl& m = *impl_;
  if (m.ran) throw std::logic_error("Scheduler::run called twice");
  m.ran = true;
  std::sort(m.edges.begin(), m.edges.end());
  m.edges.erase(std::unique(m.edges.begin(), m.edges.end()), m.edges.end());
  for (const auto& [from, to] : m.edges) {
    m.tasks[from].successors.push_back(to);
    ++m.tasks[to].predecessors;
  }
  m.edges = {};
  // Roots (tasks that wait for nothing) are released only when there is not
  // enough other work: whenever fewer tasks are ready or running than the
  // arena has threads (plus one, so that a thread that finishes finds work),
  // and before the tasks a finished task made ready are spawned, so that those
  // run first in its thread (depth first). With every root spawned at the
  // start, a graph's sources (cells read from files, cheap) are nearly all
  // read before the cells that need them are computed: all in memory at once,
  // each in fresh pages (on a VM a first touch costs more than the codec).
  // Released in the order their first successors were added (add order for
  // roots without one), the cells a consumer needs come together, and the
  // memory a run touches follows its working set. Roots in a group are
  // released at the start: the group's limit already bounds them.
  for (size_t i = 0; i < m.tasks.size(); ++i)
    if (m.tasks[i].predecessors == 0 && m.tasks[i].policy.group < 0) m.roots.push_back(i);
  const auto first_use = [&m](size_t r) {
    const auto& s = m.tasks[r].successors;
    return s.empty() ? r : *std::min_element(s.begin(), s.end());
  };
  std::stable_sort(m.roots.begin(), m.roots.end(),
                   [&](size_t a, size_t b) { return first_use(a) < first_use(b); });
  tbb::task_arena arena(m.options.threads > 0 ? m.options.threads : tbb::task_arena::automatic);
  m.threads = arena.max_concurrency();
  for (const Task& t : m.tasks) m.waiting_for.emplace_back(t.predecessors);
  for (const Task& t : m.tasks)
    if (t.predecessors == 0 && t.policy.group >= 0) ++m.queued;
  arena.execute([&] {
    tbb::flow::graph g;
    std::deque<FlowNode> flow;
    for (size_t i = 0; i < m.tasks.size(); ++i) {
      m.tasks[i].flow =
          &flow.emplace_back(g, m.tasks[i].predecessors, [&m, i](const tbb::flow::continue_msg&) {
            m.ready(i);
            return tbb::flow::continue_msg();
          });
    }
    for (Task& t : m.tasks)
      if (t.predecessors == 0 && t.policy.group >= 0) t.flow->try_put(tbb::flow::continue_msg());
    m.top_up();
    g.wait_for_all();
    for (Task& t : m.tasks) t.flow = nullptr;
  });
  for (const Task& t : m.tasks)
    if (t.outcome == TaskOutcome::kPending)
      throw std::logic_error("Scheduler::run: the tasks' dependencies form a cycle");
  if (m.first_failure) std::rethrow_exception(m.first_failure);
  if (m.options.stop != nullptr && m.options.stop->load())
    throw Cancelled("the run was stopped before it finished");
}

TaskOutcome Scheduler::outcome(size_t task) const { return impl_->tasks.at(task).outcome; }
int Scheduler::attempts(size_t task) const { return impl_->tasks.at(task).attempts; }
const std::string& Scheduler::error(size_t task) const { return impl_->tasks.at(task).error; }

const char* Scheduler::name(TaskOutcome outcome) {
  switch (outcome) {
    case TaskOutcome::kPending:
      return "pending";
    case TaskOutcome::kDone:
      return "done";
    case TaskOutcome::kSkipped:
      return "skipped";
    case TaskOutcome::kFailed:
      return "failed";
    case TaskOutcome::kOrphaned:
      return "orphaned";
    case TaskOutcome::kCancelled:
      return "cancelled";
  }
  return "?";
}

}  // namespace cellflow

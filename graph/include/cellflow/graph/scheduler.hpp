// The one scheduler under graph materialization (materialize(), executor.hpp)
// and blockwise tasks (run_blockwise(), blockwise.hpp): a DAG of tasks run on a
// TBB flow graph in an arena of the chosen size. A task runs as soon as every
// task it depends on has finished; each attempt gets a deadline (its timeout)
// installed as this thread's cancel token (cancel.hpp) and as the bound of its
// lock waits (store/wait_lock.hpp); a failing attempt is retried up to the
// task's retries; an attempt that returns after its deadline failed.
//
// What a failure does is the front end's choice:
//  - OnFailure::kStop (graph runs): the first task that fails all its attempts
//    stops the run: attempts in flight are cancelled through their tokens,
//    tasks not started are not run, and run() rethrows that task's exception.
//  - OnFailure::kContinue (blockwise): the run goes on; the tasks that depend
//    on a failed task (transitively) are orphaned, not run.
// An external stop flag (Ctrl-C) cancels like kStop and makes run() throw
// Cancelled.
//
// Where an attempt runs is the body's choice: in the calling thread (a graph
// cell computed in process, a blockwise process function), in a worker process
// the body starts and kills at the attempt's deadline (`cellflow run
// --isolate`, `cellflow blockwise --workers`), or on another MPI rank or
// machine that shares the cache (the body takes a cross-process lock and waits
// for, or skips, work done elsewhere). The scheduler only orders, retries,
// times and cancels.
//
// Thread-safety: build the DAG from one thread, then run() once; bodies and
// on_attempt are called concurrently from the arena's threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cellflow {

enum class TaskOutcome {
  kPending,    // not finished (only before or during run())
  kDone,       // an attempt succeeded
  kSkipped,    // the body found the work already done (first attempt)
  kFailed,     // every attempt failed
  kOrphaned,   // not run: a task it depends on failed or was orphaned (kContinue)
  kCancelled,  // not run or stopped: the run was stopping (kStop, external stop)
};

/// What the body of one attempt is told.
struct AttemptContext {
  size_t task = 0;
  int attempt = 1;  // 1 for the first
  /// The attempt's deadline (time_point::max() without a timeout); a body
  /// that runs work elsewhere kills it at this time.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  double timeout_seconds = 0;  // 0 = none
  /// Seconds left until the deadline (0 without a timeout; at least 1 ms).
  double seconds_left() const;
};

/// Reported after every attempt (and for tasks orphaned or cancelled without
/// one, with attempt = 0).
struct AttemptEvent {
  size_t task = 0;
  int attempt = 1;
  TaskOutcome outcome = TaskOutcome::kPending;  // kPending: failed, will be retried
  double seconds = 0;
  std::string error;  // a failed attempt's cause
};

/// What a task that fails all its attempts does to the run.
enum class OnFailure {
  kStop,      // stops the run; run() rethrows its exception
  kContinue,  // the run goes on; what depends on it is orphaned
};

struct SchedulerOptions {
  /// Threads of the arena; 0 = all cores. TBB runs no more threads than the
  /// machine has cores.
  int threads = 0;
  OnFailure on_failure = OnFailure::kStop;
  /// Set by someone else to stop the run (e.g. a Ctrl-C handler).
  const std::atomic<bool>* stop = nullptr;
  /// After each attempt; thread-safe.
  std::function<void(const AttemptEvent&)> on_attempt;
};

struct TaskPolicy {
  int max_retries = 0;         // attempts after the first failing one
  double timeout_seconds = 0;  // per attempt, 0 = none
  /// A concurrency group from Scheduler::add_group(), or -1 for none.
  int group = -1;
};

class Scheduler {
 public:
  using Options = SchedulerOptions;
  using Policy = TaskPolicy;
  /// One attempt: returns kDone or kSkipped, throws to fail the attempt.
  using Body = std::function<TaskOutcome(const AttemptContext&)>;

  explicit Scheduler(Options options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// A group of tasks of which at most `max_running` (>= 1) run at once.
  int add_group(int max_running);
  /// Adds a task; returns its index (0, 1, ... in the order added).
  size_t add(Body body, Policy policy = {});
  /// `after` starts only once `before` has finished. Edges must not form a
  /// cycle; a repeated edge counts once.
  void precede(size_t before, size_t after);
  size_t size() const;

  /// Runs every task once (see the header comment for failures). Call once.
  void run();

  TaskOutcome outcome(size_t task) const;
  /// Attempts made (0 for tasks not run).
  int attempts(size_t task) const;
  /// The last failed attempt's cause ("" if none).
  const std::string& error(size_t task) const;

  /// A short name of an outcome ("done", "skipped", ...).
  static const char* name(TaskOutcome outcome);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cellflow

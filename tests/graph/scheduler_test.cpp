// Scheduler: the one engine under graph runs and blockwise tasks. Checked here
// on its own: dependencies order tasks, retries and per-attempt time limits,
// kStop (first failure stops and is rethrown) against kContinue (dependents
// orphaned), concurrency groups, an external stop, and cycles refused.
#include "cellflow/graph/scheduler.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/cancel.hpp"

namespace cellflow {
namespace {

using std::chrono::milliseconds;

TaskOutcome done(const AttemptContext&) { return TaskOutcome::kDone; }

TEST(Scheduler, EveryTaskStartsAfterItsPredecessorsFinished) {
  // A random DAG (edges only from lower to higher index) on 4 threads.
  std::mt19937 rng(7);
  const size_t n = 300;
  SchedulerOptions o;
  o.threads = 4;
  Scheduler s(o);
  std::vector<std::atomic<int>> finished(n);
  std::vector<std::vector<size_t>> preds(n);
  std::atomic<int> violations{0};
  for (size_t i = 0; i < n; ++i) {
    const bool slow = rng() % 50 == 0;  // drawn here: the bodies run concurrently
    s.add([&, i, slow](const AttemptContext&) {
      for (size_t p : preds[i])
        if (finished[p].load() == 0) ++violations;
      std::this_thread::sleep_for(std::chrono::microseconds(slow ? 500 : 0));
      finished[i] = 1;
      return TaskOutcome::kDone;
    });
  }
  for (size_t i = 1; i < n; ++i)
    for (int k = 0; k < 3; ++k) {
      const size_t p = rng() % i;
      preds[i].push_back(p);
      s.precede(p, i);
      s.precede(p, i);  // a repeated edge counts once
    }
  s.run();
  EXPECT_EQ(violations.load(), 0);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(s.outcome(i), TaskOutcome::kDone) << i;
    EXPECT_EQ(s.attempts(i), 1) << i;
  }
}

TEST(Scheduler, RetriesAFailingAttemptAndReportsEachAttempt) {
  SchedulerOptions o;
  std::mutex mu;
  std::vector<AttemptEvent> events;
  o.on_attempt = [&](const AttemptEvent& e) {
    std::lock_guard lock(mu);
    events.push_back(e);
  };
  Scheduler s(o);
  int calls = 0;
  s.add(
      [&](const AttemptContext& ctx) {
        ++calls;
        EXPECT_EQ(ctx.attempt, calls);
        if (calls < 3) throw IoError("flaky " + std::to_string(calls));
        return TaskOutcome::kDone;
      },
      TaskPolicy{2, 0, -1});
  s.run();
  EXPECT_EQ(s.outcome(0), TaskOutcome::kDone);
  EXPECT_EQ(s.attempts(0), 3);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].outcome, TaskOutcome::kPending);
  EXPECT_EQ(events[0].error, "flaky 1");
  EXPECT_EQ(events[1].outcome, TaskOutcome::kPending);
  EXPECT_EQ(events[2].outcome, TaskOutcome::kDone);
  EXPECT_EQ(events[2].attempt, 3);
}

TEST(Scheduler, SkippedOnARetryCountsAsDone) {
  Scheduler s(SchedulerOptions{});
  int calls = 0;
  s.add(
      [&](const AttemptContext&) {
        if (++calls == 1) throw IoError("wrote, then failed");
        return TaskOutcome::kSkipped;  // the first attempt's work is there
      },
      TaskPolicy{1, 0, -1});
  s.add([](const AttemptContext&) { return TaskOutcome::kSkipped; });
  s.run();
  EXPECT_EQ(s.outcome(0), TaskOutcome::kDone);
  EXPECT_EQ(s.outcome(1), TaskOutcome::kSkipped);
}

TEST(Scheduler, AnAttemptPastItsLimitFailsEvenIfItIgnoresCancellation) {
  Scheduler s(SchedulerOptions{});
  std::atomic<int> saw_cancel{0};
  s.add(
      [&](const AttemptContext& ctx) {
        EXPECT_GT(ctx.seconds_left(), 0);
        std::this_thread::sleep_for(milliseconds(120));
        if (cancellation_requested() && cancellation_timed_out()) ++saw_cancel;
        return TaskOutcome::kDone;  // returns late without checking
      },
      TaskPolicy{1, 0.05, -1});
  SchedulerOptions o;
  EXPECT_THROW(s.run(), Cancelled);
  EXPECT_EQ(s.outcome(0), TaskOutcome::kFailed);
  EXPECT_EQ(s.attempts(0), 2);
  EXPECT_EQ(saw_cancel.load(), 2);
  EXPECT_NE(s.error(0).find("limit of 0.05 s"), std::string::npos) << s.error(0);
}

TEST(Scheduler, StopRethrowsTheFirstFailureAndCancelsTheRest) {
  SchedulerOptions o;
  o.threads = 2;
  o.on_failure = OnFailure::kStop;
  Scheduler s(o);
  // Task 0 fails; task 1 runs meanwhile and sees the stop through its token;
  // task 2 waits for task 0 and never runs.
  std::atomic<bool> started{false};
  std::atomic<bool> saw_stop{false};
  std::atomic<bool> ran2{false};
  s.add([&](const AttemptContext&) -> TaskOutcome {
    while (!started) std::this_thread::yield();
    throw NodeError("boom");
  });
  s.add([&](const AttemptContext&) {
    started = true;
    for (int k = 0; k < 2000 && !cancellation_requested(); ++k)
      std::this_thread::sleep_for(milliseconds(1));
    saw_stop = cancellation_requested();
    check_cancelled();
    return TaskOutcome::kDone;
  });
  s.add([&](const AttemptContext&) {
    ran2 = true;
    return TaskOutcome::kDone;
  });
  s.precede(0, 2);
  try {
    s.run();
    FAIL() << "run() did not throw";
  } catch (const NodeError& e) {
    EXPECT_STREQ(e.what(), "boom");
  }
  EXPECT_TRUE(saw_stop.load());
  EXPECT_FALSE(ran2.load());
  EXPECT_EQ(s.outcome(0), TaskOutcome::kFailed);
  EXPECT_EQ(s.outcome(1), TaskOutcome::kCancelled);
  EXPECT_EQ(s.outcome(2), TaskOutcome::kCancelled);
}

TEST(Scheduler, ContinueOrphansWhatDependsOnAFailedTask) {
  SchedulerOptions o;
  o.on_failure = OnFailure::kContinue;
  Scheduler s(o);
  s.add([](const AttemptContext&) -> TaskOutcome { throw NodeError("no"); }, TaskPolicy{1, 0, -1});
  s.add(done);  // 1 <- 0
  s.add(done);  // 2 <- 1 (transitively orphaned)
  s.add(done);  // 3 independent
  s.precede(0, 1);
  s.precede(1, 2);
  s.run();  // does not throw
  EXPECT_EQ(s.outcome(0), TaskOutcome::kFailed);
  EXPECT_EQ(s.attempts(0), 2);
  EXPECT_EQ(s.error(0), "no");
  EXPECT_EQ(s.outcome(1), TaskOutcome::kOrphaned);
  EXPECT_EQ(s.outcome(2), TaskOutcome::kOrphaned);
  EXPECT_EQ(s.attempts(1), 0);
  EXPECT_EQ(s.outcome(3), TaskOutcome::kDone);
}

TEST(Scheduler, AGroupRunsAtMostItsLimitAtOnce) {
  SchedulerOptions o;
  o.threads = 4;
  Scheduler s(o);
  const int g = s.add_group(2);
  std::atomic<int> running{0}, peak{0}, outside_peak{0}, outside{0};
  for (int i = 0; i < 24; ++i) {
    s.add(
        [&](const AttemptContext&) {
          const int now = ++running;
          int p = peak.load();
          while (now > p && !peak.compare_exchange_weak(p, now)) {
          }
          std::this_thread::sleep_for(milliseconds(3));
          --running;
          return TaskOutcome::kDone;
        },
        TaskPolicy{0, 0, g});
  }
  for (int i = 0; i < 8; ++i) {
    s.add([&](const AttemptContext&) {
      const int now = ++outside;
      int p = outside_peak.load();
      while (now > p && !outside_peak.compare_exchange_weak(p, now)) {
      }
      std::this_thread::sleep_for(milliseconds(3));
      --outside;
      return TaskOutcome::kDone;
    });
  }
  s.run();
  EXPECT_LE(peak.load(), 2);
  EXPECT_GE(peak.load(), 1);
  for (size_t i = 0; i < s.size(); ++i) EXPECT_EQ(s.outcome(i), TaskOutcome::kDone);
}

TEST(Scheduler, AnExternalStopCancelsAndThrowsCancelled) {
  std::atomic<bool> stop{false};
  SchedulerOptions o;
  o.threads = 1;
  o.stop = &stop;
  Scheduler s(o);
  std::atomic<int> ran{0};
  s.add([&](const AttemptContext&) {
    ++ran;
    stop = true;  // as a Ctrl-C handler would, while this task runs
    EXPECT_TRUE(cancellation_requested());
    return TaskOutcome::kDone;
  });
  for (int i = 0; i < 5; ++i) {
    s.add([&](const AttemptContext&) {
      ++ran;
      return TaskOutcome::kDone;
    });
    s.precede(static_cast<size_t>(i), static_cast<size_t>(i + 1));
  }
  EXPECT_THROW(s.run(), Cancelled);
  EXPECT_EQ(ran.load(), 1);
  for (size_t i = 1; i < s.size(); ++i) EXPECT_EQ(s.outcome(i), TaskOutcome::kCancelled);
}

// Tasks that wait for nothing (a graph's source cells) start only when the
// threads have no other work, in the order their first consumers were added:
// cheap sources do not run ahead of slow consumers and fill memory.
TEST(Scheduler, RootsStartWhenNeededInTheOrderTheirConsumersWereAdded) {
  constexpr int kConsumers = 40;
  constexpr int kThreads = 2;
  SchedulerOptions o;
  o.threads = kThreads;
  Scheduler s(o);
  std::mutex mu;
  std::vector<int> root_order;  // positions, in the order the roots started
  int roots_started = 0;
  int consumers_finished = 0;
  int most_ahead = 0;  // the most roots started but not yet consumed
  // Roots are added in reverse position order; consumer c reads positions c and c + 1.
  std::vector<size_t> root_of(kConsumers + 1);
  for (int pos = kConsumers; pos >= 0; --pos) {
    root_of[static_cast<size_t>(pos)] = s.add([&, pos](const AttemptContext&) {
      std::lock_guard lock(mu);
      root_order.push_back(pos);
      ++roots_started;
      most_ahead = std::max(most_ahead, roots_started - consumers_finished);
      return TaskOutcome::kDone;
    });
  }
  for (int c = 0; c < kConsumers; ++c) {
    const size_t me = s.add([&](const AttemptContext&) {
      std::this_thread::sleep_for(milliseconds(2));
      std::lock_guard lock(mu);
      ++consumers_finished;
      return TaskOutcome::kDone;
    });
    s.precede(root_of[static_cast<size_t>(c)], me);
    s.precede(root_of[static_cast<size_t>(c) + 1], me);
  }
  s.run();
  ASSERT_EQ(root_order.size(), static_cast<size_t>(kConsumers + 1));
  // First consumers first: the first roots to start are among the first few
  // positions (added last; in the order added they would be 40, 39, ...).
  // Not exactly 0..3: a thread preempted between taking a root and
  // recording it lets the next root be recorded first (seen under load).
  for (size_t k = 0; k < 3; ++k) EXPECT_LE(root_order[k], 2 * kThreads + 2) << "start " << k;
  // Roots stay a few ahead of the consumers (all of them would run at once
  // if every root were spawned at the start: they are instant, consumers not).
  EXPECT_LE(most_ahead, kThreads + 4);
}

TEST(Scheduler, ACycleIsALogicError) {
  Scheduler s(SchedulerOptions{});
  s.add(done);
  s.add(done);
  s.add(done);
  s.precede(1, 2);
  s.precede(2, 1);
  EXPECT_THROW(s.run(), std::logic_error);
  EXPECT_EQ(s.outcome(0), TaskOutcome::kDone);
}

}  // namespace
}  // namespace cellflow

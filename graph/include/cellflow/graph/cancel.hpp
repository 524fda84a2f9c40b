// Cooperative cancellation for long computations. The executor installs a
// token (with the cell's deadline when a timeout applies) on the thread that
// computes a cell; a kernel that loops for long calls check_cancelled() now
// and then, which throws Cancelled once the run is stopping or the deadline
// passed. Thread-safe; the token is per thread.
#pragma once

#include <atomic>
#include <chrono>

namespace cellflow {

class CancelToken {
 public:
  using Clock = std::chrono::steady_clock;
  CancelToken() = default;
  /// Cancelled once `stop` or `also_stop` (either may be null) is set, or the
  /// deadline passed.
  explicit CancelToken(Clock::time_point deadline, const std::atomic<bool>* stop = nullptr,
                       const std::atomic<bool>* also_stop = nullptr)
      : deadline_(deadline), stop_(stop), also_stop_(also_stop) {}

  bool cancelled() const { return stopping() || Clock::now() > deadline_; }
  bool stopping() const {
    return (stop_ != nullptr && stop_->load(std::memory_order_relaxed)) ||
           (also_stop_ != nullptr && also_stop_->load(std::memory_order_relaxed));
  }
  bool timed_out() const { return Clock::now() > deadline_; }

 private:
  Clock::time_point deadline_ = Clock::time_point::max();
  const std::atomic<bool>* stop_ = nullptr;
  const std::atomic<bool>* also_stop_ = nullptr;
};

/// Installs `token` on this thread for the scope's lifetime.
class ScopedCancelToken {
 public:
  explicit ScopedCancelToken(const CancelToken* token);
  ~ScopedCancelToken();
  ScopedCancelToken(const ScopedCancelToken&) = delete;
  ScopedCancelToken& operator=(const ScopedCancelToken&) = delete;

 private:
  const CancelToken* previous_;
};

/// Throws Cancelled if this thread's token says so; cheap (a clock read).
void check_cancelled();
/// True if this thread's token says so.
bool cancellation_requested();
/// True if this thread's token has a deadline and it has passed (the reason
/// for a cancellation that is not the run stopping).
bool cancellation_timed_out();

}  // namespace cellflow

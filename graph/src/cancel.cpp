#include "cellflow/graph/cancel.hpp"

#include "cellflow/cache/error.hpp"

namespace cellflow {
namespace {
thread_local const CancelToken* t_token = nullptr;
}  // namespace

ScopedCancelToken::ScopedCancelToken(const CancelToken* token) : previous_(t_token) {
  t_token = token;
}
ScopedCancelToken::~ScopedCancelToken() { t_token = previous_; }

bool cancellation_requested() { return t_token != nullptr && t_token->cancelled(); }

bool cancellation_timed_out() { return t_token != nullptr && t_token->timed_out(); }

void check_cancelled() {
  if (t_token == nullptr || !t_token->cancelled()) return;
  throw Cancelled(t_token->timed_out() ? "timed out (the cell's time limit passed)"
                                       : "cancelled: the run is stopping");
}

}  // namespace cellflow

#include "cellflow/cache/error.hpp"

#include <utility>

namespace cellflow {

Error::Error(std::string message) : message_(std::move(message)) { rebuild(); }

Error& Error::add_context(std::string frame) {
  context_.push_back(std::move(frame));
  rebuild();
  return *this;
}

void Error::rebuild() {
  what_.clear();
  for (auto it = context_.rbegin(); it != context_.rend(); ++it) {
    what_ += *it;
    what_ += ": ";
  }
  what_ += message_;
}

}  // namespace cellflow

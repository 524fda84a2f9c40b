#include "cellflow/graph/registry.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "cellflow/cache/error.hpp"

namespace cellflow {

void Registry::add(std::shared_ptr<const Op> op) {
  if (!op) throw InvalidArgument("cannot register a null op");
  std::lock_guard lock(mu_);
  for (const auto& o : ops_)
    if (o->name() == op->name())
      throw InvalidArgument(fmt::format("op \"{}\" is already registered", op->name()));
  ops_.push_back(std::move(op));
}

std::shared_ptr<const Op> Registry::find(std::string_view name) const {
  std::lock_guard lock(mu_);
  for (const auto& o : ops_)
    if (o->name() == name) return o;
  return nullptr;
}

std::vector<std::shared_ptr<const Op>> Registry::list() const {
  std::lock_guard lock(mu_);
  auto out = ops_;
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a->name() < b->name(); });
  return out;
}

}  // namespace cellflow

#include "cellflow/graph/registry.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "cellflow/cache/error.hpp"

namespace cellflow {

bool Registry::taken_locked(std::string_view name) const {
  for (const auto& o : ops_)
    if (o->name() == name) return true;
  for (const auto& d : deferred_)
    if (d.name == name) return true;
  return false;
}

void Registry::add(std::shared_ptr<const Op> op) {
  if (!op) throw InvalidArgument("cannot register a null op");
  std::lock_guard lock(mu_);
  if (taken_locked(op->name()))
    throw InvalidArgument(fmt::format("op \"{}\" is already registered", op->name()));
  ops_.push_back(std::move(op));
}

void Registry::add_deferred(std::string name, std::function<std::shared_ptr<const Op>()> make) {
  if (!make) throw InvalidArgument(fmt::format("op \"{}\": no function makes it", name));
  std::lock_guard lock(mu_);
  if (taken_locked(name))
    throw InvalidArgument(fmt::format("op \"{}\" is already registered", name));
  deferred_.push_back(Deferred{std::move(name), std::move(make)});
}

std::shared_ptr<const Op> Registry::make_locked(size_t k) const {
  std::shared_ptr<const Op> op = deferred_[k].make();
  if (!op || op->name() != deferred_[k].name) {
    throw Error(fmt::format("op \"{}\": its library made {}", deferred_[k].name,
                            op ? fmt::format("op \"{}\"", op->name()) : std::string("nothing")));
  }
  deferred_.erase(deferred_.begin() + static_cast<std::ptrdiff_t>(k));
  ops_.push_back(op);
  return op;
}

std::shared_ptr<const Op> Registry::find(std::string_view name) const {
  std::lock_guard lock(mu_);
  for (const auto& o : ops_)
    if (o->name() == name) return o;
  for (size_t k = 0; k < deferred_.size(); ++k)
    if (deferred_[k].name == name) return make_locked(k);
  return nullptr;
}

std::vector<std::shared_ptr<const Op>> Registry::list() const {
  std::lock_guard lock(mu_);
  while (!deferred_.empty()) make_locked(deferred_.size() - 1);
  auto out = ops_;
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a->name() < b->name(); });
  return out;
}

}  // namespace cellflow

// Registry: the ops known by name. Built-ins register explicitly
// (register_builtin_ops), plugins through their entry point. Thread-safe.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "cellflow/graph/op.hpp"

namespace cellflow {

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  /// Registers an op; throws InvalidArgument if its name is taken.
  void add(std::shared_ptr<const Op> op);
  /// nullptr when unknown (a miss is not an error).
  std::shared_ptr<const Op> find(std::string_view name) const;
  /// All ops, sorted by name.
  std::vector<std::shared_ptr<const Op>> list() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<const Op>> ops_;
};

}  // namespace cellflow

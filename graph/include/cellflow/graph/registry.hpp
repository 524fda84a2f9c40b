// Registry: the ops known by name. Built-ins register explicitly
// (register_builtin_ops), plugins through their entry point. Thread-safe.
#pragma once

#include <functional>
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
  /// Registers op `name`, made by `make` when first found or listed (e.g. an
  /// op whose code lives in a library loaded on demand). `make` may throw
  /// (find() and list() pass it on); it must return an op of that name.
  void add_deferred(std::string name, std::function<std::shared_ptr<const Op>()> make);
  /// nullptr when unknown (a miss is not an error).
  std::shared_ptr<const Op> find(std::string_view name) const;
  /// All ops, sorted by name.
  std::vector<std::shared_ptr<const Op>> list() const;

 private:
  struct Deferred {
    std::string name;
    std::function<std::shared_ptr<const Op>()> make;
  };
  bool taken_locked(std::string_view name) const;
  // Makes deferred op `k` and moves it to ops_.
  std::shared_ptr<const Op> make_locked(size_t k) const;

  mutable std::mutex mu_;
  mutable std::vector<std::shared_ptr<const Op>> ops_;
  mutable std::vector<Deferred> deferred_;
};

}  // namespace cellflow

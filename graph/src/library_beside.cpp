#include "cellflow/graph/library_beside.hpp"

#include <dlfcn.h>
#include <fmt/format.h>

#include <filesystem>

#include "cellflow/cache/error.hpp"

namespace cellflow {

void* load_library_beside(const void* anchor, const std::string& name, const char* entry,
                          bool global, const std::string& purpose) {
  const int flags = RTLD_NOW | (global ? RTLD_GLOBAL : RTLD_LOCAL);
  std::filesystem::path beside(name);
  std::string errors;
  void* handle = nullptr;
  Dl_info info{};
  if (dladdr(anchor, &info) != 0 && info.dli_fname != nullptr) {
    beside = std::filesystem::path(info.dli_fname).parent_path() / name;
    handle = ::dlopen(beside.c_str(), flags);
    // glibc keeps dlerror()'s message per thread.
    if (handle == nullptr) errors = ::dlerror();  // NOLINT(concurrency-mt-unsafe)
  }
  if (handle == nullptr) {
    handle = ::dlopen(name.c_str(), flags);
    if (handle == nullptr)
      errors +=
          (errors.empty() ? "" : "; ") + std::string(::dlerror());  // NOLINT(concurrency-mt-unsafe)
  }
  if (handle == nullptr)
    throw Error(fmt::format("cannot load {} ({}): {}", beside.string(), purpose, errors));
  void* symbol = ::dlsym(handle, entry);
  if (symbol == nullptr)
    throw Error(fmt::format("{} ({}) has no entry point {}", beside.string(), purpose, entry));
  return symbol;
}

}  // namespace cellflow

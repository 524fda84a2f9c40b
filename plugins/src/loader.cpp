#include "cellflow/plugins/loader.hpp"

#include <dlfcn.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "cellflow/cache/error.hpp"
#include "cellflow/plugins/plugin.hpp"

namespace fs = std::filesystem;

namespace cellflow::plugins {
namespace {

/// What has been loaded into which registry, and who registered which op
/// (for name-clash messages). Guarded by mu.
struct LoadedPlugins {
  std::mutex mu;
  std::map<std::pair<const Registry*, std::string>, PluginInfo> loaded;
  std::map<std::pair<const Registry*, std::string>, std::string> op_origin;

  static LoadedPlugins& global() {
    static auto* instance = new LoadedPlugins();  // never destroyed: plugins stay loaded
    return *instance;
  }
};

[[noreturn]] void fail(const fs::path& path, const std::string& why) {
  throw PluginError(fmt::format("plugin {}: {}", path.string(), why));
}

/// dlclose on scope exit unless released.
struct LibraryHandle {
  void* handle = nullptr;
  ~LibraryHandle() {
    if (handle != nullptr) dlclose(handle);
  }
  void* release() { return std::exchange(handle, nullptr); }
};

}  // namespace

PluginInfo load_plugin(const fs::path& path, Registry& registry) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, "no such file");
  if (fs::is_directory(path, ec)) fail(path, "is a folder, not a shared library");
  if (!fs::is_regular_file(path, ec))
    fail(path, "is not a regular file (a FIFO or device?): a plugin is a shared library file");
  const fs::path canonical = fs::canonical(path, ec);
  if (ec) fail(path, "cannot resolve the path: " + ec.message());

  LoadedPlugins& state = LoadedPlugins::global();
  std::lock_guard lock(state.mu);
  const auto key = std::make_pair(static_cast<const Registry*>(&registry), canonical.string());
  if (auto it = state.loaded.find(key); it != state.loaded.end()) return it->second;

  dlerror();
  LibraryHandle lib{dlopen(canonical.c_str(), RTLD_NOW | RTLD_LOCAL)};
  if (lib.handle == nullptr) {
    const char* why = dlerror();
    fail(path, fmt::format("cannot load it as a shared library: {}",
                           why != nullptr ? why : "unknown error"));
  }
  auto* entry = reinterpret_cast<cellflow_plugin_register_fn>(dlsym(lib.handle, kEntryPoint));
  if (entry == nullptr) {
    fail(path,
         fmt::format("not a cellflow plugin: it does not export the entry point {} (define it "
                     "with CELLFLOW_PLUGIN(fn) from cellflow/plugins/plugin.hpp)",
                     kEntryPoint));
  }
  // Checked before calling in: a plugin of another ABI may not even agree on
  // the host struct.
  if (const auto* abi = static_cast<const int*>(dlsym(lib.handle, kAbiSymbol));
      abi != nullptr && *abi != kAbiVersion) {
    fail(path, fmt::format("ABI mismatch: the plugin was built for cellflow plugin ABI {}, this "
                           "cellflow has ABI {}; rebuild the plugin against this cellflow",
                           *abi, kAbiVersion));
  }
  if (const auto* tag = static_cast<const char*>(dlsym(lib.handle, kAbiTagSymbol));
      tag != nullptr && std::strncmp(tag, kAbiTag, 64) != 0) {
    fail(path,
         fmt::format("ABI mismatch: the plugin was built against other cellflow headers (ABI "
                     "tag {}, this cellflow has {}); rebuild the plugin against this cellflow",
                     std::string(tag, strnlen(tag, 64)), kAbiTag));
  }

  PluginInfo info;
  info.path = canonical;
  {
    // The plugin registers into a registry of its own first, so that a clash
    // leaves the target registry untouched.
    Registry staging;
    cellflow_plugin_host host{kAbiVersion, &staging, canonical.c_str()};
    std::array<char, 2048> error{};
    const int status = entry(&host, error.data(), error.size());
    error.back() = '\0';
    if (status == CELLFLOW_PLUGIN_ABI_MISMATCH) {
      fail(path,
           fmt::format("ABI mismatch: {}; rebuild the plugin against this cellflow", error.data()));
    }
    if (status != CELLFLOW_PLUGIN_OK) {
      fail(path, fmt::format("registering its ops failed: {}",
                             error[0] != '\0' ? error.data() : "no reason given"));
    }
    const auto ops = staging.list();
    if (ops.empty()) fail(path, "it registered no ops");
    for (const auto& op : ops) {
      const std::string name(op->name());
      if (registry.find(name) != nullptr) {
        const auto origin = state.op_origin.find({&registry, name});
        const std::string who = origin != state.op_origin.end()
                                    ? fmt::format("by the plugin {}", origin->second)
                                    : std::string("as a built-in op");
        fail(path,
             fmt::format("name clash: op \"{}\" is already registered {}; rename the plugin's op",
                         name, who));
      }
    }
    for (const auto& op : ops) {
      registry.add(op);
      info.ops.emplace_back(op->name());
      state.op_origin[{&registry, std::string(op->name())}] = canonical.string();
    }
  }
  lib.release();  // the ops' code lives in the library: keep it loaded
  state.loaded[key] = info;
  return info;
}

std::vector<fs::path> plugin_files(std::string_view list) {
  std::vector<fs::path> out;
  size_t pos = 0;
  while (pos <= list.size()) {
    const size_t end = std::min(list.find(':', pos), list.size());
    const std::string entry(list.substr(pos, end - pos));
    pos = end + 1;
    if (entry.empty()) continue;
    std::error_code ec;
    if (fs::is_directory(entry, ec)) {
      std::vector<fs::path> found;
      for (const auto& e : fs::directory_iterator(entry, ec)) {
        if (e.path().extension() == ".so" && !e.is_directory()) found.push_back(e.path());
      }
      std::sort(found.begin(), found.end());
      out.insert(out.end(), found.begin(), found.end());
    } else if (fs::exists(entry, ec)) {
      out.emplace_back(entry);
    } else {
      throw PluginError(
          fmt::format("plugin {}: no such file or folder (from CELLFLOW_PLUGIN_PATH)", entry));
    }
  }
  return out;
}

std::vector<PluginInfo> load_plugins_from_env(Registry& registry) {
  std::vector<PluginInfo> out;
  const char* env = std::getenv("CELLFLOW_PLUGIN_PATH");
  if (env == nullptr) return out;
  for (const fs::path& file : plugin_files(env)) out.push_back(load_plugin(file, registry));
  return out;
}

}  // namespace cellflow::plugins

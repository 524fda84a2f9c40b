// For plugin authors: a cellflow plugin is a shared library that exports one
// C entry point, cellflow_plugin_register, which checks the ABI version and
// adds the plugin's ops to the host's registry. Write
//
//   #include "cellflow/plugins/plugin.hpp"
//   void register_ops(cellflow::Registry& registry) {
//     registry.add(std::make_shared<MyOp>());
//   }
//   CELLFLOW_PLUGIN(register_ops)
//
// and load the library with `cellflow --plugin lib.so` or load_plugin().
// Plugin ops are C++ classes derived from cellflow::Op: build the plugin with
// the same compiler family against the same cellflow headers as the host. The
// loader checks both the ABI version below and the ABI tag, a hash of the
// public headers of cache/ and graph/ generated at cellflow's build (so any
// header change, which may move a class layout or a vtable slot, asks for a
// rebuild rather than crashing). No exception crosses the entry point: the macro turns
// them into an error message for the host. Thread-safety: the host calls the
// entry point once, from one thread.
#pragma once

#include <cstddef>
#include <cstdio>
#include <exception>

#include "cellflow/graph/registry.hpp"
#include "cellflow/plugins/abi_tag.hpp"  // CELLFLOW_PLUGIN_ABI_TAG, generated

/// Bumped whenever a type a plugin sees (Op, NodeKernel, Params, Value,
/// Registry, CellBuffer, Box, ...) changes its layout or virtual functions.
#define CELLFLOW_PLUGIN_ABI_VERSION 1

extern "C" {

/// What the host hands to the entry point.
struct cellflow_plugin_host {
  /// The host's CELLFLOW_PLUGIN_ABI_VERSION.
  int abi_version;
  /// A cellflow::Registry* the plugin adds its ops to.
  void* registry;
  /// The plugin's path, for messages.
  const char* plugin_path;
};

/// Return codes of the entry point.
enum cellflow_plugin_status {
  CELLFLOW_PLUGIN_OK = 0,
  CELLFLOW_PLUGIN_FAILED = 1,        // `error` says why
  CELLFLOW_PLUGIN_ABI_MISMATCH = 2,  // built for another ABI version
};

/// The entry point's signature: registers the plugin's ops into
/// host->registry; on failure writes a NUL-terminated message into `error`
/// (at most error_size bytes) and returns a non-zero status.
typedef int (*cellflow_plugin_register_fn)(struct cellflow_plugin_host* host, char* error,
                                           size_t error_size);
}

namespace cellflow::plugins {

inline constexpr int kAbiVersion = CELLFLOW_PLUGIN_ABI_VERSION;
inline constexpr const char* kAbiTag = CELLFLOW_PLUGIN_ABI_TAG;
/// The exported symbols the loader looks up.
inline constexpr const char* kEntryPoint = "cellflow_plugin_register";
inline constexpr const char* kAbiSymbol = "cellflow_plugin_abi_version";
inline constexpr const char* kAbiTagSymbol = "cellflow_plugin_abi_tag";

namespace detail {

/// The body of the entry point CELLFLOW_PLUGIN defines: checks the ABI, calls
/// `fn`, and turns any exception into a message and a status.
template <class Fn>
int run_plugin_entry(Fn&& fn, cellflow_plugin_host* host, char* error, size_t error_size) noexcept {
  const auto say = [&](const char* message) {
    if (error != nullptr && error_size > 0) std::snprintf(error, error_size, "%s", message);
  };
  if (host == nullptr || host->registry == nullptr) {
    say("no host registry given");
    return CELLFLOW_PLUGIN_FAILED;
  }
  if (host->abi_version != CELLFLOW_PLUGIN_ABI_VERSION) {
    if (error != nullptr && error_size > 0) {
      std::snprintf(error, error_size,
                    "the plugin was built for cellflow plugin ABI %d, the host has ABI %d",
                    CELLFLOW_PLUGIN_ABI_VERSION, host->abi_version);
    }
    return CELLFLOW_PLUGIN_ABI_MISMATCH;
  }
  try {
    fn(*static_cast<cellflow::Registry*>(host->registry));
    return CELLFLOW_PLUGIN_OK;
  } catch (const std::exception& e) {
    say(e.what());
  } catch (...) {
    say("unknown exception while registering the plugin's ops");
  }
  return CELLFLOW_PLUGIN_FAILED;
}

}  // namespace detail
}  // namespace cellflow::plugins

/// Defines the plugin's entry point around `fn`, a `void fn(cellflow::Registry&)`,
/// and the ABI version and tag symbols the loader checks before calling it.
/// Use once per plugin, at namespace scope.
#define CELLFLOW_PLUGIN(fn)                                                                 \
  extern "C" __attribute__((visibility("default"))) const int cellflow_plugin_abi_version = \
      CELLFLOW_PLUGIN_ABI_VERSION;                                                          \
  extern "C" __attribute__((visibility("default"))) const char cellflow_plugin_abi_tag[] =  \
      CELLFLOW_PLUGIN_ABI_TAG;                                                              \
  extern "C" __attribute__((visibility("default"))) int cellflow_plugin_register(           \
      cellflow_plugin_host* host, char* error, size_t error_size) {                         \
    return ::cellflow::plugins::detail::run_plugin_entry(fn, host, error, error_size);      \
  }

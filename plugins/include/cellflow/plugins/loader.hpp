// Loading plugins into a Registry: shared libraries built against cellflow
// that export the entry point of plugin.hpp. Loaded libraries stay loaded for
// the life of the process (their ops live in the registry). Thread-safe:
// loads are serialized process-wide.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "cellflow/graph/registry.hpp"

namespace cellflow::plugins {

struct PluginInfo {
  /// The canonical path of the library.
  std::filesystem::path path;
  /// The names of the ops it registered, sorted.
  std::vector<std::string> ops;
};

/// Loads the plugin at `path` (dlopen RTLD_NOW | RTLD_LOCAL), checks its ABI
/// version and adds its ops to `registry`: all of them or, on any error, none.
/// Loading the same file into the same registry again returns the first
/// load's info. Throws PluginError naming the plugin for: a missing file, a
/// file that is not a loadable shared library, a missing entry point, an ABI
/// mismatch, a failure inside the plugin's registration, and an op name that
/// `registry` already has (naming the op and who registered it).
PluginInfo load_plugin(const std::filesystem::path& path, Registry& registry);

/// The plugin files named by a colon-separated list of files and folders (a
/// folder contributes its *.so files, sorted by name); empty entries are
/// skipped. Throws PluginError for an entry that does not exist.
std::vector<std::filesystem::path> plugin_files(std::string_view list);

/// Loads the plugins of $CELLFLOW_PLUGIN_PATH (see plugin_files) into `registry`.
std::vector<PluginInfo> load_plugins_from_env(Registry& registry);

}  // namespace cellflow::plugins

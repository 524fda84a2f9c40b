// A minimal process-wide log for warnings (a corrupt cell was recomputed, ...).
// The sink is replaceable (the CLI prints to stderr). Thread-safe.
#pragma once

#include <functional>
#include <string>

namespace cellflow {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

using LogSink = std::function<void(LogLevel, const std::string&)>;

/// Replaces the sink; returns the previous one. The default writes warnings and
/// errors to stderr.
LogSink set_log_sink(LogSink sink);
void log(LogLevel level, const std::string& message);
inline void log_warning(const std::string& message) { log(LogLevel::kWarning, message); }

}  // namespace cellflow

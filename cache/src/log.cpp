#include "cellflow/cache/log.hpp"

#include <cstdio>
#include <mutex>
#include <utility>

#include "cellflow/cache/artifacts.hpp"

namespace cellflow {
namespace {

std::mutex& sink_mutex() {
  static std::mutex mu;
  return mu;
}

void default_sink(LogLevel level, const std::string& message) {
  if (level < LogLevel::kWarning) return;
  std::fprintf(stderr, "cellflow: %s: %s\n", level == LogLevel::kWarning ? "warning" : "error",
               message.c_str());
}

LogSink& sink() {
  static LogSink s = default_sink;
  return s;
}

}  // namespace

LogSink set_log_sink(LogSink new_sink) {
  std::lock_guard lock(sink_mutex());
  return std::exchange(sink(), new_sink ? std::move(new_sink) : LogSink(default_sink));
}

void log(LogLevel level, const std::string& message) {
  {
    std::lock_guard lock(sink_mutex());
    sink()(level, message);
  }
  // Warnings raised while a node's cell or a memoized call computes are also
  // kept beside its data (<hash>/artifacts/warnings.log).
  if (level >= LogLevel::kWarning)
    detail::log_to_current_artifacts(level == LogLevel::kWarning ? "warning" : "error", message);
}

}  // namespace cellflow

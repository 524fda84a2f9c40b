#include "cellflow/cache/trace.hpp"

#include <atomic>

namespace cellflow {
namespace {

std::atomic<CellTraceSink*> g_sink{nullptr};

}  // namespace

CellTraceSink* set_cell_trace_sink(CellTraceSink* sink) {
  return g_sink.exchange(sink, std::memory_order_acq_rel);
}

CellTraceSink* cell_trace_sink() { return g_sink.load(std::memory_order_acquire); }

const char* cell_trace_kind_name(CellTraceEvent::Kind kind) {
  switch (kind) {
    case CellTraceEvent::Kind::kLoad:
      return "load";
    case CellTraceEvent::Kind::kCompute:
      return "compute";
    case CellTraceEvent::Kind::kStore:
      return "store";
    case CellTraceEvent::Kind::kWait:
      return "wait";
    case CellTraceEvent::Kind::kGlobal:
      return "global";
  }
  return "?";
}

}  // namespace cellflow

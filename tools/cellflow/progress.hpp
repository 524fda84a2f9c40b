// TerminalProgress: a per-node display on stderr (cells done / to do, rate,
// ETA, cache hits), redrawn in place with ANSI escapes. Only used when stderr
// is a terminal. CellTally: per-node counts and timing of cell events, shared
// by the display and the --progress-json log. Thread-safe: update() is called
// from the executor's progress thread while cell events and warnings come from
// workers.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"

namespace cellflow::cli {

/// Counts of the cell events of one run, per node, and the rates they imply.
class CellTally {
 public:
  using Clock = std::chrono::steady_clock;
  explicit CellTally(size_t nodes);

  /// Records one event; `computed` says whether the cell was computed now
  /// (rather than found committed by another process).
  void record(const CellEvent& event, bool computed);

  struct NodeStats {
    int64_t computed = 0;  // cells computed by this run
    int64_t found = 0;     // cells found committed meanwhile (another process made them)
    int64_t retries = 0;   // failed attempts that were retried
    int64_t failed = 0;    // cells that failed for good
    /// Cells per second since the node's first cell started (0 until one is done).
    double rate = 0;
    /// Seconds left at that rate for `remaining` cells; nullopt when unknown.
    std::optional<double> eta;
  };
  /// `remaining`: cells of the node still to do.
  NodeStats stats(size_t node, int64_t remaining) const;
  /// Seconds since the tally was created.
  double elapsed() const;

 private:
  struct Node {
    NodeStats counts;
    std::optional<Clock::time_point> first_start;
    Clock::time_point last_done{};
  };
  Clock::time_point t0_ = Clock::now();
  mutable std::mutex mu_;
  std::vector<Node> nodes_;
};

/// "12s", "3m05s", "2h07m".
std::string format_duration(double seconds);

class TerminalProgress {
 public:
  /// With a `tally`, lines also show the rate, ETA and cache hits.
  explicit TerminalProgress(const Graph& graph, const CellTally* tally = nullptr);

  /// Redraws the block of progress lines.
  void update(const std::vector<NodeProgress>& progress);
  /// Prints one line above the block (the block is redrawn on the next update).
  void message(const std::string& line);

 private:
  const Graph& graph_;
  const CellTally* tally_ = nullptr;
  size_t id_width_ = 0;
  std::mutex mu_;
  int lines_drawn_ = 0;
};

}  // namespace cellflow::cli

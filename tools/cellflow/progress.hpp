// TerminalProgress: a per-node "cells done/total" display on stderr, redrawn in
// place with ANSI escapes. Only used when stderr is a terminal. Thread-safe:
// update() is called from the executor's progress thread while warnings may be
// printed from workers.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"

namespace cellflow::cli {

class TerminalProgress {
 public:
  explicit TerminalProgress(const Graph& graph);

  /// Redraws the block of progress lines.
  void update(const std::vector<NodeProgress>& progress);
  /// Prints one line above the block (the block is redrawn on the next update).
  void message(const std::string& line);

 private:
  const Graph& graph_;
  size_t id_width_ = 0;
  std::mutex mu_;
  int lines_drawn_ = 0;
};

}  // namespace cellflow::cli

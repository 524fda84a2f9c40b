#include "progress.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

namespace cellflow::cli {

TerminalProgress::TerminalProgress(const Graph& graph) : graph_(graph) {
  for (const GraphNode& node : graph.nodes()) id_width_ = std::max(id_width_, node.def.id.size());
}

void TerminalProgress::update(const std::vector<NodeProgress>& progress) {
  constexpr int64_t kBarWidth = 30;
  std::string block;
  int lines = 0;
  for (const NodeProgress& p : progress) {
    if (p.node >= graph_.nodes().size()) continue;
    const GraphNode& node = graph_.nodes()[p.node];
    const int64_t todo = p.cells_scheduled;
    const int64_t filled = todo > 0 ? kBarWidth * p.cells_done / todo : kBarWidth;
    // "\x1b[2K" clears the line so a shorter line leaves no residue.
    block +=
        fmt::format("\x1b[2K  {:<{}}  [{}{}] {}/{} cells", node.def.id, id_width_,
                    std::string(static_cast<size_t>(filled), '#'),
                    std::string(static_cast<size_t>(kBarWidth - filled), '.'), p.cells_done, todo);
    if (p.cells_total != todo) {
      block += fmt::format(" ({} of {} already cached)", p.cells_total - todo, p.cells_total);
    }
    block += '\n';
    ++lines;
  }
  std::lock_guard lock(mu_);
  // Move back up over the previous block and redraw it in place.
  if (lines_drawn_ > 0) block.insert(0, fmt::format("\x1b[{}A", lines_drawn_));
  std::fputs(block.c_str(), stderr);
  std::fflush(stderr);
  lines_drawn_ = lines;
}

void TerminalProgress::message(const std::string& line) {
  std::lock_guard lock(mu_);
  // Erase the block, print the line where it was; the next update draws the
  // block again below it.
  if (lines_drawn_ > 0) std::fputs(fmt::format("\x1b[{}A\x1b[J", lines_drawn_).c_str(), stderr);
  std::fputs(line.c_str(), stderr);
  std::fputc('\n', stderr);
  std::fflush(stderr);
  lines_drawn_ = 0;
}

}  // namespace cellflow::cli

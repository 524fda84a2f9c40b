#include "progress.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

#include "commands.hpp"

namespace cellflow::cli {

CellTally::CellTally(size_t nodes) : nodes_(nodes) {}

void CellTally::record(const CellEvent& event, bool computed) {
  const auto now = Clock::now();
  std::lock_guard lock(mu_);
  if (event.node >= nodes_.size()) return;
  Node& n = nodes_[event.node];
  const auto started = now - std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(event.seconds));
  if (!n.first_start || started < *n.first_start) n.first_start = started;
  switch (event.kind) {
    case CellEvent::Kind::kDone:
      ++(computed ? n.counts.computed : n.counts.found);
      n.last_done = now;
      break;
    case CellEvent::Kind::kRetry:
      ++n.counts.retries;
      break;
    case CellEvent::Kind::kFailed:
      ++n.counts.failed;
      break;
  }
}

CellTally::NodeStats CellTally::stats(size_t node, int64_t remaining) const {
  std::lock_guard lock(mu_);
  if (node >= nodes_.size()) return {};
  const Node& n = nodes_[node];
  NodeStats out = n.counts;
  const int64_t done = out.computed + out.found;
  if (done > 0 && n.first_start) {
    // A finished node's rate is frozen at its last cell.
    const auto end = remaining > 0 ? Clock::now() : n.last_done;
    const double seconds = std::chrono::duration<double>(end - *n.first_start).count();
    if (seconds > 0) out.rate = static_cast<double>(done) / seconds;
    if (out.rate > 0) out.eta = static_cast<double>(std::max<int64_t>(0, remaining)) / out.rate;
  }
  return out;
}

double CellTally::elapsed() const {
  return std::chrono::duration<double>(Clock::now() - t0_).count();
}

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
}

TerminalProgress::TerminalProgress(const Graph& graph, const CellTally* tally)
    : graph_(graph), tally_(tally) {
  for (const GraphNode& node : graph.nodes())
    id_width_ = std::max(id_width_, terminal_text(node.def.id).size());
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
        fmt::format("\x1b[2K  {:<{}}  [{}{}] {}/{} cells", terminal_text(node.def.id), id_width_,
                    std::string(static_cast<size_t>(filled), '#'),
                    std::string(static_cast<size_t>(kBarWidth - filled), '.'), p.cells_done, todo);
    if (tally_ != nullptr) {
      const CellTally::NodeStats st = tally_->stats(p.node, todo - p.cells_done);
      if (st.rate > 0) block += fmt::format("  {:.1f} cells/s", st.rate);
      if (p.cells_done < todo && st.eta) block += "  ETA " + format_duration(*st.eta);
      // Hits: cells this run did not compute (committed before it started, or
      // by another process meanwhile).
      block += fmt::format("  hits {}", p.cells_total - todo + st.found);
      if (st.retries > 0) block += fmt::format("  retries {}", st.retries);
      if (st.failed > 0) block += fmt::format("  FAILED {}", st.failed);
    } else if (p.cells_total != todo) {
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

#include "dot_state.hpp"

#include <fmt/format.h>

#include <cctype>
#include <map>
#include <sstream>

#include "cellflow/cache/cache_scan.hpp"
#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/store/cache_files.hpp"

namespace cellflow::cli {
namespace fs = std::filesystem;

namespace {

struct NodeState {
  int64_t present = 0;
  int64_t total = 0;
};

// Fill colours: ColorBrewer's green and yellow, and a light grey.
constexpr const char* kComplete = "#a6dba0";
constexpr const char* kPartial = "#fee08b";
constexpr const char* kMissing = "#d9d9d9";

}  // namespace

std::string dot_with_cache_state(const Graph& graph, const std::string& dot,
                                 const fs::path& cache_root) {
  std::map<std::string, CachedNode> on_disk;
  if (const auto env = open_existing_cache(cache_root); env && is_cache(*env)) {
    for (CachedNode& n : scan_cache(cache_root)) on_disk.emplace(n.hash, std::move(n));
  }
  std::vector<NodeState> states;
  for (const GraphNode& node : graph.nodes()) {
    NodeState s;
    s.total = CellGrid(node.info.shape, node.info.cell_shape).num_cells();
    if (auto it = on_disk.find(node.hash); it != on_disk.end()) {
      s.present =
          it->second.complete_marker ? s.total : std::min(it->second.cells_present, s.total);
    }
    states.push_back(s);
  }

  // boost::write_graphviz writes one vertex per line: `<index>[label="..."];`
  // with the vertex index = the node's index in graph.nodes().
  std::istringstream in(dot);
  std::string out;
  std::string line;
  while (std::getline(in, line)) {
    size_t digits = 0;
    while (digits < line.size() && std::isdigit(static_cast<unsigned char>(line[digits]))) ++digits;
    const size_t close = line.rfind("\"]");
    if (digits > 0 && line.compare(digits, 8, "[label=\"") == 0 && close != std::string::npos) {
      const size_t v = std::stoul(line.substr(0, digits));
      if (v < states.size()) {
        const NodeState& s = states[v];
        const char* fill = s.present == s.total ? kComplete : s.present > 0 ? kPartial : kMissing;
        const char* state = s.present == s.total ? "complete"
                            : s.present > 0      ? "partial"
                                                 : "missing";
        line = line.substr(0, close) +
               fmt::format("\\n{}/{} cells ({})\", style=filled, fillcolor=\"{}\"]", s.present,
                           s.total, state, fill) +
               line.substr(close + 2);
      }
    }
    out += line;
    out += '\n';
  }
  return out;
}

}  // namespace cellflow::cli

// plugin_compose: loads the example plugin (plugins/example, op
// example.invert) with load_plugin and uses its op in a graph built in C++
// code, like a built-in op: blobs -> example.invert -> threshold. Prints the
// plugin's ops, the node hashes (the plugin op's name and version are part of
// them) and a few values.
//
//   plugin_compose [PLUGIN.so]   (default: the example plugin built in this tree)
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "cellflow/cache/box.hpp"
#include "cellflow/cache/cached_cell_image.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "cellflow/graph/value.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/plugins/loader.hpp"

namespace {

using cellflow::Value;

int run(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : CELLFLOW_EXAMPLE_PLUGIN;
  cellflow::Registry& registry = cellflow::nodes::builtin_registry();
  const cellflow::plugins::PluginInfo plugin = cellflow::plugins::load_plugin(path, registry);
  fmt::print("loaded {}: {}\n", plugin.path.string(), fmt::join(plugin.ops, ", "));

  cellflow::GraphDef def;
  def.name = "plugin_compose";
  def.add("raw", "synthetic.blobs", {},
          Value(Value::Object{{"shape", Value::list(std::vector<int>{64, 64, 64})},
                              {"cell_shape", Value::list(std::vector<int>{32, 32, 32})},
                              {"dtype", "f32"},
                              {"seed", 1},
                              {"count", 20}}));
  def.add("inverted", "example.invert", {"raw"}, Value(Value::Object{{"max", 1.0}}));
  def.add("dark", "threshold", {"inverted"}, Value(Value::Object{{"above", 0.5}}));
  const cellflow::Graph graph = cellflow::Graph::build(std::move(def), registry);
  for (const cellflow::GraphNode& node : graph.nodes()) {
    fmt::print("  {:<9} {:<16} {}\n", node.def.id, node.def.op, node.hash);
  }

  // A row of voxels through the middle: raw, 1 - raw, and the threshold of it.
  const cellflow::Box row({32, 32, 0}, {33, 33, 8});
  const cellflow::CellBuffer raw = graph.image("raw")->read(row);
  const cellflow::CellBuffer inverted = graph.image("inverted")->read(row);
  const cellflow::CellBuffer dark = graph.image("dark")->read(row);
  for (int64_t i = 0; i < row.volume(); ++i) {
    fmt::print("  x={}  raw {:.3f}  inverted {:.3f}  dark {}\n", i, raw.as<float>()[i],
               inverted.as<float>()[i], dark.as<uint8_t>()[i]);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "plugin_compose: {}\n", e.what());
    return 1;
  }
}

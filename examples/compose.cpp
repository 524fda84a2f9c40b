// compose: builds the example pipeline of cell_density.json in C++ code
// (blobs -> gaussian -> threshold -> region.density), reads one 32^3 region of
// the mask lazily and prints which cells of each node were computed: only the
// dependency cone of that region runs.
//
//   compose            keep everything in memory
//   compose CACHE_DIR  persist the computed cells there (a second run loads them)
#include <fmt/format.h>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "cellflow/cache/box.hpp"
#include "cellflow/cache/cached_cell_image.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "cellflow/graph/value.hpp"
#include "cellflow/nodes/builtin.hpp"

namespace {

using cellflow::Value;

int run(int argc, char** argv) {
  cellflow::GraphDef def;
  def.name = "cell_density";
  def.add("raw", "synthetic.blobs", {},
          Value(Value::Object{{"shape", Value::list(std::vector<int>{256, 256, 256})},
                              {"cell_shape", Value::list(std::vector<int>{64, 64, 64})},
                              {"dtype", "f32"},
                              {"seed", 1}}));
  def.add("smooth", "gaussian", {"raw"}, Value(Value::Object{{"sigma", 2.0}}));
  def.add("mask", "threshold", {"smooth"}, Value(Value::Object{{"above", 0.5}}));
  def.add("density", "region.density", {"mask"},
          Value(Value::Object{{"region", Value::list(std::vector<int>{64, 64, 64})}}));
  def.outputs = {"density"};

  cellflow::GraphOptions options;
  if (argc > 1) options.cache_root = argv[1];
  const cellflow::Graph graph =
      cellflow::Graph::build(std::move(def), cellflow::nodes::builtin_registry(), options);

  // One 32^3 region inside mask cell (0,0,0). Cells are computed whole, and
  // the gaussian's halo around smooth cell (0,0,0) reaches into the
  // neighbouring cells of raw: 1 mask cell, 1 smooth cell, 8 raw cells, and
  // nothing of density.
  const cellflow::Box region({16, 16, 16}, {48, 48, 48});
  const cellflow::CellBuffer mask = graph.image("mask")->read(region);
  int64_t foreground = 0;
  const auto* voxels = mask.as<uint8_t>();
  for (int64_t i = 0; i < mask.num_elements(); ++i) foreground += voxels[i];
  fmt::print("read mask {}: {} of {} voxels above 0.5\n\n", region.str(), foreground,
             mask.num_elements());

  fmt::print("{:<8}  {:<16}  {:>8}  {:>6}  {:>5}  cells now available\n", "node", "op", "computed",
             "loaded", "total");
  for (size_t i = 0; i < graph.nodes().size(); ++i) {
    const cellflow::GraphNode& node = graph.nodes()[i];
    const auto image = graph.image(i);
    const cellflow::CellImageStats stats = image->stats();
    std::string cells;
    const cellflow::CellGrid& grid = image->grid();
    for (int64_t c = 0; c < grid.num_cells(); ++c) {
      const cellflow::CellIndex cell = grid.cell_at(c);
      if (image->available(cell)) cells += (cells.empty() ? "" : " ") + cell.str();
    }
    fmt::print("{:<8}  {:<16}  {:>8}  {:>6}  {:>5}  {}\n", node.def.id, node.def.op, stats.computed,
               stats.loaded, grid.num_cells(), cells.empty() ? "-" : cells);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "compose: error: {}\n", e.what());
    return 1;
  }
}

// Builds a two-node pipeline with the installed library and prints one voxel.
#include <cstdio>

#include "cellflow/cellflow.hpp"

int main() {
  using namespace cellflow;
  GraphDef def;
  Value p = Value::object();
  p.set("shape", Value::list(std::vector<int64_t>{16, 16}));
  p.set("cell_shape", Value::list(std::vector<int64_t>{8, 8}));
  def.add("raw", "synthetic.blobs", {}, p);
  Value t = Value::object();
  t.set("above", 0.5);
  def.add("mask", "threshold", {"raw"}, t);
  Graph g = Graph::build(def, nodes::builtin_registry());
  const CellBuffer b = g.image("mask")->read(Box({0, 0}, {1, 1}));
  std::printf("consumer ok: mask[0,0]=%d\n", static_cast<int>(b.as<uint8_t>()[0]));
  return 0;
}

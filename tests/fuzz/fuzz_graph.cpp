// Graph files (parse_graph): any input either parses or throws
// cellflow::Error; a graph that parses saves to JSON that parses back to the
// same graph, and saving that again gives the same bytes.
#include "cellflow/cache/error.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cellflow::GraphDef def;
  try {
    def = cellflow::parse_graph(cellflow::fuzz::as_text(data, size), "fuzz.json");
  } catch (const cellflow::Error&) {
    return 0;
  }
  const std::string saved = cellflow::save_graph(def);
  const cellflow::GraphDef again = cellflow::parse_graph(saved, "saved.json");
  CELLFLOW_FUZZ_CHECK(again.name == def.name);
  CELLFLOW_FUZZ_CHECK(again.outputs == def.outputs);
  CELLFLOW_FUZZ_CHECK(again.nodes.size() == def.nodes.size());
  for (size_t i = 0; i < def.nodes.size(); ++i) {
    CELLFLOW_FUZZ_CHECK(again.nodes[i].id == def.nodes[i].id);
    CELLFLOW_FUZZ_CHECK(again.nodes[i].op == def.nodes[i].op);
    CELLFLOW_FUZZ_CHECK(again.nodes[i].inputs == def.nodes[i].inputs);
    CELLFLOW_FUZZ_CHECK(again.nodes[i].params == def.nodes[i].params);
  }
  CELLFLOW_FUZZ_CHECK(cellflow::save_graph(again) == saved);
  return 0;
}

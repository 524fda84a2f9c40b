// zarr-python (2.x, /usr/bin/python3) opens <cache>/<hash>/0 of every node of
// a graph run by the CLI and reads exactly what the C++ API returns; each
// <cache>/<hash> is an OME-NGFF 0.4 group. The checks are in check_zarr.py.
#include <gtest/gtest.h>

#include <string>

#include "cli_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

const std::string kScript = std::string(CELLFLOW_SOURCE_DIR) + "/tests/tools/check_zarr.py";

bool python_has_zarr(const TempDir& tmp) {
  const CommandResult r = run_command({CELLFLOW_PYTHON, "-c", "import zarr, numpy"}, tmp.path());
  return r.exit_code == 0;
}

TEST(ZarrPython, EveryNodeReadsBackIdentically) {
  TempDir tmp;
  ASSERT_TRUE(python_has_zarr(tmp)) << CELLFLOW_PYTHON << " cannot import zarr and numpy";
  // The example pipeline plus the conversion ops, so that several dtypes appear.
  const std::string json = example_graph_json(0.5, 30,
                                              R"(,
    {"id": "scaled", "op": "rescale", "inputs": ["smooth"], "params": {"dtype": "u16"}},
    {"id": "signed", "op": "cast", "inputs": ["scaled"], "params": {"dtype": "i32"}},
    {"id": "wide", "op": "cast", "inputs": ["mask"], "params": {"dtype": "f64"}})");
  const fs::path graph = write_graph(tmp, "graph.json", json);
  const fs::path cache = tmp / "cache";
  const CommandResult run =
      run_cli({"run", graph.string(), "--cache", cache.string(), "--quiet", "--output", "density",
               "--output", "signed", "--output", "wide"},
              tmp.path());
  ASSERT_EQ(run.exit_code, 0) << describe(run);

  const Graph g = build_graph(json, cache);
  Value::Array nodes;
  for (const GraphNode& n : g.nodes()) {
    const CellBuffer data = read_whole(g, n.def.id);
    EXPECT_EQ(g.image(n.def.id)->stats().computed, 0)
        << n.def.id << ": the CLI computed everything";
    const fs::path raw = tmp / (n.def.id + ".raw");
    write_all(raw, std::string(reinterpret_cast<const char*>(data.data()), data.num_bytes()));
    nodes.push_back(Value(Value::Object{
        {"id", n.def.id},
        {"op", n.def.op},
        {"hash", n.hash},
        {"raw", raw.string()},
        {"zarr_dtype", zarr_dtype(n.info.dtype)},
        {"shape", Value::list(n.info.shape.to_vector())},
        {"cell_shape", Value::list(n.info.cell_shape.to_vector())},
    }));
  }
  ASSERT_EQ(nodes.size(), 7u);
  const fs::path manifest = tmp / "manifest.json";
  write_all(
      manifest,
      to_json(Value(Value::Object{{"cache", cache.string()}, {"nodes", Value(std::move(nodes))}})));
  const CommandResult check =
      run_command({CELLFLOW_PYTHON, kScript, manifest.string()}, tmp.path());
  EXPECT_EQ(check.exit_code, 0) << describe(check);
  EXPECT_NE(check.out.find("OK 7 nodes"), std::string::npos) << describe(check);
}

TEST(ZarrPython, ChunkWrittenByZarrPythonIsRejectedNotMisread) {
  // A chunk written by another tool (no cellflow checksum) is treated as damaged:
  // cellflow recomputes it rather than trusting it.
  TempDir tmp;
  ASSERT_TRUE(python_has_zarr(tmp));
  const std::string json = example_graph_json(0.5, 31);
  const fs::path graph = write_graph(tmp, "graph.json", json);
  const fs::path cache = tmp / "cache";
  ASSERT_EQ(
      run_cli({"run", graph.string(), "--cache", cache.string(), "--quiet"}, tmp.path()).exit_code,
      0);
  const Graph memory = build_graph(json, std::nullopt);
  const std::string hash = memory.node("smooth").hash;
  const std::string script =
      "import zarr, numpy as np\n"
      "a = zarr.open('" +
      (cache / hash / "0").string() +
      "', mode='r+')\n"
      "a[0:16, 0:16, 0:16] = np.full((16, 16, 16), 7.0, dtype='<f4')\n";
  const CommandResult w = run_command({CELLFLOW_PYTHON, "-c", script}, tmp.path());
  ASSERT_EQ(w.exit_code, 0) << describe(w);
  const Graph cached = build_graph(json, cache);
  EXPECT_TRUE(same_bytes(read_whole(cached, "smooth"), read_whole(memory, "smooth")));
  EXPECT_EQ(cached.image("smooth")->stats().corrupt, 1);
  EXPECT_EQ(cached.image("smooth")->stats().computed, 1);
}

}  // namespace
}  // namespace cellflow::test

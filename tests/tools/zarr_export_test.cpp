// `cellflow export --to X.zarr / X.ome.zarr`: zarr-python reads the plain array
// and the OME-NGFF pyramid (shapes, scales, level-1 values computed here from
// level 0 with numpy), read.zarr reads the exports back bit-exactly, and
// read.image reads back what `cellflow export --to X.tif/.nrrd/.mha` wrote.
#include <gtest/gtest.h>

#include <string>

#include "cli_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

/// blobs (u16, f32) and a mask, on a 21 x 30 x 37 image in 8 x 16 x 10 cells.
std::string export_graph_json() {
  return R"({
  "cellflow": 1,
  "name": "export_test",
  "nodes": [
    {"id": "raw", "op": "synthetic.blobs",
     "params": {"shape": [21, 30, 37], "cell_shape": [8, 16, 10], "dtype": "u16", "seed": 8, "count": 12}},
    {"id": "smooth", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": 1.0}},
    {"id": "mask", "op": "threshold", "inputs": ["raw"], "params": {"above": 20000}},
    {"id": "labels", "op": "cast", "inputs": ["mask"], "params": {"dtype": "u32"}}
  ]
}
)";
}

Graph build_reader(const std::string& op, const fs::path& path) {
  GraphDef def;
  def.add("in", op, {}, Value(Value::Object{{"path", path.string()}}));
  return Graph::build(def, nodes::builtin_registry());
}

const char* kCheckPyramid = R"PY(
import json, sys
import numpy as np, zarr
path, dtype, method = sys.argv[1], sys.argv[2], sys.argv[3]
g = zarr.open_group(path, mode="r")
ms = g.attrs["multiscales"][0]
assert ms["version"] == "0.4", ms
assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"], ms["datasets"]
assert [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]] == [
    [1, 1, 1], [2, 2, 2], [4, 4, 4]], ms["datasets"]
assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"], ms["axes"]
shapes = [g[str(l)].shape for l in range(3)]
assert shapes == [(21, 30, 37), (11, 15, 19), (6, 8, 10)], shapes
l0 = g["0"][...]
assert l0.dtype == np.dtype(dtype), l0.dtype
raw = np.fromfile(sys.argv[4], dtype=dtype).reshape(l0.shape)
assert np.array_equal(l0, raw), "level 0 differs from the node"
# Level 1 from level 0: blocks of 2 (1 at the far edge of odd axes).
p = [(0, 2 * s - n) for s, n in zip(shapes[1], l0.shape)]
want = np.empty(shapes[1], dtype=l0.dtype)
for z in range(shapes[1][0]):
  for y in range(shapes[1][1]):
    for x in range(shapes[1][2]):
      b = l0[2*z:2*z+2, 2*y:2*y+2, 2*x:2*x+2]
      if method == "mean":
        m = b.astype(np.float64).mean()
        want[z, y, x] = m if l0.dtype.kind == "f" else np.floor(m + 0.5)
      elif method == "max":
        want[z, y, x] = b.max()
      else:
        vals, counts = np.unique(b, return_counts=True)
        want[z, y, x] = vals[np.argmax(counts)]
l1 = g["1"][...]
if l0.dtype.kind == "f":
  assert np.allclose(l1, want, rtol=1e-6, atol=0), np.abs(l1 - want).max()
else:
  assert np.array_equal(l1, want), np.argwhere(l1 != want)[:3]
print("pyramid ok", shapes, method)
)PY";

TEST(ZarrExport, OmeZarrPyramidReadByZarrPython) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "g.json", export_graph_json());
  const fs::path cache = tmp / "cache";
  const fs::path script = tmp / "check.py";
  write_all(script, kCheckPyramid);
  const Graph g = build_graph(export_graph_json(), std::nullopt);
  struct Case {
    std::string node, dtype, method, flag;
  };
  for (const Case& c : {Case{"raw", "<u2", "mean", ""}, Case{"smooth", "<f4", "mean", ""},
                        Case{"labels", "<u4", "mode", ""}, Case{"mask", "|u1", "max", "max"}}) {
    const fs::path out = tmp / (c.node + ".ome.zarr");
    std::vector<std::string> args{"export", graph.string(), c.node,
                                  "--to",   out.string(),   "--levels",
                                  "3",      "--cache",      cache.string()};
    if (!c.flag.empty()) args.insert(args.end(), {"--downsample", c.flag});
    const CommandResult r = run_cli(args, tmp.path());
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    const CellBuffer data = read_whole(g, c.node);
    const fs::path raw = tmp / (c.node + ".raw");
    write_all(raw, std::string(reinterpret_cast<const char*>(data.data()), data.num_bytes()));
    const CommandResult py = run_command(
        {CELLFLOW_PYTHON, script.string(), out.string(), c.dtype, c.method, raw.string()},
        tmp.path());
    EXPECT_EQ(py.exit_code, 0) << c.node << ": " << describe(py);

    // read.zarr reads each level; level 0 is the node bit-exactly.
    const Graph back = build_reader("read.zarr", out / "0");
    auto img = back.image("in");
    EXPECT_TRUE(same_bytes(img->read(img->grid().bounds()), data)) << c.node;
  }
  // Exporting again replaces the previous export.
  const CommandResult again =
      run_cli({"export", graph.string(), "raw", "--to", (tmp / "raw.ome.zarr").string(), "--levels",
               "2", "--cache", cache.string()},
              tmp.path());
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_FALSE(fs::exists(tmp / "raw.ome.zarr" / "2"));
}

TEST(ZarrExport, PlainZarrArrayAndRefusals) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "g.json", export_graph_json());
  const fs::path cache = tmp / "cache";
  const fs::path out = tmp / "smooth.zarr";
  CommandResult r =
      run_cli({"export", graph.string(), "smooth", "--to", out.string(), "--cache", cache.string()},
              tmp.path());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const Graph g = build_graph(export_graph_json(), std::nullopt);
  const CellBuffer data = read_whole(g, "smooth");
  const fs::path raw = tmp / "smooth.raw";
  write_all(raw, std::string(reinterpret_cast<const char*>(data.data()), data.num_bytes()));
  const std::string check =
      "import zarr, numpy as np\n"
      "a = zarr.open('" +
      out.string() +
      "', mode='r')\n"
      "assert a.shape == (21, 30, 37) and a.chunks == (8, 16, 10), (a.shape, a.chunks)\n"
      "assert np.array_equal(a[...], np.fromfile('" +
      raw.string() + "', dtype='<f4').reshape(a.shape))\nprint('ok')\n";
  r = run_command({CELLFLOW_PYTHON, "-c", check}, tmp.path());
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  const Graph back = build_reader("read.zarr", out);
  EXPECT_EQ(back.node("in").info.cell_shape, (Shape{8, 16, 10}));
  EXPECT_TRUE(same_bytes(read_whole(back, "in"), data));

  // --levels needs .ome.zarr; an existing folder that is not Zarr is not replaced.
  r = run_cli({"export", graph.string(), "smooth", "--to", (tmp / "x.zarr").string(), "--levels",
               "2", "--cache", cache.string()},
              tmp.path());
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  write_all(tmp / "precious.ome.zarr" / "notes.txt", "keep me");
  r = run_cli({"export", graph.string(), "smooth", "--to", (tmp / "precious.ome.zarr").string(),
               "--cache", cache.string()},
              tmp.path());
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("not a Zarr array or group"), std::string::npos) << describe(r);
  EXPECT_TRUE(fs::exists(tmp / "precious.ome.zarr" / "notes.txt"));
}

TEST(ZarrExport, ImageFilesWrittenByExportReadBackWithReadImage) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "g.json", export_graph_json());
  const fs::path cache = tmp / "cache";
  const Graph g = build_graph(export_graph_json(), std::nullopt);
  for (const std::string file : {"raw.tif", "raw.nrrd", "raw.mha", "smooth.tif", "smooth.nrrd"}) {
    const std::string node = file.substr(0, file.find('.'));
    const fs::path out = tmp / file;
    const CommandResult r =
        run_cli({"export", graph.string(), node, "--to", out.string(), "--cache", cache.string()},
                tmp.path());
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    const Graph back = build_reader("read.image", out);
    EXPECT_TRUE(same_bytes(read_whole(back, "in"), read_whole(g, node))) << file;
  }
}

}  // namespace
}  // namespace cellflow::test

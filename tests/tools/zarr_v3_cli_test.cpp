// Zarr v3 and OME-NGFF 0.5 through the CLI, against independent readers:
// a damaged or unreadable v3 array fails `cellflow run` with an error naming
// the file and caches nothing for the node; arrays that zarrita writes go
// through read.zarr and `cellflow export` to Zarr v2, which zarr-python reads
// back bit-exactly; zarrita reads `--format zarr3` / `ngff-0.5` exports as
// zarr-python reads the same node's v2 / NGFF 0.4 exports; an NGFF input's
// physical space comes out in the export's transforms; every NGFF export
// validates against the published schemas (tests/data/ngff-schemas).
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "cli_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

const std::string kSource = CELLFLOW_SOURCE_DIR;

std::string reader_graph(const std::string& path, const std::string& cell_shape = "null") {
  return R"({"cellflow": 1, "nodes": [{"id": "in", "op": "read.zarr", "params": {"path": )" +
         to_json_compact(Value(path)) + R"(, "cell_shape": )" + cell_shape + "}}]}\n";
}

/// The cell files (all-digit names) under `folder`.
std::vector<std::string> cell_files(const fs::path& folder) {
  std::vector<std::string> out;
  for (const std::string& p : listing(folder)) {
    const std::string name = fs::path(p).filename().string();
    if (!p.ends_with("/") && !name.empty() &&
        name.find_first_not_of("0123456789") == std::string::npos)
      out.push_back(p);
  }
  return out;
}

TEST(ZarrV3Cli, DamagedArraysFailTheRunNamingTheFileAndCacheNothing) {
  TempDir tmp;
  const CommandResult made =
      run_command({CELLFLOW_PYTHON, kSource + "/tests/nodes/make_zarr_v3_arrays.py",
                   tmp.path().string(), "errors"},
                  tmp.path());
  ASSERT_EQ(made.exit_code, 0) << describe(made);
  const Value cases = parse_json(made.out, "manifest");
  // Metadata errors are an invalid graph (exit 2); damaged data fails the run (exit 1).
  const std::map<std::string, int> exit_code = {
      {"bad-crc32c", 1},  {"truncated-shard", 1}, {"half-shard", 1}, {"index-out-of-range", 1},
      {"short-chunk", 1}, {"unknown-codec", 2},   {"bad-json", 2}};
  ASSERT_EQ(cases.as_object().size(), exit_code.size());
  for (const auto& [name, c] : cases.as_object()) {
    const std::string path = c.find("path")->as_string();
    // One cell holding the whole array: a failed run must leave it uncached.
    const std::string json = reader_graph(path, "[13, 17, 10]");
    const fs::path graph = write_graph(tmp, name + ".json", json);
    const fs::path cache = tmp / ("cache-" + name);
    const CommandResult r = run_cli({"run", graph.string(), "--cache", cache.string()}, tmp.path());
    EXPECT_EQ(r.exit_code, exit_code.at(name)) << name << "\n" << describe(r);
    EXPECT_NE(r.err.find(c.find("file")->as_string()), std::string::npos) << name << "\n"
                                                                          << describe(r);
    EXPECT_EQ(cell_files(cache), std::vector<std::string>()) << name;
  }
}

// Arrays zarrita writes, and the sharded / crc32c / gzip ones encoded in Python.
TEST(ZarrV3Cli, V3ArraysExportToV2ThatZarrPythonReadsBitExactly) {
  TempDir tmp;
  const CommandResult made = run_command(
      {"node", kSource + "/tests/js/zarrita_tool.mjs", "write", (tmp / "in").string()}, tmp.path());
  ASSERT_EQ(made.exit_code, 0) << describe(made) << "\n(zarrita missing? run scripts/setup.sh)";
  const CommandResult encoded = run_command(
      {CELLFLOW_PYTHON, kSource + "/tests/nodes/make_zarr_v3_arrays.py", (tmp / "py").string()},
      tmp.path());
  ASSERT_EQ(encoded.exit_code, 0) << describe(encoded);
  Value::Array cases = parse_json(made.out, "manifest").as_array();
  ASSERT_GE(cases.size(), 13u);
  const Value python_cases = parse_json(encoded.out, "manifest");
  for (const Value& c : python_cases.as_array()) cases.push_back(c);
  ASSERT_GE(cases.size(), 25u);
  std::string checks;
  for (const Value& c : cases) {
    const std::string name = c.find("name")->as_string();
    const fs::path graph =
        write_graph(tmp, name + ".json", reader_graph(c.find("path")->as_string()));
    const fs::path out = tmp / "out" / (name + ".zarr");
    const CommandResult r = run_cli(
        {"export", graph.string(), "in", "--to", out.string(), "--cache", (tmp / "cache").string()},
        tmp.path());
    ASSERT_EQ(r.exit_code, 0) << name << "\n" << describe(r);
    checks += "check(" + to_json_compact(Value(out.string())) + ", " +
              to_json_compact(*c.find("raw")) + ", " + to_json_compact(*c.find("dtype")) + ")\n";
  }
  const std::string script =
      "import sys, zarr, numpy as np\n"
      "bad = 0\n"
      "def check(path, raw, dtype):\n"
      "    global bad\n"
      "    if dtype[1:].isdigit():  # cellflow's names: u16 -> uint16\n"
      "        dtype = {'u': 'uint', 'i': 'int', 'f': 'float'}[dtype[0]] + dtype[1:]\n"
      "    dtype = 'uint8' if dtype == 'bool' else dtype  # read.zarr reads bool as u8\n"
      "    a = zarr.open(path, mode='r')\n"
      "    want = np.fromfile(raw, dtype=np.dtype(dtype).newbyteorder('<')).reshape(a.shape)\n"
      "    got = a[...]\n"
      "    if got.dtype != want.dtype or got.tobytes() != want.tobytes():\n"
      "        bad += 1\n"
      "        print('MISMATCH', path, got.dtype, want.dtype)\n" +
      checks + "print('OK' if bad == 0 else 'FAILED')\n";
  const CommandResult check = run_command({CELLFLOW_PYTHON, "-c", script}, tmp.path());
  EXPECT_EQ(check.exit_code, 0) << describe(check);
  EXPECT_NE(check.out.find("OK"), std::string::npos) << describe(check);
}

/// Reads array (or group) `path` with zarrita into `raw`; returns its report.
Value zarrita_read(const TempDir& tmp, const fs::path& path, const fs::path& raw) {
  const CommandResult r = run_command(
      {"node", kSource + "/tests/js/zarrita_tool.mjs", "read", path.string(), raw.string()},
      tmp.path());
  EXPECT_EQ(r.exit_code, 0) << describe(r) << "\n(zarrita missing? run scripts/setup.sh)";
  return r.exit_code == 0 ? parse_json(r.out, "zarrita") : Value();
}

/// Reads array `path` with zarr-python into `raw` (little-endian, C order).
void zarr_python_read(const TempDir& tmp, const fs::path& path, const fs::path& raw) {
  const std::string script = "import zarr, numpy as np\na = zarr.open(" +
                             to_json_compact(Value(path.string())) +
                             ", mode='r')[...]\na.astype(a.dtype.newbyteorder('<')).tofile(" +
                             to_json_compact(Value(raw.string())) + ")\n";
  const CommandResult r = run_command({CELLFLOW_PYTHON, "-c", script}, tmp.path());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
}

/// `cellflow export GRAPH NODE --to TO --cache CACHE EXTRA...`.
CommandResult export_node(const TempDir& tmp, const fs::path& graph, const std::string& cache,
                          const std::string& node, const fs::path& to,
                          std::vector<std::string> extra) {
  std::vector<std::string> args{"export",    graph.string(), node, "--to",
                                to.string(), "--cache",      cache};
  args.insert(args.end(), extra.begin(), extra.end());
  return run_cli(args, tmp.path());
}

void expect_valid_ngff(const TempDir& tmp, const std::vector<fs::path>& groups) {
  std::vector<std::string> argv{CELLFLOW_PYTHON, kSource + "/tests/tools/check_ngff.py"};
  for (const fs::path& g : groups) argv.push_back(g.string());
  const CommandResult r = run_command(argv, tmp.path());
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("OK " + std::to_string(groups.size()) + " groups"), std::string::npos)
      << describe(r);
}

TEST(ZarrV3Cli, V3AndNgff05ExportsReadByZarritaAsZarrPythonReadsV2) {
  TempDir tmp;
  const std::string json = R"({"cellflow": 1, "nodes": [
    {"id": "f", "op": "synthetic.blobs",
     "params": {"shape": [20, 24, 28], "cell_shape": [8, 8, 8], "dtype": "f32", "seed": 4,
                "count": 6}},
    {"id": "u", "op": "rescale", "inputs": ["f"], "params": {"dtype": "u16"}},
    {"id": "l", "op": "cast", "inputs": ["u"], "params": {"dtype": "i64"}}]})";
  const fs::path graph = write_graph(tmp, "graph.json", json);
  const std::string cache = (tmp / "cache").string();
  const auto exp = [&](const std::string& node, const fs::path& to,
                       std::vector<std::string> extra) {
    const CommandResult r = export_node(tmp, graph, cache, node, to, std::move(extra));
    ASSERT_EQ(r.exit_code, 0) << describe(r);
  };
  std::vector<fs::path> groups;
  for (const std::string node : {"f", "u", "l"}) {
    const fs::path dir = tmp / node;
    exp(node, dir / "v2.zarr", {});
    exp(node, dir / "v3.zarr", {"--format", "zarr3"});
    exp(node, dir / "n4.ome.zarr", {"--levels", "3"});
    exp(node, dir / "n5.ome.zarr", {"--levels", "3", "--format", "ngff-0.5"});
    groups.push_back(dir / "n4.ome.zarr");
    groups.push_back(dir / "n5.ome.zarr");
    zarr_python_read(tmp, dir / "v2.zarr", dir / "v2.raw");
    const Value array = zarrita_read(tmp, dir / "v3.zarr", dir / "v3.raw");
    ASSERT_TRUE(array.is_object()) << node;
    EXPECT_EQ(to_json_compact(*array.find("shape")), "[20,24,28]") << node;
    EXPECT_TRUE(read_all(dir / "v3.raw") == read_all(dir / "v2.raw")) << node << ": zarr3";
    // The whole group (zarrita finds level 0 from the NGFF 0.5 metadata), then each level.
    const Value group = zarrita_read(tmp, dir / "n5.ome.zarr", dir / "n5.raw");
    ASSERT_TRUE(group.is_object()) << node;
    EXPECT_TRUE(read_all(dir / "n5.raw") == read_all(dir / "v2.raw")) << node << ": ngff-0.5";
    EXPECT_EQ(to_json_compact(*group.find("attributes")->find("ome")->find("version")), "\"0.5\"");
    for (const std::string level : {"1", "2"}) {
      zarr_python_read(tmp, dir / "n4.ome.zarr" / level, dir / ("n4-" + level + ".raw"));
      zarrita_read(tmp, dir / "n5.ome.zarr" / level, dir / ("n5-" + level + ".raw"));
      EXPECT_TRUE(read_all(dir / ("n5-" + level + ".raw")) ==
                  read_all(dir / ("n4-" + level + ".raw")))
          << node << ": ngff-0.5 level " << level;
    }
  }
  expect_valid_ngff(tmp, groups);
}

/// Writes an NGFF 0.4 group with zarr-python: `array` creates its array "0"
/// (in Python, with `g` the group), `multiscale` is the multiscales entry.
void python_ngff04(const TempDir& tmp, const fs::path& group, const std::string& array,
                   const std::string& multiscale) {
  const std::string script = "import zarr, numpy as np\ng = zarr.open_group(" +
                             to_json_compact(Value(group.string())) + ", mode='w')\n" + array +
                             "\ng.attrs['multiscales'] = [" + multiscale + "]\n";
  const CommandResult made = run_command({CELLFLOW_PYTHON, "-c", script}, tmp.path());
  ASSERT_EQ(made.exit_code, 0) << describe(made);
}

// --format: usage errors exit 2 naming the option; a v3 export replaces an
// earlier export (v2 or v3) at its path; a unit NGFF does not name is left
// out of the metadata with a warning.
TEST(ZarrV3Cli, ExportFormatRulesReplacementAndUnits) {
  TempDir tmp;
  const fs::path in = tmp / "in.ome.zarr";
  ASSERT_NO_FATAL_FAILURE(python_ngff04(
      tmp, in, "g.create_dataset('0', shape=(4, 6, 8), chunks=(2, 3, 4), dtype='<i2')[...] = 7",
      "{'version': '0.4', 'axes': [{'name': 'z', 'type': 'space', 'unit': 'micron'},"
      " {'name': 'y', 'type': 'space'}, {'name': 'x', 'type': 'space'}],"
      " 'datasets': [{'path': '0', 'coordinateTransformations': ["
      "{'type': 'scale', 'scale': [3.0, 1.0, 1.0]}]}]}"));
  const fs::path graph = write_graph(tmp, "g.json", reader_graph((in / "0").string()));
  const std::string cache = (tmp / "cache").string();
  const auto exp = [&](const fs::path& to, std::vector<std::string> extra) {
    std::vector<std::string> args{"export",    graph.string(), "in", "--to",
                                  to.string(), "--cache",      cache};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_cli(args, tmp.path());
  };
  CommandResult r = exp(tmp / "a.tif", {"--format", "zarr3"});
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("--format zarr3 is for .zarr and .ome.zarr outputs"), std::string::npos)
      << describe(r);
  r = exp(tmp / "a.zarr", {"--format", "zarr3", "--levels", "2"});
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("--levels needs"), std::string::npos) << describe(r);
  r = exp(tmp / "a.zarr", {"--format", "zarr4"});
  EXPECT_EQ(r.exit_code, 2) << describe(r);

  const fs::path out = tmp / "out.ome.zarr";
  for (const std::string format : {"ngff-0.4", "ngff-0.5", "ngff-0.5", "zarr3", "ngff-0.4"}) {
    r = exp(out, {"--format", format, "--levels", format == "zarr3" ? "1" : "2"});
    ASSERT_EQ(r.exit_code, 0) << format << "\n" << describe(r);
    EXPECT_EQ(fs::exists(out / "zarr.json"), format == "ngff-0.5" || format == "zarr3") << format;
    EXPECT_EQ(fs::exists(out / ".zattrs"), format == "ngff-0.4") << format;
    if (format.starts_with("ngff")) {
      EXPECT_NE(r.err.find("unit \"micron\" of axis \"z\" is not an NGFF space unit name"),
                std::string::npos)
          << describe(r);
    }
  }
  const Value v4 = parse_json(read_all(out / ".zattrs"), ".zattrs");
  const Value& z = v4.find("multiscales")->as_array()[0].find("axes")->as_array()[0];
  EXPECT_EQ(z.find("unit"), nullptr);
  expect_valid_ngff(tmp, {out});
}

/// The (scale, translation) of dataset `level` in a multiscale entry.
std::pair<std::vector<double>, std::vector<double>> transforms(const Value& multiscale, int level) {
  std::pair<std::vector<double>, std::vector<double>> out;
  const Value& ds = multiscale.find("datasets")->as_array().at(static_cast<size_t>(level));
  for (const Value& t : ds.find("coordinateTransformations")->as_array()) {
    const std::string type = t.find("type")->as_string();
    auto& into = type == "scale" ? out.first : out.second;
    for (const Value& x : t.find(type.c_str())->as_array()) into.push_back(x.as_double());
  }
  return out;
}

void expect_near(const std::vector<double>& got, const std::vector<double>& want,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12) << what << " " << i;
}

// NGFF 0.4 input (written by zarr-python, transforms on the dataset and on the
// multiscale) -> read.zarr -> export NGFF 0.5 -> read.zarr -> export NGFF 0.4:
// spacing, origin and units come out as the input says, scaled per level.
TEST(ZarrV3Cli, NgffSpaceRoundTripsThroughReadZarrAndExport) {
  TempDir tmp;
  const fs::path in = tmp / "in.ome.zarr";
  ASSERT_NO_FATAL_FAILURE(python_ngff04(
      tmp, in,
      "a = g.create_dataset('0', shape=(9, 12, 10), chunks=(4, 5, 6), dtype='<u2')\n"
      "a[...] = np.arange(9 * 12 * 10, dtype='<u2').reshape(9, 12, 10)",
      "{'version': '0.4', 'name': 'in', 'axes': ["
      "{'name': 'z', 'type': 'space', 'unit': 'micrometer'},"
      " {'name': 'y', 'type': 'space', 'unit': 'micrometer'},"
      " {'name': 'x', 'type': 'space', 'unit': 'nanometer'}],"
      " 'datasets': [{'path': '0', 'coordinateTransformations': ["
      "{'type': 'scale', 'scale': [1.0, 0.2, 0.25]},"
      " {'type': 'translation', 'translation': [10.0, -5.0, 2.5]}]}],"
      " 'coordinateTransformations': [{'type': 'scale', 'scale': [2.0, 1.0, 1.0]}]}"));
  // x = 2 * (1 * i + 10) on z: spacing 2, origin 20.
  const std::vector<double> spacing{2.0, 0.2, 0.25};
  const std::vector<double> origin{20.0, -5.0, 2.5};

  const fs::path out5 = tmp / "out5.ome.zarr";
  const fs::path out4 = tmp / "out4.ome.zarr";
  const std::string cache = (tmp / "cache").string();
  const fs::path g1 = write_graph(tmp, "g1.json", reader_graph((in / "0").string()));
  CommandResult r = run_cli({"export", g1.string(), "in", "--to", out5.string(), "--format",
                             "ngff-0.5", "--levels", "2", "--cache", cache},
                            tmp.path());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const fs::path g2 = write_graph(tmp, "g2.json", reader_graph((out5 / "0").string()));
  r = run_cli(
      {"export", g2.string(), "in", "--to", out4.string(), "--levels", "2", "--cache", cache},
      tmp.path());
  ASSERT_EQ(r.exit_code, 0) << describe(r);

  const Value v5 = parse_json(read_all(out5 / "zarr.json"), "zarr.json");
  const Value v4 = parse_json(read_all(out4 / ".zattrs"), ".zattrs");
  for (const Value* ms : {&v5.find("attributes")->find("ome")->find("multiscales")->as_array()[0],
                          &v4.find("multiscales")->as_array()[0]}) {
    const std::string what = ms == &v4.find("multiscales")->as_array()[0] ? "0.4" : "0.5";
    const auto& axes = ms->find("axes")->as_array();
    ASSERT_EQ(axes.size(), 3u);
    EXPECT_EQ(axes[0].find("unit")->as_string(), "micrometer") << what;
    EXPECT_EQ(axes[2].find("unit")->as_string(), "nanometer") << what;
    EXPECT_EQ(axes[1].find("name")->as_string(), "y") << what;
    const auto [s0, t0] = transforms(*ms, 0);
    expect_near(s0, spacing, what + " level 0 scale");
    expect_near(t0, origin, what + " level 0 translation");
    // Level 1 voxel j is the mean of level-0 voxels 2j and 2j+1: centred half a voxel on.
    const auto [s1, t1] = transforms(*ms, 1);
    std::vector<double> want_s1;
    std::vector<double> want_t1;
    for (size_t d = 0; d < 3; ++d) {
      want_s1.push_back(2 * spacing[d]);
      want_t1.push_back(origin[d] + spacing[d] / 2);
    }
    expect_near(s1, want_s1, what + " level 1 scale");
    expect_near(t1, want_t1, what + " level 1 translation");
  }
  expect_valid_ngff(tmp, {out5, out4});
}

// A time series (t, z, y, x): the time axis keeps its type, unit, spacing
// and origin on every level (the pyramid halves the space axes only).
TEST(ZarrV3Cli, TimeAxisKeepsItsTypeAndSpacingOnEveryLevel) {
  TempDir tmp;
  const fs::path in = tmp / "t.ome.zarr";
  ASSERT_NO_FATAL_FAILURE(python_ngff04(
      tmp, in,
      "g.create_dataset('0', shape=(3, 4, 6, 8), chunks=(1, 4, 6, 8), dtype='<u1')[...] = 5",
      "{'version': '0.4', 'axes': [{'name': 't', 'type': 'time', 'unit': 'second'},"
      " {'name': 'z', 'type': 'space'}, {'name': 'y', 'type': 'space'},"
      " {'name': 'x', 'type': 'space'}],"
      " 'datasets': [{'path': '0', 'coordinateTransformations': ["
      "{'type': 'scale', 'scale': [30.0, 2.0, 1.0, 1.0]},"
      " {'type': 'translation', 'translation': [60.0, 0.0, 0.0, 0.0]}]}]}"));
  const fs::path graph = write_graph(tmp, "g.json", reader_graph((in / "0").string()));
  const fs::path out = tmp / "out.ome.zarr";
  const CommandResult r = run_cli({"export", graph.string(), "in", "--to", out.string(), "--format",
                                   "ngff-0.5", "--levels", "2", "--cache", (tmp / "c").string()},
                                  tmp.path());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const Value meta = parse_json(read_all(out / "zarr.json"), "zarr.json");
  const Value& ms = meta.find("attributes")->find("ome")->find("multiscales")->as_array()[0];
  const Value& t = ms.find("axes")->as_array()[0];
  EXPECT_EQ(t.find("type")->as_string(), "time");
  EXPECT_EQ(t.find("unit")->as_string(), "second");
  const auto [s1, t1] = transforms(ms, 1);
  expect_near(s1, {30.0, 4.0, 2.0, 2.0}, "level 1 scale");
  expect_near(t1, {60.0, 1.0, 0.5, 0.5}, "level 1 translation");
  expect_valid_ngff(tmp, {out});
}

// Labels beside an image: `--labels` writes labels/<id> as NGFF label images
// (0.4 and 0.5) that validate against the published label schemas, whose
// level 0 is the label node as zarr-python reads its plain export, and whose
// level 1 is the mode of 2x2x2 blocks (ties to the smallest) computed here in
// numpy; zarrita reads the 0.5 labels as zarr-python reads the 0.4 ones. A
// label node exported alone carries image-label metadata itself. Labels that
// are no labels (floats, another shape) are refused naming them, and the
// previous export stays as it was.
TEST(NgffLabels, LabelsBesideTheImageValidateAndTheirPyramidIsTheMode) {
  TempDir tmp;
  const std::string json = R"({"cellflow": 1, "nodes": [
    {"id": "raw", "op": "synthetic.blobs",
     "params": {"shape": [13, 22, 19], "cell_shape": [5, 8, 7], "seed": 3, "count": 9,
                "radius": [2.0, 4.0], "spacing": [2.0, 0.5, 0.5], "unit": "micrometer"}},
    {"id": "mask", "op": "threshold", "inputs": ["raw"], "params": {"above": 0.45}},
    {"id": "cells", "op": "label", "inputs": ["mask"], "params": {}},
    {"id": "small", "op": "downsample", "inputs": ["cells"],
     "params": {"factors": 2, "method": "mode"}}]})";
  const fs::path graph = write_graph(tmp, "graph.json", json);
  const std::string cache = (tmp / "cache").string();
  const auto exp = [&](const std::string& node, const fs::path& to,
                       std::vector<std::string> extra) {
    return export_node(tmp, graph, cache, node, to, std::move(extra));
  };
  const fs::path n4 = tmp / "n4.ome.zarr";
  const fs::path n5 = tmp / "n5.ome.zarr";
  ASSERT_EQ(exp("raw", n4, {"--labels", "cells,mask", "--levels", "3"}).exit_code, 0);
  ASSERT_EQ(exp("raw", n5,
                {"--labels", "cells", "--labels", "mask", "--levels", "3", "--format", "ngff-0.5"})
                .exit_code,
            0);
  ASSERT_EQ(exp("cells", tmp / "alone.ome.zarr", {"--levels", "2"}).exit_code, 0);
  ASSERT_EQ(exp("cells", tmp / "cells.zarr", {}).exit_code, 0);
  expect_valid_ngff(tmp, {n4, n5, tmp / "alone.ome.zarr"});

  const std::string script = R"(
import json, sys, zarr, numpy as np
group, plain, alone = sys.argv[1:4]
g = zarr.open(group, mode='r')
assert json.loads(open(group + '/labels/.zattrs').read())['labels'] == ['cells', 'mask']
cells0 = g['labels/cells/0'][...]
assert cells0.dtype == np.uint32, cells0.dtype
assert np.array_equal(cells0, zarr.open(plain, mode='r')[...]), 'level 0 differs'
def mode_of_blocks(a):
    out = np.zeros(tuple((n + 1) // 2 for n in a.shape), a.dtype)
    for i in np.ndindex(out.shape):
        block = a[tuple(slice(2 * k, 2 * k + 2) for k in i)].ravel()
        values, counts = np.unique(block, return_counts=True)
        out[i] = values[np.argmax(counts)]  # unique sorts: ties go to the smallest
    return out
level = cells0
for l in (1, 2):
    level = mode_of_blocks(level)
    assert np.array_equal(g['labels/cells/%d' % l][...], level), 'level %d is not the mode' % l
attrs = json.loads(open(group + '/labels/cells/.zattrs').read())
assert attrs['image-label']['source'] == {'image': '../../'}, attrs['image-label']
assert attrs['multiscales'][0]['type'] == 'mode'
assert attrs['multiscales'][0]['datasets'][0]['coordinateTransformations'][0]['scale'] == [2.0, 0.5, 0.5]
alone_attrs = json.loads(open(alone + '/.zattrs').read())
assert 'source' not in alone_attrs['image-label'] and alone_attrs['multiscales'][0]['type'] == 'mode'
g['labels/cells/1'][...].astype('<u4').tofile(group + '-cells-1.raw')
print('labels ok')
)";
  const CommandResult checked =
      run_command({CELLFLOW_PYTHON, "-c", script, n4.string(), (tmp / "cells.zarr").string(),
                   (tmp / "alone.ome.zarr").string()},
                  tmp.path());
  EXPECT_EQ(checked.exit_code, 0) << describe(checked);
  zarrita_read(tmp, n5 / "labels" / "cells" / "1", tmp / "n5-cells-1.raw");
  EXPECT_TRUE(read_all(tmp / "n5-cells-1.raw") == read_all(tmp / "n4.ome.zarr-cells-1.raw"));

  // Refused, naming the label; the earlier export at n4 is left as it was.
  const std::vector<std::string> before = listing(n4);
  for (const auto& [label, why] : std::vector<std::pair<std::string, std::string>>{
           {"raw2", "not a node"}, {"small", "shape"}}) {
    (void)why;
    const CommandResult r = exp("raw", n4, {"--labels", label});
    EXPECT_NE(r.exit_code, 0) << describe(r);
    EXPECT_NE(r.err.find("\"" + label + "\""), std::string::npos) << describe(r);
  }
  const std::string float_graph = R"({"cellflow": 1, "nodes": [
    {"id": "raw", "op": "synthetic.blobs", "params": {"shape": [8, 8], "cell_shape": [4, 4]}},
    {"id": "smooth", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": 1.0}}]})";
  const fs::path fg = write_graph(tmp, "float.json", float_graph);
  const CommandResult r = run_cli(
      {"export", fg.string(), "raw", "--to", n4.string(), "--labels", "smooth", "--cache", cache},
      tmp.path());
  EXPECT_NE(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("\"smooth\""), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("integers"), std::string::npos) << describe(r);
  const CommandResult tif = exp("raw", tmp / "x.tif", {"--labels", "cells"});
  EXPECT_EQ(tif.exit_code, 2) << describe(tif);
  EXPECT_EQ(listing(n4), before);
}

// A sharded cache (`run --shard-cells N`, or CELLFLOW_SHARD_CELLS, when it is
// created) packs each complete image node into Zarr v3 shards: zarrita, an independent v3 reader,
// reads the packed node <hash>/0, and the node group <hash> (NGFF 0.5), as
// zarr-python reads the same node's v2 export, for f32 and u32 nodes whose
// grids do not divide into whole shards.
TEST(ZarrV3Cli, ZarritaReadsAShardedCacheNodeBitExactly) {
  TempDir tmp;
  const std::string json = R"({"cellflow": 1, "nodes": [
    {"id": "raw", "op": "synthetic.blobs",
     "params": {"shape": [21, 30, 26], "cell_shape": [4, 7, 5], "seed": 8, "count": 7}},
    {"id": "mask", "op": "threshold", "inputs": ["raw"], "params": {"above": 0.4}},
    {"id": "cells", "op": "label", "inputs": ["mask"], "params": {}}],
    "outputs": ["raw", "cells"]})";
  const fs::path graph = write_graph(tmp, "graph.json", json);
  const fs::path cache = tmp / "cache";
  const CommandResult ran =
      run_cli({"run", graph.string(), "--cache", cache.string(), "--quiet", "--shard-cells", "8"},
              tmp.path());
  ASSERT_EQ(ran.exit_code, 0) << describe(ran);
  const std::string format = read_all(cache / "cellflow-cache.json");
  EXPECT_NE(format.find("\"shard_cells\": 8"), std::string::npos) << format;
  // Another shard size on the existing cache: said, and the cache keeps its format.
  const CommandResult again =
      run_cli({"run", graph.string(), "--cache", cache.string(), "--quiet", "--shard-cells", "16"},
              tmp.path());
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_NE(again.err.find("applies to new caches only"), std::string::npos) << describe(again);
  EXPECT_EQ(read_all(cache / "cellflow-cache.json"), format);
  const CommandResult hashes = run_cli({"graph", graph.string(), "--hashes"}, tmp.path());
  ASSERT_EQ(hashes.exit_code, 0) << describe(hashes);
  for (const std::string id : {"raw", "cells"}) {
    const size_t at = hashes.out.find(id + " ");
    ASSERT_NE(at, std::string::npos) << hashes.out;
    const std::string hash = hashes.out.substr(at + id.size() + 1, 32);
    const fs::path node = cache / hash / "0";
    // Packed: a v3 array of shards, no v2 metadata and no single cell files left.
    ASSERT_TRUE(fs::exists(node / "zarr.json")) << id;
    EXPECT_FALSE(fs::exists(node / ".zarray")) << id;
    const Value array = zarrita_read(tmp, node, tmp / (id + "-cache.raw"));
    ASSERT_TRUE(array.is_object()) << id;
    EXPECT_EQ(to_json_compact(*array.find("shape")), "[21,30,26]") << id;
    const CommandResult exported =
        export_node(tmp, graph, cache.string(), id, tmp / (id + ".zarr"), {});
    ASSERT_EQ(exported.exit_code, 0) << describe(exported);
    zarr_python_read(tmp, tmp / (id + ".zarr"), tmp / (id + "-v2.raw"));
    EXPECT_TRUE(read_all(tmp / (id + "-cache.raw")) == read_all(tmp / (id + "-v2.raw"))) << id;
    // The node group is NGFF 0.5 too: zarrita finds level 0 from its metadata,
    // and it validates against the published schema.
    const Value group = zarrita_read(tmp, cache / hash, tmp / (id + "-group.raw"));
    ASSERT_TRUE(group.is_object()) << id;
    EXPECT_TRUE(read_all(tmp / (id + "-group.raw")) == read_all(tmp / (id + "-v2.raw"))) << id;
    expect_valid_ngff(tmp, {cache / hash});
  }
  // The group metadata is part of a packed node: verify finds nothing to report.
  const CommandResult verified =
      run_cli({"cache", "verify", "--cache", cache.string()}, tmp.path());
  EXPECT_EQ(verified.exit_code, 0) << describe(verified);
}

}  // namespace
}  // namespace cellflow::test

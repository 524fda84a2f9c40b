// read.zarr on Zarr v3 arrays through the CLI: a damaged or unreadable array
// fails `cellflow run` with an error naming the file and caches nothing for
// the node; arrays that zarrita writes go through read.zarr and `cellflow
// export` to Zarr v2, which zarr-python reads back bit-exactly.
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
    const CommandResult r =
        run_cli({"run", graph.string(), "--cache", cache.string(), "--quiet"}, tmp.path());
    EXPECT_EQ(r.exit_code, exit_code.at(name)) << name << "\n" << describe(r);
    EXPECT_NE(r.err.find(c.find("file")->as_string()), std::string::npos) << name << "\n"
                                                                          << describe(r);
    EXPECT_EQ(cell_files(cache), std::vector<std::string>()) << name;
  }
}

TEST(ZarrV3Cli, ZarritaArraysExportToV2ThatZarrPythonReadsBitExactly) {
  TempDir tmp;
  const CommandResult made = run_command(
      {"node", kSource + "/tests/js/zarrita_tool.mjs", "write", (tmp / "in").string()}, tmp.path());
  ASSERT_EQ(made.exit_code, 0) << describe(made) << "\n(zarrita missing? run scripts/setup.sh)";
  const Value cases = parse_json(made.out, "manifest");
  ASSERT_GE(cases.as_array().size(), 13u);
  std::string checks;
  for (const Value& c : cases.as_array()) {
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

}  // namespace
}  // namespace cellflow::test

// N5 through the CLI: a damaged block fails `cellflow run` (exit 1) and
// metadata it cannot read is an invalid graph (exit 2), both naming the file
// and caching nothing for the node; datasets zarr-python's N5Store writes go
// through read.n5 and `cellflow export` to Zarr, which zarr-python reads back
// as it reads the N5 datasets themselves.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

const std::string kMakeDatasets =
    std::string(CELLFLOW_SOURCE_DIR) + "/tests/nodes/make_n5_datasets.py";

std::string reader_graph(const std::string& path, const std::string& cell_shape = "null") {
  return R"({"cellflow": 1, "nodes": [{"id": "in", "op": "read.n5", "params": {"path": )" +
         to_json_compact(Value(path)) + R"(, "cell_shape": )" + cell_shape + "}}]}\n";
}

Value datasets_manifest(const TempDir& tmp, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv = {CELLFLOW_PYTHON, kMakeDatasets, tmp.path().string()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  const CommandResult made = run_command(argv, tmp.path());
  EXPECT_EQ(made.exit_code, 0) << describe(made);
  return made.exit_code == 0 ? parse_json(made.out, "manifest") : Value();
}

TEST(N5Cli, DamagedDatasetsFailTheRunNamingTheFileAndCacheNothing) {
  TempDir tmp;
  const Value cases = datasets_manifest(tmp, {"errors"});
  ASSERT_FALSE(cases.is_null());
  const std::map<std::string, int> exit_code = {
      {"truncated-gzip", 1}, {"truncated-raw", 1}, {"raw-extra-bytes", 1}, {"header-rank", 1},
      {"header-size", 1},    {"header-mode", 1},   {"header-only", 1},     {"no-attributes", 2},
      {"bad-datatype", 2},   {"bzip2", 2},         {"bad-json", 2},        {"group", 2}};
  ASSERT_EQ(cases.as_object().size(), exit_code.size());
  for (const auto& [name, c] : cases.as_object()) {
    // One cell holding the whole (6, 7) dataset: a failed run must leave it uncached.
    const fs::path graph =
        write_graph(tmp, name + ".json", reader_graph(c.find("path")->as_string(), "[6, 7]"));
    const fs::path cache = tmp / ("cache-" + name);
    const CommandResult r = run_cli({"run", graph.string(), "--cache", cache.string()}, tmp.path());
    EXPECT_EQ(r.exit_code, exit_code.at(name)) << name << "\n" << describe(r);
    EXPECT_NE(r.err.find(c.find("file")->as_string()), std::string::npos) << name << "\n"
                                                                          << describe(r);
    for (const std::string& p : listing(cache)) {
      const std::string leaf = fs::path(p).filename().string();
      EXPECT_TRUE(p.ends_with("/") || leaf.find_first_not_of("0123456789") != std::string::npos)
          << name << ": cell file " << p;
    }
  }
}

TEST(N5Cli, DatasetsExportToZarrThatZarrPythonReadsBitExactly) {
  TempDir tmp;
  const Value cases = datasets_manifest(tmp);
  ASSERT_FALSE(cases.is_null());
  ASSERT_GE(cases.as_array().size(), 18u);
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
              to_json_compact(*c.find("raw")) + ")\n";
  }
  // The raw files hold what zarr-python reads from the N5 datasets.
  const std::string script =
      "import zarr, numpy as np\n"
      "bad = 0\n"
      "def check(path, raw):\n"
      "    global bad\n"
      "    a = zarr.open(path, mode='r')[...]\n"
      "    want = np.fromfile(raw, dtype=a.dtype.newbyteorder('<')).reshape(a.shape)\n"
      "    if a.astype(a.dtype.newbyteorder('<')).tobytes() != want.tobytes():\n"
      "        bad += 1\n"
      "        print('MISMATCH', path)\n" +
      checks + "print('OK' if bad == 0 else 'FAILED')\n";
  const CommandResult check = run_command({CELLFLOW_PYTHON, "-c", script}, tmp.path());
  EXPECT_EQ(check.exit_code, 0) << describe(check);
  EXPECT_NE(check.out.find("OK"), std::string::npos) << describe(check);
}

}  // namespace
}  // namespace cellflow::test

// Bad input through the CLI: exit code 2, a message naming the file, node and
// field, and the cache directory untouched (absent, or byte-for-byte unchanged).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "cli_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

struct BadCase {
  std::string name;
  std::string json;
  std::vector<std::string> mentions;  // besides the file name
};

const std::string kRaw =
    R"({"id": "raw", "op": "synthetic.blobs", "params": {"shape": [16, 16, 16], "cell_shape": [8, 8, 8]}})";

std::string nodes(const std::string& body, const std::string& tail = "") {
  return "{\"cellflow\": 1, \"nodes\": [\n  " + body + "\n]" + tail + "}\n";
}

std::vector<BadCase> bad_cases() {
  return {
      {"malformed_json", "{\"cellflow\": 1,\n \"nodes\": [\n  {\"id\": \"raw\",, }\n]}\n", {":3:"}},
      {"not_an_object", "[1, 2, 3]\n", {}},
      {"unknown_top_field", nodes(kRaw, ", \"outptus\": [\"raw\"]"), {"outptus"}},
      {"wrong_format", "{\"cellflow\": 7, \"nodes\": [" + kRaw + "]}", {"cellflow"}},
      {"unknown_op",
       nodes(kRaw +
             R"(, {"id": "smooth", "op": "gausian", "inputs": ["raw"], "params": {"sigma": 1}})"),
       {"smooth", "gausian"}},
      {"unknown_param",
       nodes(
           kRaw +
           R"(, {"id": "smooth", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": 1, "sigmaa": 2}})"),
       {"smooth", "sigmaa"}},
      {"ill_typed_param",
       nodes(
           kRaw +
           R"(, {"id": "smooth", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": "wide"}})"),
       {"smooth", "sigma"}},
      {"ill_typed_list",
       nodes(
           R"({"id": "raw", "op": "synthetic.blobs", "params": {"shape": [16, "16"], "cell_shape": [8, 8]}})"),
       {"raw", "shape"}},
      {"out_of_range_sigma",
       nodes(kRaw +
             R"(, {"id": "smooth", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": -1}})"),
       {"smooth", "sigma"}},
      {"out_of_range_count",
       nodes(
           R"({"id": "raw", "op": "synthetic.blobs", "params": {"shape": [16, 16], "cell_shape": [8, 8], "count": -5}})"),
       {"raw", "count"}},
      {"missing_required_param",
       nodes(kRaw + R"(, {"id": "smooth", "op": "gaussian", "inputs": ["raw"]})"),
       {"smooth", "sigma"}},
      {"missing_input",
       nodes(kRaw +
             R"(, {"id": "smooth", "op": "gaussian", "inputs": ["rawr"], "params": {"sigma": 1}})"),
       {"smooth", "rawr", "inputs"}},
      {"wrong_input_count",
       nodes(kRaw + R"(, {"id": "mask", "op": "threshold", "params": {"above": 1}})"),
       {"mask", "inputs"}},
      {"duplicate_id",
       nodes(kRaw +
             R"(, {"id": "raw", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": 1}})"),
       {"raw", "duplicate"}},
      {"cycle",
       nodes(kRaw + R"(, {"id": "a", "op": "gaussian", "inputs": ["b"], "params": {"sigma": 1}},
                     {"id": "b", "op": "gaussian", "inputs": ["a"], "params": {"sigma": 1}})"),
       {"cycle", "inputs"}},
      {"shape_mismatch_rank",
       nodes(
           R"({"id": "raw4", "op": "synthetic.blobs", "params": {"shape": [2, 8, 8, 8], "cell_shape": [1, 8, 8, 8]}},
                                   {"id": "smooth", "op": "gaussian", "inputs": ["raw4"], "params": {"sigma": 1}})"),
       {"smooth", "rank"}},
      {"shape_mismatch_region",
       nodes(
           kRaw +
           R"(, {"id": "density", "op": "region.density", "inputs": ["raw"], "params": {"region": [4, 4]}})"),
       {"density", "region"}},
      {"cell_shape_rank",
       nodes(
           R"({"id": "raw", "op": "synthetic.blobs", "params": {"shape": [16, 16, 16], "cell_shape": [8, 8]}})"),
       {"raw", "cell_shape"}},
      {"bad_dtype",
       nodes(kRaw +
             R"(, {"id": "c", "op": "cast", "inputs": ["raw"], "params": {"dtype": "float16"}})"),
       {"\"c\"", "dtype"}},
      {"unknown_output", nodes(kRaw, ", \"outputs\": [\"nothing\"]"), {"outputs", "nothing"}},
  };
}

void check_bad_case(const BadCase& c, const fs::path& cache, const TempDir& tmp) {
  SCOPED_TRACE(c.name);
  const fs::path file = write_graph(tmp, c.name + ".json", c.json);
  const auto before = snapshot(cache);
  const bool existed = fs::exists(cache);
  const CommandResult r =
      run_cli({"run", file.string(), "--cache", cache.string(), "--quiet"}, tmp.path());
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find(file.string()), std::string::npos)
      << "the message should name the file: " << r.err;
  for (const auto& m : c.mentions)
    EXPECT_NE(r.err.find(m), std::string::npos) << "missing '" << m << "' in: " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  EXPECT_EQ(r.err.find("terminate"), std::string::npos) << r.err;
  EXPECT_EQ(fs::exists(cache), existed) << "the cache must not be created";
  EXPECT_EQ(snapshot(cache), before) << "the cache must be untouched";
}

TEST(CliBadInput, InvalidGraphsExitTwoAndLeaveNoCache) {
  TempDir tmp;
  for (const auto& c : bad_cases()) check_bad_case(c, tmp / "cache", tmp);
  EXPECT_FALSE(fs::exists(tmp / "cache"));
}

TEST(CliBadInput, InvalidGraphsLeaveAnExistingCacheUnchanged) {
  TempDir tmp;
  const fs::path good = write_graph(tmp, "good.json", example_graph_json(0.5, 20));
  const CommandResult ok =
      run_cli({"run", good.string(), "--cache", (tmp / "cache").string(), "--quiet"}, tmp.path());
  ASSERT_EQ(ok.exit_code, 0) << describe(ok);
  ASSERT_FALSE(snapshot(tmp / "cache").empty());
  for (const auto& c : bad_cases()) check_bad_case(c, tmp / "cache", tmp);
}

TEST(CliBadInput, BadUsageExitsTwoAndTouchesNothing) {
  TempDir tmp;
  const fs::path good = write_graph(tmp, "good.json", example_graph_json(0.5, 21));
  const fs::path cache = tmp / "cache";
  const auto expect_usage = [&](const std::vector<std::string>& args, const std::string& mention) {
    const CommandResult r = run_cli(args, tmp.path());
    EXPECT_EQ(r.exit_code, 2) << describe(r);
    EXPECT_NE(r.err.find(mention), std::string::npos)
        << "missing '" << mention << "' in: " << r.err;
    EXPECT_FALSE(fs::exists(cache)) << "after: " << args[0] << " " << mention;
  };
  expect_usage({"run", good.string(), "--cache", cache.string(), "--output", "nope"}, "nope");
  expect_usage({"run", (tmp / "missing.json").string(), "--cache", cache.string()}, "missing.json");
  expect_usage({"run", good.string(), "--cache", cache.string(), "--memory", "12Q"}, "12Q");
  expect_usage({"run", good.string(), "--cache", cache.string(), "--threads", "many"}, "threads");
  expect_usage({"export", good.string(), "nope", "--to", (tmp / "x.png").string(), "--cache",
                cache.string()},
               "nope");
  expect_usage({"graph", (tmp / "missing.json").string(), "--hashes"}, "missing.json");
}

TEST(CliBadInput, ForeignCacheDirectoryIsRefused) {
  TempDir tmp;
  const fs::path good = write_graph(tmp, "good.json", example_graph_json(0.5, 22));
  write_all(tmp / "cache" / "cellflow-cache.json", "{\"format\": 99}\n");
  const auto before = snapshot(tmp / "cache");
  const CommandResult r =
      run_cli({"run", good.string(), "--cache", (tmp / "cache").string(), "--quiet"}, tmp.path());
  EXPECT_NE(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("cellflow-cache.json"), std::string::npos) << r.err;
  EXPECT_EQ(snapshot(tmp / "cache"), before);
}

TEST(CliBadInput, UnwritableCacheFailsCleanly) {
  // A cache path that cannot be created (a regular file in the way) fails the
  // run with a non-zero exit code and a one-line message, not a crash.
  TempDir tmp;
  const fs::path good = write_graph(tmp, "good.json", example_graph_json(0.5, 23));
  write_all(tmp / "blocker", "x");
  const CommandResult r =
      run_cli({"run", good.string(), "--cache", (tmp / "blocker" / "cache").string(), "--quiet"},
              tmp.path());
  EXPECT_NE(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("cellflow: error:"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace cellflow::test

// Ops against scipy.ndimage and numpy (tests/nodes/scipy_reference.py, run by
// Debian's python3): median, min and max (ball and box), mean, binary
// erode/dilate/open/close, region.count, downsample (mean, mode, max) and
// label.stats, each computed by cellflow cell by cell (cells that do not
// divide the image) and recomputed by scipy from the same input bytes.
#include <gtest/gtest.h>

#include <sstream>

#include "cellflow/graph/graph.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

const Shape kShape{20, 23, 26};

struct Case {
  std::string name;
  std::string op;
  std::string input;  // "raw", "mask" or "labels"
  Value params;
  double rtol = 0;  // 0: bit-exact
};

void write_raw(const fs::path& file, const CellBuffer& b) {
  test::write_all(file, std::string(reinterpret_cast<const char*>(b.data()), b.num_bytes()));
}

Value input_entry(const fs::path& file, const CellBuffer& b) {
  write_raw(file, b);
  return Value(
      Value::Object{{"file", file.string()}, {"dtype", std::string(dtype_name(b.dtype()))}});
}

TEST(ScipyReference, OpsMatchScipyNdimage) {
  TempDir tmp;
  const std::vector<Case> cases = {
      {"median r=(1,2,1)", "median", "raw",
       Value(Value::Object{{"radius", test::ints({1, 2, 1})}})},
      {"min box r=2", "min", "raw", Value(Value::Object{{"radius", 2}, {"shape", "box"}})},
      {"max box r=(1,2,3)", "max", "raw",
       Value(Value::Object{{"radius", test::ints({1, 2, 3})}, {"shape", "box"}})},
      {"min ball r=(2,1,2)", "min", "raw", Value(Value::Object{{"radius", test::ints({2, 1, 2})}})},
      {"max ball r=2", "max", "raw", Value(Value::Object{{"radius", 2}})},
      {"mean r=(2,1,3)", "mean", "raw", Value(Value::Object{{"radius", test::ints({2, 1, 3})}}),
       1e-6},
      {"dilate r=2", "dilate", "mask", Value(Value::Object{{"radius", 2}})},
      {"erode r=(1,2,1)", "erode", "mask", Value(Value::Object{{"radius", test::ints({1, 2, 1})}})},
      {"open r=1", "open", "mask", Value(Value::Object{{"radius", 1}})},
      {"close r=2", "close", "mask", Value(Value::Object{{"radius", 2}})},
      {"region.count (8,5,7)", "region.count", "labels",
       Value(Value::Object{{"region", test::ints({8, 5, 7})}})},
      {"downsample mean (2,3,4)", "downsample", "raw",
       Value(Value::Object{{"factors", test::ints({2, 3, 4})}}), 1e-6},
      {"downsample mode (3,2,3)", "downsample", "labels",
       Value(Value::Object{{"factors", test::ints({3, 2, 3})}, {"method", "mode"}})},
      {"downsample max (4,4,5)", "downsample", "mask",
       Value(Value::Object{{"factors", test::ints({4, 4, 5})}, {"method", "max"}})},
  };

  GraphDef def;
  def.add("raw", "synthetic.blobs", {},
          Value(Value::Object{{"shape", Value::list(kShape.to_vector())},
                              {"cell_shape", test::ints({8, 7, 9})},
                              {"dtype", "f32"},
                              {"seed", 41},
                              {"count", 12},
                              {"radius", test::floats({2.0, 4.0})}}));
  def.add("mask", "threshold", {"raw"}, Value(Value::Object{{"above", 0.6}}));
  def.add("labels", "label", {"mask"});
  def.add("stats", "label.stats", {"labels", "raw"});
  for (size_t i = 0; i < cases.size(); ++i)
    def.add("case" + std::to_string(i), cases[i].op, {cases[i].input}, cases[i].params);
  const Graph g = Graph::build(def, nodes::builtin_registry());  // memory-only

  const auto whole = [&](const std::string& id) {
    auto img = g.image(id);
    return img->read(img->grid().bounds());
  };
  Value inputs = Value::object();
  for (const char* id : {"raw", "mask", "labels"})
    inputs.set(id, input_entry(tmp / (std::string(id) + ".bin"), whole(id)));
  Value list = Value::array();
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string id = "case" + std::to_string(i);
    const CellBuffer out = whole(id);
    const fs::path file = tmp / (id + ".bin");
    write_raw(file, out);
    Value c(Value::Object{{"name", cases[i].name},
                          {"op", cases[i].op},
                          {"input", cases[i].input},
                          {"params", cases[i].params},
                          {"file", file.string()},
                          {"dtype", std::string(dtype_name(out.dtype()))},
                          {"shape", Value::list(out.shape().to_vector())},
                          {"rtol", cases[i].rtol}});
    list.as_array().push_back(std::move(c));
  }
  const Table stats = g.table("stats");
  ASSERT_GE(stats.num_rows(), 3u) << "too few objects for a meaningful comparison";
  const fs::path csv = tmp / "stats.csv";
  test::write_all(csv, stats.to_csv());
  list.as_array().push_back(Value(Value::Object{
      {"name", "label.stats with intensity"}, {"op", "label.stats"}, {"file", csv.string()}}));
  const fs::path manifest = tmp / "manifest.json";
  test::write_all(manifest, to_json(Value(Value::Object{{"shape", Value::list(kShape.to_vector())},
                                                        {"inputs", std::move(inputs)},
                                                        {"cases", std::move(list)}})));

  const test::CommandResult r = test::run_command(
      {CELLFLOW_PYTHON, std::string(CELLFLOW_SOURCE_DIR) + "/tests/nodes/scipy_reference.py",
       manifest.string()},
      tmp.path());
  EXPECT_EQ(r.exit_code, 0) << test::describe(r);
  for (const Case& c : cases)
    EXPECT_NE(r.out.find("ok " + c.name + "\n"), std::string::npos) << c.name << "\n" << r.out;
  EXPECT_NE(r.out.find("ok label.stats with intensity\n"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace cellflow

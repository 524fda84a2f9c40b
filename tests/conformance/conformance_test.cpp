// The conformance suite: every op of nodes::builtin_registry(), of the example
// plugin (built in tree) and of the plugins named by $CELLFLOW_PLUGIN_PATH is
// checked for
//  - cell-wise == whole image: the op's output computed with several cell
//    shapes that do not divide the image equals the output computed as one
//    cell: bit-exactly for integer images, within kRelTol for floats
//    (|a - b| <= kRelTol * (max(|a|, |b|) + max |reference|), NaN == NaN),
//    the same partition into objects for `label`, the same rows for tables;
//  - determinism: the same output bit for bit with 1 and with 2 threads;
//  - the declared output: every cell has the dtype and shape the op declared;
//  - hashing: changing any param that has a default or a sample value (to
//    another valid value) changes the node's hash.
// Each op needs an entry in the table below (inputs and sample params): an op
// without one FAILS here, so a new op must be added to the table.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/nodes/image_export.hpp"
#include "cellflow/nodes/zarr_export.hpp"
#include "cellflow/plugins/loader.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

constexpr double kRelTol = 1e-5;
const Shape kShape{19, 26, 23};
/// None of them divides kShape; the reference is one cell holding the image.
const std::vector<Shape> kCellShapes = {Shape{8, 8, 8}, Shape{5, 11, 7}, Shape{19, 4, 23}};
const Shape kThreadsCellShape{5, 11, 7};

/// What a case's builders see: a scratch folder for input files and the
/// cell shape of this run.
struct Context {
  fs::path tmp;
  Shape cells;
};

enum class Compare {
  kValues,     // exact for integers, kRelTol for floats
  kPartition,  // label images: the same objects, whatever their numbers
};

/// How to test one op: its inputs (nodes added to the graph before it), its
/// sample params, and valid alternative values for params that perturbation
/// cannot guess (strings, paths).
struct OpCase {
  std::function<std::vector<std::string>(GraphDef&, const Context&)> inputs;
  std::function<Value(const Context&)> params;
  Compare compare = Compare::kValues;
  std::function<std::map<std::string, Value>(const Context&)> alternatives;
  /// Writes input files into ctx.tmp (readers); runs once per test.
  std::function<void(const Context&)> setup;
};

Value obj(Value::Object o) { return Value(std::move(o)); }

Value blobs_params(const Shape& cells, const std::string& dtype, int seed) {
  return obj({{"shape", Value::list(kShape.to_vector())},
              {"cell_shape", Value::list(cells.to_vector())},
              {"dtype", dtype},
              {"seed", seed},
              {"count", 10},
              {"radius", test::floats({3.0, 7.0})},
              {"noise", 0.05}});
}

// ---- input builders ------------------------------------------------------------

auto blobs(const std::string& dtype = "f32") {
  return [dtype](GraphDef& def, const Context& c) {
    def.add("in0", "synthetic.blobs", {}, blobs_params(c.cells, dtype, 7));
    return std::vector<std::string>{"in0"};
  };
}

auto two_blobs(const std::string& dtype = "f32") {
  return [dtype](GraphDef& def, const Context& c) {
    def.add("in0", "synthetic.blobs", {}, blobs_params(c.cells, dtype, 7));
    def.add("in1", "synthetic.blobs", {}, blobs_params(c.cells, dtype, 8));
    return std::vector<std::string>{"in0", "in1"};
  };
}

std::string add_mask(GraphDef& def, const Context& c) {
  def.add("in0", "synthetic.blobs", {}, blobs_params(c.cells, "f32", 7));
  def.add("mask", "threshold", {"in0"}, obj({{"above", 0.5}}));
  return "mask";
}

auto mask() {
  return [](GraphDef& def, const Context& c) { return std::vector<std::string>{add_mask(def, c)}; };
}

auto blobs_and_mask() {
  return [](GraphDef& def, const Context& c) {
    add_mask(def, c);
    return std::vector<std::string>{"in0", "mask"};
  };
}

auto labels(bool with_intensity) {
  return [with_intensity](GraphDef& def, const Context& c) {
    add_mask(def, c);
    def.add("labels", "label", {"mask"}, obj({{"connectivity", "face"}}));
    std::vector<std::string> ids{"labels"};
    if (with_intensity) ids.push_back("in0");
    return ids;
  };
}

auto no_inputs() {
  return [](GraphDef&, const Context&) { return std::vector<std::string>{}; };
}

auto params(Value v) {
  return [v](const Context&) { return v; };
}

auto alternatives(std::map<std::string, Value> m) {
  return [m](const Context&) { return m; };
}

/// Writes a synthetic image (seed) with `write`, for the readers.
void write_blobs(int seed, const std::function<void(CachedCellImage&)>& write) {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {}, blobs_params(Shape{8, 16, 16}, "u16", seed));
  const Graph g = Graph::build(def, nodes::builtin_registry());
  write(*g.image("raw"));
}

/// Writes `img` as a raw N5 dataset in `dir` (blocks of `block`, C order;
/// edge blocks hold only their in-bounds part, as N5's own writers store them).
void export_n5(CachedCellImage& img, const fs::path& dir, const Shape& block) {
  const Shape& shape = img.grid().shape();
  const int r = shape.rank();
  const size_t elem = dtype_size(img.dtype());
  std::string type(dtype_name(img.dtype()));  // "u16" -> "uint16"
  type = (type[0] == 'u' ? "uint" : type[0] == 'i' ? "int" : "float") + type.substr(1);
  std::vector<int64_t> dims(shape.to_vector());
  std::vector<int64_t> blocks(block.to_vector());
  std::reverse(dims.begin(), dims.end());
  std::reverse(blocks.begin(), blocks.end());
  test::write_all(dir / "attributes.json", to_json(obj({{"dimensions", Value::list(dims)},
                                                        {"blockSize", Value::list(blocks)},
                                                        {"dataType", type},
                                                        {"compression", obj({{"type", "raw"}})}})));
  const CellGrid grid(shape, block);
  for_each_index(Box::from_shape(grid.grid_shape()), [&](const CellIndex& b) {
    const Box box = grid.cell_box(b);
    const CellBuffer data = img.read(box);
    std::string out;
    const auto put = [&](uint64_t v, int bytes) {
      for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
    };
    put(0, 2);
    put(static_cast<uint64_t>(r), 2);
    for (int d = r - 1; d >= 0; --d) put(static_cast<uint64_t>(box.shape()[d]), 4);
    const auto* p = reinterpret_cast<const char*>(data.data());
    for (size_t i = 0; i < data.num_bytes(); i += elem)
      for (size_t k = elem; k-- > 0;)
        out.push_back(p[i + k]);  // big-endian (on a little-endian host)
    fs::path file = dir;
    for (int d = r - 1; d >= 0; --d) file /= std::to_string(b[d]);
    test::write_all(file, out);
  });
}

// ---- the table -----------------------------------------------------------------

const std::map<std::string, OpCase>& cases() {
  static const std::map<std::string, OpCase> table = [] {
    std::map<std::string, OpCase> t;
    // Sources.
    t["synthetic.blobs"] = {no_inputs(),
                            [](const Context& c) { return blobs_params(c.cells, "f32", 3); }};
    t["read.image"] = {
        no_inputs(),
        [](const Context& c) {
          return obj({{"path", (c.tmp / "a.nrrd").string()},
                      {"cell_shape", Value::list(c.cells.to_vector())}});
        },
        Compare::kValues,
        [](const Context& c) {
          return std::map<std::string, Value>{{"path", (c.tmp / "b.nrrd").string()},
                                              {"hash", "content"}};
        },
        [](const Context& c) {
          write_blobs(1, [&](CachedCellImage& img) { nodes::export_image(img, c.tmp / "a.nrrd"); });
          write_blobs(2, [&](CachedCellImage& img) { nodes::export_image(img, c.tmp / "b.nrrd"); });
        }};
    t["read.zarr"] = {
        no_inputs(),
        [](const Context& c) {
          return obj({{"path", (c.tmp / "a.zarr").string()},
                      {"cell_shape", Value::list(c.cells.to_vector())}});
        },
        Compare::kValues,
        [](const Context& c) {
          return std::map<std::string, Value>{{"path", (c.tmp / "b.zarr").string()},
                                              {"hash", "content"}};
        },
        [](const Context& c) {
          write_blobs(1, [&](CachedCellImage& img) { nodes::export_zarr(img, c.tmp / "a.zarr"); });
          write_blobs(2, [&](CachedCellImage& img) { nodes::export_zarr(img, c.tmp / "b.zarr"); });
        }};
    t["read.n5"] = {no_inputs(),
                    [](const Context& c) {
                      return obj({{"path", (c.tmp / "a.n5" / "s0").string()},
                                  {"cell_shape", Value::list(c.cells.to_vector())}});
                    },
                    Compare::kValues,
                    [](const Context& c) {
                      return std::map<std::string, Value>{
                          {"path", (c.tmp / "a.n5" / "s1").string()}, {"hash", "content"}};
                    },
                    [](const Context& c) {
                      write_blobs(1, [&](CachedCellImage& img) {
                        export_n5(img, c.tmp / "a.n5" / "s0", Shape{3, 7, 5});
                      });
                      write_blobs(2, [&](CachedCellImage& img) {
                        export_n5(img, c.tmp / "a.n5" / "s1", Shape{4, 4, 8});
                      });
                    }};
    // Point ops and conversions.
    t["threshold"] = {blobs(), params(obj({{"above", 0.5}}))};
    t["cast"] = {blobs("u16"), params(obj({{"dtype", "f32"}}))};
    t["rescale"] = {blobs(), params(obj({{"dtype", "u16"}}))};
    t["clip"] = {blobs(), params(obj({{"min", 0.2}, {"max", 0.8}}))};
    t["mask"] = {blobs_and_mask(), params(obj({{"value", 0.0}}))};
    for (const char* op : {"add", "subtract", "multiply", "divide"}) {
      t[op] = {two_blobs("f32"), params(obj({{"dtype", "f64"}}))};
    }
    // Neighbourhood filters.
    t["gaussian"] = {blobs(), params(obj({{"sigma", 1.5}, {"engine", "native"}})), Compare::kValues,
                     alternatives({{"engine", "itk"}})};
    t["gradient_magnitude"] = {blobs(), params(obj({{"sigma", 1.0}}))};
    t["log"] = {blobs(), params(obj({{"sigma", 1.0}}))};
    t["median"] = {blobs("u16"), params(obj({{"radius", 1}}))};
    t["mean"] = {blobs(), params(obj({{"radius", 2}}))};
    t["min"] = {blobs("u16"), params(obj({{"radius", 2}})), Compare::kValues,
                alternatives({{"shape", "box"}})};
    t["max"] = {blobs("u16"), params(obj({{"radius", 2}})), Compare::kValues,
                alternatives({{"shape", "box"}})};
    for (const char* op : {"erode", "dilate", "open", "close"})
      t[op] = {mask(), params(obj({{"radius", 1}}))};
    t["contrast.local"] = {blobs(), params(obj({{"radius", 3}}))};
    // Reductions and global ops.
    t["region.density"] = {mask(), params(obj({{"region", test::ints({4, 5, 6})}}))};
    t["downsample"] = {blobs(), params(obj({{"factors", 2}})), Compare::kValues,
                       alternatives({{"method", "max"}})};
    t["otsu"] = {blobs(), params(obj({{"bins", 64}}))};
    t["label"] = {mask(), params(obj({{"connectivity", "face"}})), Compare::kPartition,
                  alternatives({{"connectivity", "full"}})};
    t["region.count"] = {labels(false), params(obj({{"region", test::ints({4, 5, 6})}}))};
    t["label.stats"] = {labels(true), params(obj({}))};
    // The example plugin.
    t["example.invert"] = {blobs("u16"), params(obj({{"max", 60000}}))};
    return t;
  }();
  return table;
}

// ---- registry: built-ins and plugins -----------------------------------------------

struct RegistryState {
  std::vector<std::string> ops;
  std::string plugin_error;  // a plugin that failed to load
};

const RegistryState& registry_state() {
  static const RegistryState state = [] {
    RegistryState s;
    Registry& r = nodes::builtin_registry();
    try {
      plugins::load_plugin(CELLFLOW_EXAMPLE_PLUGIN, r);
      plugins::load_plugins_from_env(r);
    } catch (const std::exception& e) {
      s.plugin_error = e.what();
    }
    for (const auto& op : r.list()) s.ops.emplace_back(op->name());
    return s;
  }();
  return state;
}

// ---- helpers ---------------------------------------------------------------------

class Conformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_state().plugin_error.empty()) << registry_state().plugin_error;
    const auto it = cases().find(GetParam());
    ASSERT_NE(it, cases().end()) << "add conformance inputs for op " << GetParam()
                                 << " to the table in tests/conformance/conformance_test.cpp";
    case_ = &it->second;
    op_ = nodes::builtin_registry().find(GetParam());
    ASSERT_NE(op_, nullptr);
    if (case_->setup) case_->setup(Context{tmp_.path(), kShape});
  }

  /// The graph: the case's inputs, then the op as node "op".
  GraphDef graph_def(const Shape& cells, const Value* override_params = nullptr) const {
    const Context ctx{tmp_.path(), cells};
    GraphDef def;
    const std::vector<std::string> inputs = case_->inputs(def, ctx);
    def.add("op", GetParam(), inputs,
            override_params != nullptr ? *override_params : case_->params(ctx));
    def.outputs = {"op"};
    return def;
  }

  Graph build(const Shape& cells) const {
    return Graph::build(graph_def(cells), nodes::builtin_registry());
  }

  TempDir tmp_;
  const OpCase* case_ = nullptr;
  std::shared_ptr<const Op> op_;
};

/// The op's output, read whole: an image buffer, or a table.
struct Output {
  CellBuffer image;
  Table table;
};

Output read_output(const Graph& g) {
  Output out;
  const GraphNode& node = g.node("op");
  if (node.info.kind == OutputKind::kTable) {
    out.table = g.table("op");
  } else {
    auto img = g.image("op");
    out.image = img->read(img->grid().bounds());
  }
  return out;
}

template <class T>
::testing::AssertionResult close_values(const T* a, const T* b, int64_t n) {
  double scale = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isfinite(static_cast<double>(a[i])))
      scale = std::max(scale, std::abs(static_cast<double>(a[i])));
  }
  for (int64_t i = 0; i < n; ++i) {
    const auto x = static_cast<double>(a[i]);
    const auto y = static_cast<double>(b[i]);
    if (std::isnan(x) && std::isnan(y)) continue;
    if (x == y) continue;
    if (!(std::abs(x - y) <= kRelTol * (std::max(std::abs(x), std::abs(y)) + scale))) {
      return ::testing::AssertionFailure() << "voxel " << i << ": " << y << " vs whole-image " << x
                                           << " (image scale " << scale << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult same_values(const CellBuffer& ref, const CellBuffer& got) {
  if (ref.dtype() != got.dtype()) return ::testing::AssertionFailure() << "dtypes differ";
  if (!(ref.shape() == got.shape()))
    return ::testing::AssertionFailure()
           << "shapes differ: " << ref.shape().str() << " vs " << got.shape().str();
  if (!dtype_is_float(ref.dtype())) return test::same_bytes(ref, got);
  return dispatch_dtype(ref.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    return close_values<T>(ref.as<T>(), got.as<T>(), ref.num_elements());
  });
}

::testing::AssertionResult same_partition(const CellBuffer& ref, const CellBuffer& got) {
  if (!(ref.shape() == got.shape())) return ::testing::AssertionFailure() << "shapes differ";
  if (dtype_is_float(ref.dtype()) || dtype_is_float(got.dtype()))
    return ::testing::AssertionFailure() << "label images must have integer dtypes";
  const auto values = [](const CellBuffer& b) {
    return dispatch_dtype(b.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      std::vector<uint64_t> v(static_cast<size_t>(b.num_elements()));
      for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint64_t>(b.as<T>()[i]);
      return v;
    });
  };
  const std::vector<uint64_t> a = values(ref);
  const std::vector<uint64_t> b = values(got);
  std::unordered_map<uint64_t, uint64_t> ab;
  std::unordered_map<uint64_t, uint64_t> ba;
  for (size_t i = 0; i < a.size(); ++i) {
    if ((a[i] == 0) != (b[i] == 0))
      return ::testing::AssertionFailure() << "background differs at voxel " << i;
    const auto [ia, fresh_a] = ab.emplace(a[i], b[i]);
    const auto [ib, fresh_b] = ba.emplace(b[i], a[i]);
    if (ia->second != b[i] || ib->second != a[i]) {
      return ::testing::AssertionFailure() << "objects differ at voxel " << i << " (label " << b[i]
                                           << " vs whole-image label " << a[i] << ")";
    }
  }
  return ::testing::AssertionSuccess() << ab.size() - (ab.count(0) != 0 ? 1 : 0) << " objects";
}

::testing::AssertionResult same_rows(const Table& ref, const Table& got) {
  if (ref.columns() != got.columns()) return ::testing::AssertionFailure() << "columns differ";
  if (ref.num_rows() != got.num_rows())
    return ::testing::AssertionFailure()
           << got.num_rows() << " rows vs whole-image " << ref.num_rows();
  for (size_t r = 0; r < ref.num_rows(); ++r) {
    for (size_t c = 0; c < ref.num_columns(); ++c) {
      const double x = ref.at(r, c);
      const double y = got.at(r, c);
      if (x == y || (std::isnan(x) && std::isnan(y))) continue;
      if (!(std::abs(x - y) <= kRelTol * std::max(std::abs(x), std::abs(y)))) {
        return ::testing::AssertionFailure() << "row " << r << " column " << ref.columns()[c]
                                             << ": " << y << " vs whole-image " << x;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// ---- the checks ---------------------------------------------------------------------

TEST_P(Conformance, CellwiseEqualsWholeImage) {
  const Output whole = read_output(build(kShape));
  // Sample inputs that give a constant image or an empty table test nothing.
  if (whole.image) {
    const size_t size = dtype_size(whole.image.dtype());
    bool varies = false;
    for (int64_t i = 1; i < whole.image.num_elements() && !varies; ++i) {
      varies = std::memcmp(whole.image.data(), whole.image.data() + i * size, size) != 0;
    }
    EXPECT_TRUE(varies)
        << GetParam()
        << ": the sample inputs give a constant output; pick inputs that exercise the op";
  } else {
    EXPECT_GT(whole.table.num_rows(), 0u)
        << GetParam() << ": the sample inputs give an empty table";
  }
  for (const Shape& cells : kCellShapes) {
    const Output got = read_output(build(cells));
    if (whole.image) {
      if (case_->compare == Compare::kPartition) {
        EXPECT_TRUE(same_partition(whole.image, got.image))
            << GetParam() << " cells " << cells.str();
      } else {
        EXPECT_TRUE(same_values(whole.image, got.image)) << GetParam() << " cells " << cells.str();
      }
    } else {
      EXPECT_TRUE(same_rows(whole.table, got.table)) << GetParam() << " cells " << cells.str();
    }
  }
}

TEST_P(Conformance, DeterministicAcrossThreadCounts) {
  Output runs[2];
  for (int threads : {1, 2}) {
    // A fresh graph each time: node images are shared while a graph holds them.
    const Graph g = build(kThreadsCellShape);
    RunOptions options;
    options.threads = threads;
    materialize(g, {}, options);
    runs[threads - 1] = read_output(g);
  }
  if (runs[0].image) {
    EXPECT_TRUE(test::same_bytes(runs[0].image, runs[1].image)) << GetParam() << ": 1 vs 2 threads";
  } else {
    EXPECT_TRUE(runs[0].table == runs[1].table) << GetParam() << ": 1 vs 2 threads";
  }
}

TEST_P(Conformance, DeclaredOutputMatchesComputed) {
  for (const Shape& cells : {kShape, kCellShapes[1]}) {
    const Graph g = build(cells);
    const GraphNode& node = g.node("op");
    EXPECT_EQ(node.info.cell_shape.rank(), node.info.shape.rank());
    for (int d = 0; d < node.info.shape.rank(); ++d) {
      EXPECT_GE(node.info.cell_shape[d], 1) << "cell shape " << node.info.cell_shape.str();
    }
    if (node.info.kind == OutputKind::kTable) {
      const Table t = g.table("op");
      EXPECT_GT(t.num_columns(), 0u) << GetParam() << ": a table without columns";
      continue;
    }
    auto img = g.image("op");
    EXPECT_EQ(img->dtype(), node.info.dtype);
    EXPECT_EQ(img->grid().shape(), node.info.shape);
    EXPECT_EQ(img->grid().cell_shape(), node.info.cell_shape);
    const CellGrid& grid = img->grid();
    for (int64_t i = 0; i < grid.num_cells(); ++i) {
      const CellIndex cell = grid.cell_at(i);
      const CellBuffer b = img->get(cell);
      ASSERT_EQ(b.dtype(), node.info.dtype) << GetParam() << " cell " << cell.str();
      ASSERT_EQ(b.shape(), grid.cell_box(cell).shape()) << GetParam() << " cell " << cell.str();
    }
    const CellBuffer whole = img->read(grid.bounds());
    EXPECT_EQ(whole.shape(), node.info.shape);
  }
}

/// Other values a param could take, most plausible first.
std::vector<Value> perturbations(const Value& v, ParamType type) {
  std::vector<Value> out;
  const auto numbers = [&](double x) {
    for (double y : {x + 1, x * 2, x - 1, x * 0.5, x + 0.25, x * 1.5}) {
      if (y != x) out.emplace_back(y);
    }
  };
  const auto ints = [&](int64_t x) {
    for (int64_t y : {x + 1, x * 2, x - 1, x + 2}) {
      if (y != x) out.emplace_back(y);
    }
  };
  const auto first_of_list = [&](const Value& list, bool integer) {
    if (!list.is_array() || list.as_array().empty()) return;
    const Value::Array& a = list.as_array();
    const std::vector<Value> firsts =
        integer ? std::vector<Value>{a[0].as_int() + 1, a[0].as_int() + 2}
                : std::vector<Value>{a[0].as_double() + 0.5, a[0].as_double() * 1.5};
    for (const Value& f : firsts) {
      Value::Array b = a;
      b[0] = f;
      out.emplace_back(std::move(b));
    }
  };
  switch (type) {
    case ParamType::kBool:
      out.emplace_back(!v.as_bool());
      break;
    case ParamType::kInt:
      ints(v.as_int());
      break;
    case ParamType::kFloat:
      numbers(v.as_double());
      break;
    case ParamType::kString:
      break;  // only the table's alternatives
    case ParamType::kDType:
      for (const char* d : {"f32", "f64", "u16", "u8", "i32", "u32", "u64"}) {
        if (v.as_string() != d) out.emplace_back(d);
      }
      break;
    case ParamType::kIntList:
      first_of_list(v, true);
      break;
    case ParamType::kFloatList:
      first_of_list(v, false);
      break;
    case ParamType::kIntOrList:
      if (v.is_array())
        first_of_list(v, true);
      else
        ints(v.as_int());
      break;
    case ParamType::kFloatOrList:
      if (v.is_array())
        first_of_list(v, false);
      else
        numbers(v.as_double());
      break;
  }
  return out;
}

TEST_P(Conformance, EveryParamChangesTheHash) {
  const Context ctx{tmp_.path(), kShape};
  const Value base = case_->params(ctx);
  const std::string base_hash = build(kShape).node("op").hash;
  const std::map<std::string, Value> alts =
      case_->alternatives ? case_->alternatives(ctx) : std::map<std::string, Value>{};
  int checked = 0;
  for (const ParamSpec& spec : op_->params()) {
    const Value* sample = base.find(spec.name);
    const Value current = sample != nullptr ? *sample : spec.default_value;
    if (current.is_null()) continue;  // no value to change (optional without a default)
    std::vector<Value> candidates;
    if (auto it = alts.find(spec.name); it != alts.end()) candidates.push_back(it->second);
    for (Value& v : perturbations(current, spec.type)) candidates.push_back(std::move(v));
    bool changed = false;
    for (const Value& candidate : candidates) {
      Value p = base;
      p.set(spec.name, candidate);
      std::string hash;
      try {
        hash = Graph::build(graph_def(kShape, &p), nodes::builtin_registry()).node("op").hash;
      } catch (const Error&) {
        continue;  // not a valid value for this op: try the next
      }
      EXPECT_NE(hash, base_hash) << GetParam() << ": changing param \"" << spec.name << "\" from "
                                 << to_json_compact(current) << " to " << to_json_compact(candidate)
                                 << " left the hash unchanged";
      changed = true;
      break;
    }
    EXPECT_TRUE(changed) << GetParam() << ": no valid other value found for param \"" << spec.name
                         << "\"; add one to the case's alternatives in the conformance table";
    ++checked;
  }
  RecordProperty("params_checked", checked);
}

std::string test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Ops, Conformance, ::testing::ValuesIn(registry_state().ops), test_name);

TEST(ConformanceTable, HasNoEntriesForUnknownOps) {
  registry_state();  // loads the plugins
  for (const auto& [name, c] : cases()) {
    EXPECT_NE(nodes::builtin_registry().find(name), nullptr)
        << "the conformance table lists op " << name << ", which is not registered";
  }
}

}  // namespace
}  // namespace cellflow

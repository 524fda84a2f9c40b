// Registry (find, duplicates, sorted list) and validate_params / Params.
#include <gtest/gtest.h>

#include <string>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/op.hpp"
#include "cellflow/graph/registry.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "test_ops.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;

class NamedOp final : public Op {
 public:
  explicit NamedOp(std::string name) : name_(std::move(name)) {}
  std::string_view name() const override { return name_; }
  int version() const override { return 1; }
  std::string_view doc() const override { return ""; }
  std::vector<ParamSpec> params() const override { return {}; }
  int min_inputs() const override { return 0; }
  std::unique_ptr<NodeKernel> bind(const Params&, std::span<const ImageInfo>) const override {
    return nullptr;
  }

 private:
  std::string name_;
};

TEST(Registry, FindDuplicateAndSortedList) {
  Registry r;
  r.add(std::make_shared<NamedOp>("zeta"));
  r.add(std::make_shared<NamedOp>("alpha"));
  r.add(std::make_shared<NamedOp>("mid.op"));
  ASSERT_NE(r.find("alpha"), nullptr);
  EXPECT_EQ(r.find("alpha")->name(), "alpha");
  EXPECT_EQ(r.find("nope"), nullptr);
  EXPECT_EQ(r.find("Alpha"), nullptr);
  EXPECT_THROW(r.add(std::make_shared<NamedOp>("zeta")), InvalidArgument);
  try {
    r.add(std::make_shared<NamedOp>("mid.op"));
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("mid.op"), std::string::npos) << e.what();
  }
  EXPECT_THROW(r.add(nullptr), InvalidArgument);
  const auto list = r.list();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0]->name(), "alpha");
  EXPECT_EQ(list[1]->name(), "mid.op");
  EXPECT_EQ(list[2]->name(), "zeta");
}

// An op registered deferred (its code in a library loaded on demand) is made
// when first found or listed, once; a failure to make it is reported and
// tried again next time; its name is taken from the start.
TEST(Registry, DeferredOpsAreMadeOnFirstUse) {
  Registry r;
  int made = 0;
  bool fail = true;
  r.add_deferred("later", [&]() -> std::shared_ptr<const Op> {
    ++made;
    if (fail) throw Error("libsomething.so: cannot open");
    return std::make_shared<NamedOp>("later");
  });
  r.add(std::make_shared<NamedOp>("now"));
  EXPECT_EQ(made, 0) << "made before anyone asked";
  EXPECT_THROW(r.add(std::make_shared<NamedOp>("later")), InvalidArgument);
  EXPECT_THROW(r.add_deferred("now", [] { return std::make_shared<NamedOp>("now"); }),
               InvalidArgument);
  EXPECT_NE(r.find("now"), nullptr);
  EXPECT_EQ(made, 0);
  try {
    r.find("later");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("libsomething.so"), std::string::npos) << e.what();
  }
  fail = false;
  const auto op = r.find("later");
  ASSERT_NE(op, nullptr);
  EXPECT_EQ(op->name(), "later");
  EXPECT_EQ(r.find("later"), op);
  EXPECT_EQ(made, 2) << "made once it succeeded, not again";
  r.add_deferred("early", [&] {
    ++made;
    return std::make_shared<NamedOp>("early");
  });
  const auto list = r.list();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0]->name(), "early");
  EXPECT_EQ(made, 3);
  r.add_deferred("liar", [] { return std::make_shared<NamedOp>("other"); });
  EXPECT_THROW(r.find("liar"), Error);
}

TEST(Registry, BuiltinOps) {
  const auto list = nodes::builtin_registry().list();
  std::vector<std::string> names;
  for (const auto& op : list) names.emplace_back(op->name());
  for (const char* expected :
       {"cast", "gaussian", "label", "label.stats", "otsu", "read.image", "read.n5", "read.zarr",
        "region.density", "rescale", "synthetic.blobs", "threshold"})
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  // One registry for the process: an op added through one call (as a plugin
  // does) is found through the next.
  ASSERT_EQ(nodes::builtin_registry().find("test.registry_probe"), nullptr);
  nodes::builtin_registry().add(std::make_shared<NamedOp>("test.registry_probe"));
  EXPECT_NE(nodes::builtin_registry().find("test.registry_probe"), nullptr);
  // Registering the built-ins twice into one registry is refused.
  Registry r;
  nodes::register_builtin_ops(r);
  EXPECT_THROW(nodes::register_builtin_ops(r), InvalidArgument);
  // Every op documents every param.
  for (const auto& op : list) {
    EXPECT_FALSE(op->doc().empty()) << op->name();
    EXPECT_GE(op->version(), 1) << op->name();
    for (const auto& p : op->params()) EXPECT_FALSE(p.doc.empty()) << op->name() << "." << p.name;
  }
}

const std::vector<ParamSpec> kSpecs = {
    {"sigma", ParamType::kFloatOrList, Value(), "std dev", true},
    {"count", ParamType::kInt, Value(3), "how many"},
    {"scale", ParamType::kFloat, Value(1), "factor (integer default)"},
    {"name", ParamType::kString, Value(), "optional name"},
    {"flag", ParamType::kBool, Value(false), "a flag"},
    {"dtype", ParamType::kDType, Value("f32"), "type"},
    {"shape", ParamType::kIntList, Value(), "shape"},
    {"range", ParamType::kFloatList, Value(), "range"},
    {"region", ParamType::kIntOrList, Value(), "region"},
};

void expect_param_error(const Value& given, const std::string& param) {
  try {
    validate_params(kSpecs, given);
    ADD_FAILURE() << "accepted " << to_json_compact(given);
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("\"" + param + "\""), std::string::npos)
        << "the error should name \"" << param << "\": " << e.what();
  }
}

TEST(ValidateParams, FillsDefaultsAndNormalizes) {
  const Params p =
      validate_params(kSpecs, parse_json(R"({"sigma": 2, "dtype": "uint16", "region": 4.0})"));
  EXPECT_TRUE(p.get("sigma").is_float()) << "an int given for a float becomes a float";
  EXPECT_EQ(p.get_float("sigma"), 2.0);
  EXPECT_EQ(p.get_int("count"), 3);
  EXPECT_TRUE(p.get("scale").is_float());
  EXPECT_EQ(p.get_float("scale"), 1.0);
  EXPECT_FALSE(p.has("name"));
  EXPECT_EQ(p.get_bool("flag"), false);
  EXPECT_EQ(p.get_string("dtype"), "u16") << "dtype names are normalized";
  EXPECT_EQ(p.get_dtype("dtype"), DType::kU16);
  EXPECT_TRUE(p.get("region").is_int());
  EXPECT_EQ(p.get_ints_per_axis("region", 3), (std::vector<int64_t>{4, 4, 4}));
  EXPECT_EQ(p.get_floats_per_axis("sigma", 2), (std::vector<double>{2.0, 2.0}));
  EXPECT_THROW(p.get("name"), InvalidArgument);
  // The same params written differently validate to the same canonical value.
  const Params q = validate_params(
      kSpecs,
      parse_json(R"({"region": 4, "dtype": "u16", "sigma": 2.0, "count": 3, "flag": false})"));
  EXPECT_EQ(to_canonical_json(p.value()), to_canonical_json(q.value()));
}

TEST(ValidateParams, PathsAreTakenFromTheBaseDirThenTheCurrentDirectory) {
  const std::vector<ParamSpec> specs = {{"path", ParamType::kString, Value(), "a file", true}};
  test::TempDir tmp;
  test::write_all(tmp / "base" / "here.txt", "x");
  test::write_all(tmp / "elsewhere" / "there.txt", "x");
  const auto path = [&](const std::string& text, const fs::path& base) {
    return validate_params(specs, Value(Value::Object{{"path", text}}), base).get_path("path");
  };
  const fs::path base = tmp / "base";
  EXPECT_EQ(path("here.txt", base), base / "here.txt");
  EXPECT_EQ(path("./sub/../here.txt", base), base / "here.txt") << "lexically normal";
  // Absolute paths are taken as they are.
  EXPECT_EQ(path((tmp / "elsewhere" / "there.txt").string(), base),
            tmp / "elsewhere" / "there.txt");
  // Without a base dir: from the current directory, existing or not (the op says
  // what is wrong with the file).
  EXPECT_EQ(path("nothing.txt", {}), fs::current_path() / "nothing.txt");
  // Neither in the base dir nor from the current directory: the error names both
  // (tests/tools/cli_reader_paths_test.cpp runs the fallback to the current directory).
  try {
    path("nothing.txt", base);
    ADD_FAILURE() << "no error";
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("param \"path\": no file or folder \"nothing.txt\""), std::string::npos)
        << what;
    EXPECT_NE(what.find((base / "nothing.txt").string()), std::string::npos) << what;
    EXPECT_NE(what.find((fs::current_path() / "nothing.txt").string()), std::string::npos) << what;
  }
  EXPECT_THROW(path("", base), InvalidArgument);
  // The base dir is not part of the params (nor of the hash).
  EXPECT_EQ(validate_params(specs, Value(Value::Object{{"path", "a"}}), base).value(),
            validate_params(specs, Value(Value::Object{{"path", "a"}})).value());
}

TEST(ValidateParams, ListsAndPerAxisValues) {
  const Params p = validate_params(
      kSpecs,
      parse_json(
          R"({"sigma": [1, 2.5, 3], "shape": [4, 5.0], "range": [0, 1], "region": [2, 3]})"));
  EXPECT_EQ(p.get_floats("sigma"), (std::vector<double>{1.0, 2.5, 3.0}));
  for (const auto& x : p.get("sigma").as_array()) EXPECT_TRUE(x.is_float());
  EXPECT_EQ(p.get_ints("shape"), (std::vector<int64_t>{4, 5}));
  for (const auto& x : p.get("shape").as_array()) EXPECT_TRUE(x.is_int());
  EXPECT_EQ(p.get_floats("range"), (std::vector<double>{0.0, 1.0}));
  EXPECT_EQ(p.get_floats_per_axis("sigma", 3), (std::vector<double>{1.0, 2.5, 3.0}));
  EXPECT_THROW(p.get_floats_per_axis("sigma", 2), InvalidArgument);
  EXPECT_THROW(p.get_ints_per_axis("region", 3), InvalidArgument);
}

TEST(ValidateParams, ErrorsNameTheParam) {
  expect_param_error(parse_json(R"({"sigma": 1, "sigmaa": 2})"), "sigmaa");  // unknown
  expect_param_error(parse_json(R"({})"), "sigma");                          // missing required
  expect_param_error(parse_json(R"({"sigma": "big"})"), "sigma");            // ill-typed
  expect_param_error(parse_json(R"({"sigma": [1, "x"]})"), "sigma");
  expect_param_error(parse_json(R"({"sigma": true})"), "sigma");
  expect_param_error(parse_json(R"({"sigma": 1, "count": 2.5})"), "count");
  expect_param_error(parse_json(R"({"sigma": 1, "count": "3"})"), "count");
  expect_param_error(parse_json(R"({"sigma": 1, "flag": 1})"), "flag");
  expect_param_error(parse_json(R"({"sigma": 1, "dtype": "f16"})"), "dtype");
  expect_param_error(parse_json(R"({"sigma": 1, "name": 5})"), "name");
  expect_param_error(parse_json(R"({"sigma": 1, "shape": [1.5]})"), "shape");
  expect_param_error(parse_json(R"({"sigma": 1, "shape": 4})"), "shape");
  expect_param_error(parse_json(R"({"sigma": 1, "range": [0, "1"]})"), "range");
  expect_param_error(parse_json(R"({"sigma": 1, "region": [2, 2.5]})"), "region");
  EXPECT_THROW(validate_params(kSpecs, Value(3)), InvalidArgument);
}

TEST(ValidateParams, NullMeansNotGiven) {
  const Params p = validate_params(kSpecs, parse_json(R"({"sigma": 1, "count": null})"));
  EXPECT_EQ(p.get_int("count"), 3);
}

}  // namespace
}  // namespace cellflow

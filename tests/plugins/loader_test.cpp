// The plugin loader: the example plugin loads, its op runs in a graph and
// enters the node hash with its name and version; every way a plugin can fail
// to load is a PluginError naming the plugin (and the op, for a clash) that
// leaves the registry as it was; the CLI loads plugins from --plugin and
// $CELLFLOW_PLUGIN_PATH and exits with code 2 on a plugin error.
#include "cellflow/plugins/loader.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/plugins/plugin.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

const fs::path kExample = CELLFLOW_EXAMPLE_PLUGIN;
const fs::path kTestPlugins = CELLFLOW_TEST_PLUGIN_DIR;

fs::path test_plugin(const std::string& variant) {
  return kTestPlugins / ("libtest_plugin_" + variant + ".so");
}

/// A registry with the built-ins, private to one test.
std::unique_ptr<Registry> fresh_registry() {
  auto r = std::make_unique<Registry>();
  nodes::register_builtin_ops(*r);
  return r;
}

/// Expects load_plugin(path) to throw a PluginError containing every `parts`.
void expect_plugin_error(const fs::path& path, Registry& registry,
                         std::initializer_list<std::string> parts) {
  const size_t before = registry.list().size();
  try {
    plugins::load_plugin(path, registry);
    ADD_FAILURE() << "no error loading " << path;
  } catch (const PluginError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
    for (const std::string& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
  EXPECT_EQ(registry.list().size(), before) << "a failed load changed the registry";
}

GraphDef invert_graph(double max) {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {},
          Value(Value::Object{{"shape", test::ints({9, 14, 11})},
                              {"cell_shape", test::ints({4, 5, 6})},
                              {"dtype", "u16"},
                              {"seed", 3},
                              {"count", 5}}));
  def.add("inv", "example.invert", {"raw"}, Value(Value::Object{{"max", max}}));
  return def;
}

TEST(PluginLoader, ExamplePluginRunsInAGraph) {
  auto registry = fresh_registry();
  const plugins::PluginInfo info = plugins::load_plugin(kExample, *registry);
  EXPECT_EQ(info.ops, std::vector<std::string>{"example.invert"});
  EXPECT_EQ(info.path, fs::canonical(kExample));
  ASSERT_NE(registry->find("example.invert"), nullptr);
  // Loading it again is a no-op.
  EXPECT_EQ(plugins::load_plugin(kExample, *registry).ops, info.ops);

  const Graph g = Graph::build(invert_graph(60000), *registry);
  const CellBuffer raw = g.image("raw")->read(Box::from_shape(Shape{9, 14, 11}));
  const CellBuffer inv = g.image("inv")->read(Box::from_shape(Shape{9, 14, 11}));
  ASSERT_EQ(inv.dtype(), DType::kU16);
  for (int64_t i = 0; i < raw.num_elements(); ++i) {
    const int expected = std::max(0, 60000 - static_cast<int>(raw.as<uint16_t>()[i]));
    ASSERT_EQ(inv.as<uint16_t>()[i], expected) << i;
  }

  // The op's name and version enter the hash like a built-in's; so do its params.
  const GraphNode& node = g.node("inv");
  EXPECT_EQ(node.hash, node_hash("example.invert", 1, Value(Value::Object{{"max", 60000.0}}),
                                 node.info, {g.node("raw").hash}));
  EXPECT_NE(Graph::build(invert_graph(50000), *registry).node("inv").hash, node.hash);
}

TEST(PluginLoader, EachFailureIsAClearError) {
  auto registry = fresh_registry();
  TempDir tmp;
  expect_plugin_error(tmp / "absent.so", *registry, {"no such file"});
  test::write_all(tmp / "fake.so", "not an ELF file\n");
  expect_plugin_error(tmp / "fake.so", *registry, {"cannot load it as a shared library"});
  expect_plugin_error(tmp.path(), *registry, {"is a folder"});
  expect_plugin_error(test_plugin("no_entry"), *registry,
                      {"not a cellflow plugin", "cellflow_plugin_register"});
  expect_plugin_error(test_plugin("abi_symbol"), *registry, {"ABI mismatch", "ABI 999", "rebuild"});
  expect_plugin_error(
      test_plugin("abi_tag"), *registry,
      {"ABI mismatch", "other cellflow headers", "0123456789abcdef", plugins::kAbiTag});
  expect_plugin_error(test_plugin("abi_entry"), *registry, {"ABI mismatch", "ABI 998"});
  expect_plugin_error(test_plugin("throws"), *registry,
                      {"registering its ops failed", "the plugin's own failure"});
  expect_plugin_error(test_plugin("empty"), *registry, {"registered no ops"});
  expect_plugin_error(test_plugin("clash_builtin"), *registry,
                      {"name clash", "op \"gaussian\"", "built-in"});

  // A clash with another plugin names that plugin, and nothing of the
  // clashing plugin is registered (its other op included).
  plugins::load_plugin(kExample, *registry);
  expect_plugin_error(test_plugin("two_ops_one_clash"), *registry,
                      {"name clash", "op \"example.invert\"", fs::canonical(kExample).string()});
  EXPECT_EQ(registry->find("test.fresh"), nullptr);
}

TEST(PluginLoader, SearchListOfFilesAndFolders) {
  TempDir tmp;
  fs::copy_file(kExample, tmp / "b.so");
  test::write_all(tmp / "a.so", "x");
  test::write_all(tmp / "notes.txt", "x");
  const auto files =
      plugins::plugin_files("::" + (tmp / "a.so").string() + ":" + tmp.path().string() + ":");
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0], tmp / "a.so");
  EXPECT_EQ(files[1], tmp / "a.so");
  EXPECT_EQ(files[2], tmp / "b.so");
  try {
    plugins::plugin_files((tmp / "missing").string());
    ADD_FAILURE();
  } catch (const PluginError& e) {
    EXPECT_NE(std::string(e.what()).find("CELLFLOW_PLUGIN_PATH"), std::string::npos) << e.what();
  }
}

const char* kCliGraph = R"({
  "cellflow": 1,
  "name": "plugin_cli",
  "nodes": [
    {"id": "raw", "op": "synthetic.blobs",
     "params": {"shape": [6, 7, 8], "cell_shape": [4, 4, 4], "dtype": "u8", "seed": 2, "count": 3}},
    {"id": "inv", "op": "example.invert", "inputs": ["raw"], "params": {"max": 200}}
  ]
}
)";

TEST(PluginCli, PluginFlagAndEnvironmentVariable) {
  TempDir tmp;
  const fs::path graph = tmp / "g.json";
  test::write_all(graph, kCliGraph);
  const std::string cache = (tmp / "cache").string();

  // Without the plugin the graph is invalid (exit 2), naming the op.
  test::CommandResult r =
      test::run_cli({"run", graph.string(), "--cache", cache, "--quiet"}, tmp.path());
  EXPECT_EQ(r.exit_code, 2) << test::describe(r);
  EXPECT_NE(r.err.find("example.invert"), std::string::npos) << test::describe(r);

  r = test::run_cli(
      {"run", graph.string(), "--cache", cache, "--quiet", "--plugin", kExample.string()},
      tmp.path());
  EXPECT_EQ(r.exit_code, 0) << test::describe(r);
  r = test::run_cli({"graph", graph.string(), "--hashes", "--plugin", kExample.string()},
                    tmp.path());
  EXPECT_EQ(r.exit_code, 0) << test::describe(r);
  EXPECT_NE(r.out.find("inv "), std::string::npos) << test::describe(r);
  r = test::run_cli({"ops", "--json", "--plugin", kExample.string()}, tmp.path());
  EXPECT_NE(r.out.find("\"example.invert\""), std::string::npos) << test::describe(r);

  // $CELLFLOW_PLUGIN_PATH, as a folder holding the plugin.
  fs::create_directories(tmp / "plugins");
  fs::copy_file(kExample, tmp / "plugins" / "libcellflow_example.so");
  r = test::run_command(
      {"env", "CELLFLOW_PLUGIN_PATH=" + (tmp / "plugins").string(), CELLFLOW_CLI, "export",
       graph.string(), "inv", "--to", (tmp / "inv.nrrd").string(), "--cache", cache},
      tmp.path());
  EXPECT_EQ(r.exit_code, 0) << test::describe(r);
  EXPECT_TRUE(fs::exists(tmp / "inv.nrrd"));

  // A bad plugin is exit code 2 with the reason, on every command.
  for (const std::string cmd : {"run", "graph", "ops"}) {
    std::vector<std::string> args{cmd};
    if (cmd != "ops") args.push_back(graph.string());
    if (cmd == "graph") args.push_back("--hashes");
    args.insert(args.end(), {"--plugin", test_plugin("no_entry").string()});
    r = test::run_cli(args, tmp.path());
    EXPECT_EQ(r.exit_code, 2) << cmd << ": " << test::describe(r);
    EXPECT_NE(r.err.find("not a cellflow plugin"), std::string::npos) << test::describe(r);
  }
  r = test::run_command(
      {"env", "CELLFLOW_PLUGIN_PATH=" + (tmp / "nowhere").string(), CELLFLOW_CLI, "ops"},
      tmp.path());
  EXPECT_EQ(r.exit_code, 2) << test::describe(r);
}

}  // namespace
}  // namespace cellflow

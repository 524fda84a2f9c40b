// How the CLI names and describes nodes: `cache show` by a unique hash prefix
// or by GRAPH.json NODE_ID (ambiguous and unknown prefixes are errors that
// say what is there), table nodes described as tables (columns, rows) in
// `cache ls`, `cache show`, `graph --dot` and the run summaries, and ids with
// control characters escaped in all of them and in `cache gc` and `replay`
// (the DOT staying valid).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <set>
#include <sstream>

#include "tools/cli_common.hpp"

namespace cellflow::test {
namespace {

std::map<std::string, std::string> hashes_of(const fs::path& graph, const TempDir& tmp) {
  const CommandResult h = run_cli({"graph", graph.string(), "--hashes"}, tmp.path());
  EXPECT_EQ(h.exit_code, 0) << describe(h);
  return parse_hashes(h.out);
}

/// `text` with control bytes shown as <XX>, for failure messages (never raw).
std::string visible(const std::string& text) {
  std::string out;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\n') || c == 0x7f) {
      out += fmt::format("<{:02x}>", c);
    } else {
      out += ch;
    }
  }
  return out;
}

/// True when `text` holds a control byte other than newline.
bool has_raw_control(const std::string& text) {
  return std::any_of(text.begin(), text.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return (c < 0x20 && c != '\n') || c == 0x7f;
  });
}

class CliShowTest : public ExampleRunTest {
 protected:
  CommandResult show(std::vector<std::string> args) {
    args.insert(args.begin(), {"cache", "show", "--cache", cache_.string()});
    return run_cli(args, tmp_.path());
  }
};

TEST_F(CliShowTest, AUniquePrefixShowsTheNode) {
  const std::string smooth = hashes_.at("smooth");
  const CommandResult full = show({smooth});
  ASSERT_EQ(full.exit_code, 0) << describe(full);
  // The shortest prefix no other hash of the cache shares.
  size_t n = 1;
  for (const auto& [id, h] : hashes_)
    while (id != "smooth" && n < 32 && h.starts_with(smooth.substr(0, n))) ++n;
  const CommandResult prefix = show({smooth.substr(0, n)});
  ASSERT_EQ(prefix.exit_code, 0) << describe(prefix);
  EXPECT_EQ(prefix.out, full.out);
}

TEST_F(CliShowTest, AnAmbiguousPrefixListsTheCandidates) {
  // A second node folder sharing the first 5 characters of smooth's hash.
  const std::string smooth = hashes_.at("smooth");
  std::string other = smooth;
  other[5] = smooth[5] == '0' ? '1' : '0';
  fs::copy(cache_ / smooth, cache_ / other, fs::copy_options::recursive);
  const CommandResult r = show({smooth.substr(0, 5)});
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("ambiguous"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(smooth), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(other), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
  // One more character decides.
  const CommandResult one = show({smooth.substr(0, 6)});
  EXPECT_EQ(one.exit_code, 0) << describe(one);
  EXPECT_NE(one.out.find("node " + smooth), std::string::npos) << one.out;
}

TEST_F(CliShowTest, AnUnknownPrefixSaysSoAndNamesTheNearest) {
  const std::string smooth = hashes_.at("smooth");
  // smooth's first 4 characters, then one that no hash has there.
  std::string prefix;
  for (const char c : std::string("0123456789abcdef")) {
    prefix = smooth.substr(0, 4) + c;
    if (std::none_of(hashes_.begin(), hashes_.end(),
                     [&](const auto& kv) { return kv.second.starts_with(prefix); }))
      break;
  }
  const CommandResult r = show({prefix});
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("starting with \"" + prefix + "\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("did you mean \"" + smooth + "\""), std::string::npos) << r.err;
}

TEST_F(CliShowTest, GraphAndNodeIdShowTheNodeOrSayItIsNotCached) {
  const CommandResult by_id = show({graph_.string(), "mask"});
  ASSERT_EQ(by_id.exit_code, 0) << describe(by_id);
  EXPECT_NE(by_id.out.find("node " + hashes_.at("mask") + " (id \"mask\""), std::string::npos)
      << by_id.out;
  EXPECT_EQ(by_id.out, show({hashes_.at("mask")}).out);

  const CommandResult typo = show({graph_.string(), "msk"});
  EXPECT_EQ(typo.exit_code, 2) << describe(typo);
  EXPECT_NE(typo.err.find("did you mean \"mask\""), std::string::npos) << typo.err;

  // A node of the graph that no run computed: said in words, exit 1.
  const fs::path bigger =
      write_graph(tmp_, "bigger.json",
                  example_graph_json(0.5, 5,
                                     R"(, {"id": "more", "op": "threshold", "inputs": ["smooth"],
                               "params": {"above": 0.75}})"));
  const std::string more = hashes_of(bigger, tmp_).at("more");
  const CommandResult missing = show({bigger.string(), "more"});
  EXPECT_EQ(missing.exit_code, 1) << describe(missing);
  EXPECT_NE(missing.err.find("node \"more\""), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find(more), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("is not in the cache"), std::string::npos) << missing.err;
  EXPECT_EQ(missing.out, "");

  // A graph file alone: the node id is missing, said so.
  const CommandResult alone = show({graph_.string()});
  EXPECT_EQ(alone.exit_code, 2) << describe(alone);
  EXPECT_NE(alone.err.find("NODE_ID"), std::string::npos) << alone.err;
}

// blobs -> threshold -> label -> label.stats: one table node.
std::string table_graph_json(const std::string& raw_id) {
  return R"({"cellflow": 1, "nodes": [
  {"id": ")" +
         raw_id +
         R"(", "op": "synthetic.blobs",
   "params": {"shape": [32, 32, 32], "cell_shape": [16, 16, 16], "dtype": "f32", "seed": 3,
              "count": 10}},
  {"id": "mask", "op": "threshold", "inputs": [")" +
         raw_id + R"("], "params": {"above": 0.5}},
  {"id": "lab", "op": "label", "inputs": ["mask"]},
  {"id": "stats", "op": "label.stats", "inputs": ["lab"]}
], "outputs": ["stats"]}
)";
}

/// The line of `text` that contains `needle` ("" if none).
std::string line_with(const std::string& text, const std::string& needle) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.find(needle) != std::string::npos) return line;
  return "";
}

TEST(CliDescribe, TableNodesAreDescribedAsTables) {
  TempDir tmp;
  const std::string json = table_graph_json("raw");
  const fs::path g = write_graph(tmp, "g.json", json);
  const fs::path cache = tmp / "cache";
  const fs::path summary = tmp / "summary.json";
  const CommandResult run =
      run_cli({"run", g.string(), "--cache", cache.string(), "--summary-json", summary.string()},
              tmp.path());
  ASSERT_EQ(run.exit_code, 0) << describe(run);

  // The reference: distinct non-zero labels of the label image, counted here.
  const Graph graph = build_graph(json, cache);
  const CellBuffer labels = read_whole(graph, "lab");
  std::set<double> distinct;
  for (const double v : to_doubles(labels))
    if (v != 0) distinct.insert(v);
  ASSERT_GT(distinct.size(), 1u);
  const std::string stats = graph.node("stats").hash;

  // Run summary: the table line, and the JSON.
  const std::string row = line_with(run.out, stats);
  EXPECT_NE(row.find(fmt::format("table, 11 columns, {} rows", distinct.size())), std::string::npos)
      << run.out;
  EXPECT_EQ(row.find("u8"), std::string::npos) << row;
  const Summary s = read_summary(summary);
  EXPECT_EQ(s.str("stats", "kind"), "table");
  EXPECT_EQ(s.get("stats", "rows"), static_cast<int64_t>(distinct.size()));
  EXPECT_EQ(s.nodes.at("stats").find("columns")->as_array().size(), 11u);
  EXPECT_EQ(s.str("lab", "kind"), "image");

  // cache ls: "table" and its columns where an image has dtype and shape.
  const CommandResult ls = run_cli({"cache", "ls", "--cache", cache.string()}, tmp.path());
  ASSERT_EQ(ls.exit_code, 0) << describe(ls);
  const std::string ls_line = line_with(ls.out, stats);
  EXPECT_NE(ls_line.find(" table "), std::string::npos) << ls_line;
  EXPECT_NE(ls_line.find("11 cols"), std::string::npos) << ls_line;
  EXPECT_EQ(ls_line.find(" u8 "), std::string::npos) << ls_line;
  EXPECT_EQ(ls_line.find("32x32x32"), std::string::npos) << ls_line;
  const CommandResult ls_json =
      run_cli({"cache", "ls", "--cache", cache.string(), "--json"}, tmp.path());
  ASSERT_EQ(ls_json.exit_code, 0) << describe(ls_json);
  const Value listing = parse_json(ls_json.out, "ls --json");
  bool listed = false;
  for (const Value& n : listing.find("nodes")->as_array()) {
    if (n.find("hash")->as_string() != stats) continue;
    listed = true;
    EXPECT_EQ(n.find("kind")->as_string(), "table");
    EXPECT_EQ(n.find("columns")->as_array().size(), 11u);
    // Rows as stored: an object that spans cells has a part row in each.
    EXPECT_GE(n.find("rows_stored")->as_int(), static_cast<int64_t>(distinct.size()));
  }
  EXPECT_TRUE(listed) << ls_json.out;

  // cache show: the columns by name.
  const CommandResult show =
      run_cli({"cache", "show", "--cache", cache.string(), stats}, tmp.path());
  ASSERT_EQ(show.exit_code, 0) << describe(show);
  const std::string output = line_with(show.out, "  output ");
  EXPECT_NE(output.find("table, 11 columns (label, voxel_count,"), std::string::npos) << output;
  EXPECT_EQ(output.find("u8"), std::string::npos) << output;

  // graph --dot: the node's label says table.
  const CommandResult dot = run_cli({"graph", g.string(), "--dot"}, tmp.path());
  ASSERT_EQ(dot.exit_code, 0) << describe(dot);
  const std::string label = line_with(dot.out, "label.stats");
  EXPECT_NE(label.find("table, 11 columns"), std::string::npos) << label;
  EXPECT_EQ(label.find("u8"), std::string::npos) << label;
}

TEST(CliDescribe, ControlCharactersAreEscapedInCacheListingsAndDot) {
  TempDir tmp;
  // JSON escapes: ESC [ 2 J (clear screen), a newline, a quote and a backslash.
  const std::string id = R"(raw\u001b[2J\nline2\"q\\b)";
  const std::string json = table_graph_json(id);
  const fs::path g = write_graph(tmp, "g.json", json);
  const fs::path cache = tmp / "cache";
  const CommandResult run = run_cli({"run", g.string(), "--cache", cache.string()}, tmp.path());
  ASSERT_EQ(run.exit_code, 0) << visible(describe(run));
  EXPECT_FALSE(has_raw_control(run.out)) << visible(run.out);
  const std::string raw = build_graph(json, std::nullopt).node("raw\x1b[2J\nline2\"q\\b").hash;

  for (const auto& args :
       {std::vector<std::string>{"cache", "ls", "--cache", cache.string()},
        std::vector<std::string>{"cache", "show", "--cache", cache.string(), raw, "--tree"},
        std::vector<std::string>{"cache", "show", "--cache", cache.string(), g.string(), "mask",
                                 "--tree"},
        std::vector<std::string>{"cache", "gc", "--cache", cache.string(), "--max-size", "0",
                                 "--dry-run"},
        std::vector<std::string>{"replay", "--cache", cache.string(), raw},
        std::vector<std::string>{"graph", g.string(), "--dot"},
        std::vector<std::string>{"graph", g.string(), "--dot", "--cache", cache.string()}}) {
    const CommandResult r = run_cli(args, tmp.path());
    ASSERT_EQ(r.exit_code, 0) << args[1] << "\n" << visible(describe(r));
    EXPECT_FALSE(has_raw_control(r.out)) << args[1] << "\n" << visible(r.out);
    EXPECT_NE(r.out.find("\\x1b[2J"), std::string::npos) << args[1] << "\n" << visible(r.out);
    EXPECT_EQ(r.out.find("\nline2"), std::string::npos) << "a newline in an id starts no line\n"
                                                        << visible(r.out);
  }

  // DOT stays valid: one statement per line, every quote inside a label escaped.
  const CommandResult dot = run_cli({"graph", g.string(), "--dot"}, tmp.path());
  const std::regex statement(R"re(digraph G \{|\}|\d+->\d+ ;|\d+\[label="([^"\\]|\\.)*"\];)re");
  std::istringstream lines(dot.out);
  int statements = 0;
  for (std::string line; std::getline(lines, line); ++statements)
    EXPECT_TRUE(std::regex_match(line, statement)) << visible(line);
  EXPECT_EQ(statements, 2 + 4 + 3) << visible(dot.out);
}

}  // namespace
}  // namespace cellflow::test

// Tests of the provenance commands of the CLI (tools/cellflow/provenance_commands.cpp):
// graph --from-cache reproduces the hashes, cache show describes a node and
// its inputs, replay restores deleted cells byte for byte, a missing upstream
// definition exits 2 naming the hash, and --strict-code changes every hash.
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>

#include "tools/cli_common.hpp"

namespace cellflow::test {
namespace {

using CliProvenanceTest = ExampleRunTest;

TEST_F(CliProvenanceTest, GraphFromCacheReproducesTheHashes) {
  const fs::path out = tmp_ / "rebuilt.json";
  const CommandResult r = run_cli(
      {"graph", "--from-cache", cache_.string(), hashes_.at("density"), "--out", out.string()},
      tmp_.path());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const CommandResult h = run_cli({"graph", out.string(), "--hashes"}, tmp_.path());
  ASSERT_EQ(h.exit_code, 0) << describe(h);
  EXPECT_EQ(parse_hashes(h.out), hashes_);
  // To stdout without --out; an upstream node gives its own cone only.
  const CommandResult s =
      run_cli({"graph", "--from-cache", cache_.string(), hashes_.at("smooth")}, tmp_.path());
  ASSERT_EQ(s.exit_code, 0) << describe(s);
  const GraphDef def = parse_graph(s.out, "stdout");
  ASSERT_EQ(def.nodes.size(), 2u);
  EXPECT_EQ(def.outputs, std::vector<std::string>{"smooth"});
}

TEST_F(CliProvenanceTest, CacheShowDescribesANodeAndItsInputs) {
  const std::string smooth = hashes_.at("smooth");
  const CommandResult r =
      run_cli({"cache", "show", "--cache", cache_.string(), smooth}, tmp_.path());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("id \"smooth\", op gaussian version 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"sigma\":1.5"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("f32 40x48x56, cells 16x16x16"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("complete (36/36 cells)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("raw " + hashes_.at("raw") + " synthetic.blobs complete"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("artifacts  none"), std::string::npos) << r.out;

  // --tree follows the inputs to the sources.
  const CommandResult t = run_cli(
      {"cache", "show", "--cache", cache_.string(), hashes_.at("density"), "--tree"}, tmp_.path());
  ASSERT_EQ(t.exit_code, 0) << describe(t);
  for (const char* id : {"mask", "smooth", "raw"})
    EXPECT_NE(t.out.find(std::string(id) + " " + hashes_.at(id)), std::string::npos) << id << "\n"
                                                                                     << t.out;

  fs::remove(cache_ / smooth / "0" / "1" / "1" / "1");
  const CommandResult p =
      run_cli({"cache", "show", "--cache", cache_.string(), smooth}, tmp_.path());
  EXPECT_NE(p.out.find("partial (35/36 cells)"), std::string::npos) << p.out;

  const CommandResult bad =
      run_cli({"cache", "show", "--cache", cache_.string(), std::string(32, 'c')}, tmp_.path());
  EXPECT_EQ(bad.exit_code, 2) << describe(bad);
  const CommandResult junk =
      run_cli({"cache", "show", "--cache", cache_.string(), "zz"}, tmp_.path());
  EXPECT_EQ(junk.exit_code, 2) << describe(junk);
}

TEST_F(CliProvenanceTest, ReplayRestoresDeletedCellsByteForByte) {
  const std::string mask = hashes_.at("mask");
  const auto before = snapshot(cache_ / mask / "0");
  for (const char* cell : {"0/0/0", "2/2/3", "1/1/2"})
    ASSERT_TRUE(fs::remove(cache_ / mask / "0" / cell)) << cell;
  const CommandResult r = run_cli({"replay", "--cache", cache_.string(), mask}, tmp_.path());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("replayed " + mask + " mask: 3 computed"), std::string::npos) << r.out;
  EXPECT_TRUE(snapshot(cache_ / mask / "0") == before)
      << "replayed cells differ from the originals";
  // Nothing missing: nothing computed.
  const CommandResult again = run_cli({"replay", "--cache", cache_.string(), mask}, tmp_.path());
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_NE(again.out.find("mask: 0 computed"), std::string::npos) << again.out;
}

TEST_F(CliProvenanceTest, AMissingUpstreamDefinitionExits2NamingItsHash) {
  const std::string raw = hashes_.at("raw");
  fs::rename(cache_ / raw / ".zattrs", cache_ / raw / "zattrs.away");
  for (const auto& args :
       {std::vector<std::string>{"replay", "--cache", cache_.string(), hashes_.at("mask")},
        std::vector<std::string>{"graph", "--from-cache", cache_.string(),
                                 hashes_.at("density")}}) {
    const CommandResult r = run_cli(args, tmp_.path());
    EXPECT_EQ(r.exit_code, 2) << describe(r);
    EXPECT_NE(r.err.find("node " + raw + " has no stored definition"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  }
}

TEST_F(CliProvenanceTest, StrictCodeChangesEveryHash) {
  const CommandResult h =
      run_cli({"graph", graph_.string(), "--hashes", "--strict-code"}, tmp_.path());
  ASSERT_EQ(h.exit_code, 0) << describe(h);
  const auto strict = parse_hashes(h.out);
  ASSERT_EQ(strict.size(), hashes_.size());
  for (const auto& [id, hash] : strict) EXPECT_NE(hash, hashes_.at(id)) << id;
  const CommandResult again =
      run_cli({"graph", graph_.string(), "--hashes", "--strict-code"}, tmp_.path());
  EXPECT_EQ(parse_hashes(again.out), strict) << "strict hashes are stable for one build";

  const CommandResult run = run_cli(
      {"run", graph_.string(), "--cache", cache_.string(), "-q", "--strict-code"}, tmp_.path());
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  const CommandResult show =
      run_cli({"cache", "show", "--cache", cache_.string(), strict.at("smooth")}, tmp_.path());
  ASSERT_EQ(show.exit_code, 0) << describe(show);
  EXPECT_NE(show.out.find("code       libcellflow_nodes"), std::string::npos) << show.out;
  // A strict cache rebuilds to the strict hashes.
  const fs::path out = tmp_ / "strict.json";
  const CommandResult g = run_cli(
      {"graph", "--from-cache", cache_.string(), strict.at("density"), "--out", out.string()},
      tmp_.path());
  ASSERT_EQ(g.exit_code, 0) << describe(g);
  EXPECT_NE(g.err.find("--strict-code"), std::string::npos) << g.err;
  const CommandResult gh =
      run_cli({"graph", out.string(), "--hashes", "--strict-code"}, tmp_.path());
  EXPECT_EQ(parse_hashes(gh.out), strict);
}

}  // namespace
}  // namespace cellflow::test

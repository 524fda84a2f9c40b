// Hostile inputs through the real CLI (issue 13): truncated files, numbers
// that overflow, unwritable output streams, FIFOs where files belong, control
// characters, and exports that must be all or nothing.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "fault_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

/// A graph of one synthetic image (u16, 24 x 40 x 48 in 8 x 16 x 16 cells).
std::string synthetic_graph() {
  return R"({"cellflow": 1, "nodes": [
  {"id": "raw", "op": "synthetic.blobs",
   "params": {"shape": [24, 40, 48], "cell_shape": [8, 16, 16], "dtype": "u16", "seed": 9}}
], "outputs": ["raw"]}
)";
}

/// A graph reading `file` (cells of 8 x 16 x 16) and smoothing it.
std::string read_graph(const fs::path& file) {
  return R"({"cellflow": 1, "nodes": [
  {"id": "img", "op": "read.image", "params": {"path": )" +
         to_json_compact(Value(file.string())) + R"(, "cell_shape": [8, 16, 16]}},
  {"id": "smooth", "op": "gaussian", "inputs": ["img"], "params": {"sigma": 1}}
], "outputs": ["smooth"]}
)";
}

/// Exports the synthetic image to `to`; returns true on success.
bool export_synthetic(const TempDir& tmp, const fs::path& to) {
  const fs::path g = write_graph(tmp, "synthetic.json", synthetic_graph());
  const CommandResult r = run_cli(
      {"export", g.string(), "raw", "--to", to.string(), "--cache", (tmp / "src-cache").string()},
      tmp.path());
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  return r.exit_code == 0;
}

/// Files under `cache` that belong to a node (anything in a sub-folder).
std::vector<std::string> node_entries(const fs::path& cache) {
  std::vector<std::string> out;
  for (const auto& [rel, bytes] : snapshot(cache)) {
    if (rel.find('/') != std::string::npos) out.push_back(rel);
  }
  return out;
}

void expect_refused_whole(const TempDir& tmp, const fs::path& image, const fs::path& named) {
  SCOPED_TRACE(image.string());
  const fs::path g = write_graph(tmp, "read.json", read_graph(image));
  const fs::path cache = tmp / ("cache-" + image.filename().string());
  const CommandResult r =
      run_cli({"run", g.string(), "--cache", cache.string(), "--quiet"}, tmp.path());
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(named.string()), std::string::npos) << "should name the file: " << r.err;
  EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;
  EXPECT_EQ(node_entries(cache), std::vector<std::string>{}) << "nothing cached for the node";
}

TEST(CliHostile, TruncatedImageFilesFailNamingTheFile) {
  TempDir tmp;
  for (const char* ext : {".mha", ".tif", ".nrrd"}) {
    const fs::path file = tmp / (std::string("img") + ext);
    ASSERT_TRUE(export_synthetic(tmp, file));
    // The whole file reads; the same file cut short does not.
    const fs::path g = write_graph(tmp, "whole.json", read_graph(file));
    const CommandResult ok = run_cli(
        {"run", g.string(), "--cache", (tmp / "whole-cache").string(), "--quiet"}, tmp.path());
    ASSERT_EQ(ok.exit_code, 0) << describe(ok);
    fs::resize_file(file, fs::file_size(file) * 3 / 4);
    expect_refused_whole(tmp, file, file);
  }
}

TEST(CliHostile, MetaImageWithShortDataFileFails) {
  TempDir tmp;
  const fs::path mha = tmp / "img.mha";
  ASSERT_TRUE(export_synthetic(tmp, mha));
  // A detached header (.mhd) pointing at a data file one row short.
  const std::string text = read_all(mha);
  const size_t at = text.find("ElementDataFile = LOCAL\n");
  ASSERT_NE(at, std::string::npos) << text.substr(0, 400);
  const size_t data_at = at + std::string("ElementDataFile = LOCAL\n").size();
  write_all(tmp / "img.mhd", text.substr(0, at) + "ElementDataFile = img-data.raw\n");
  write_all(tmp / "img-data.raw", text.substr(data_at, text.size() - data_at - 48 * 2));
  expect_refused_whole(tmp, tmp / "img.mhd", tmp / "img-data.raw");
}

/// A Zarr v2 array (u8, 4 x 8 in 4 x 4 chunks, uncompressed or zlib).
void write_zarr(const fs::path& dir, const std::string& compressor) {
  write_all(dir / ".zarray", R"({"zarr_format": 2, "shape": [4, 8], "chunks": [4, 4],
    "dtype": "|u1", "compressor": )" +
                                 compressor +
                                 R"(, "fill_value": 0, "order": "C", "filters": null})");
}

/// A graph reading the Zarr array at `dir`.
std::string read_zarr_graph(const fs::path& dir) {
  return R"({"cellflow": 1, "nodes": [
    {"id": "z", "op": "read.zarr", "params": {"path": )" +
         to_json_compact(Value(dir.string())) + "}}]}";
}

TEST(CliHostile, TruncatedZarrChunkFails) {
  TempDir tmp;
  const fs::path arr = tmp / "a.zarr";
  write_zarr(arr, "null");
  write_all(arr / "0.0", std::string(16, '\x07'));
  write_all(arr / "0.1", std::string(10, '\x07'));  // 6 bytes short
  const fs::path g = write_graph(tmp, "z.json", read_zarr_graph(arr));
  const fs::path cache = tmp / "cache";
  const CommandResult r =
      run_cli({"run", g.string(), "--cache", cache.string(), "--quiet"}, tmp.path());
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find((arr / "0.1").string()), std::string::npos) << r.err;
  for (const auto& rel : node_entries(cache))
    EXPECT_EQ(rel.find("/0/0/1"), std::string::npos) << "the short chunk was cached: " << rel;
}

std::string one_node(const std::string& id, const std::string& op, const std::string& params,
                     const std::string& more = "") {
  return R"({"cellflow": 1, "nodes": [
  {"id": ")" +
         id + R"(", "op": ")" + op + R"(", "params": )" + params + "}" + more + "\n]}\n";
}

TEST(CliHostile, SizesThatOverflowAreRefusedWhenTheGraphIsBuilt) {
  TempDir tmp;
  const fs::path cache = tmp / "cache";
  struct Case {
    std::string json;
    std::string field;
  };
  const std::vector<Case> cases = {
      // 2^66 elements in 1^3 cells: the cell count wraps to 0.
      {one_node("raw", "synthetic.blobs",
                R"({"shape": [4194304, 4194304, 4194304], "cell_shape": [1, 1, 1]})"),
       "shape"},
      // One cell of 10^12 elements.
      {one_node("raw", "synthetic.blobs",
                R"({"shape": [1000000000000], "cell_shape": [1000000000000]})"),
       "cell shape"},
      {one_node("raw", "synthetic.blobs", R"({"shape": [16, 16], "cell_shape": [8, 8]})",
                R"(, {"id": "d", "op": "region.density", "inputs": ["raw"],
                      "params": {"region": [9223372036854775807, 1]}})"),
       "region"},
      {one_node("raw", "synthetic.blobs", R"({"shape": [16, 16], "cell_shape": [8, 8]})",
                R"(, {"id": "d", "op": "downsample", "inputs": ["raw"],
                      "params": {"factors": 9223372036854775000}})"),
       "factors"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.json);
    const fs::path g = write_graph(tmp, "big.json", c.json);
    const CommandResult r =
        run_cli({"run", g.string(), "--cache", cache.string(), "--quiet"}, tmp.path());
    EXPECT_EQ(r.exit_code, 2) << describe(r);
    EXPECT_NE(r.err.find(c.field), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(cache)) << "nothing written";
  }
}

TEST(CliHostile, OutOfMemorySaysWhichNodeAndHowMuch) {
  TempDir tmp;
  // One cell of 2^35 f64 = 256 GiB: valid, but no test machine has it.
  const fs::path g = write_graph(
      tmp, "huge.json",
      one_node("huge", "synthetic.blobs",
               R"({"shape": [34359738368], "cell_shape": [34359738368], "dtype": "f64"})"));
  const CommandResult r =
      run_cli({"run", g.string(), "--cache", (tmp / "cache").string(), "--quiet"}, tmp.path());
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("\"huge\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("274877906944 bytes"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("std::bad_alloc"), std::string::npos) << r.err;
}

/// Runs the CLI with stdout on /dev/full; returns the exit code.
int run_to_dev_full(const std::vector<std::string>& args, const TempDir& tmp) {
  std::vector<std::string> argv{CELLFLOW_CLI};
  if (const char* other = std::getenv("CELLFLOW_TEST_CLI"); other != nullptr && *other != 0)
    argv[0] = other;
  argv.insert(argv.end(), args.begin(), args.end());
  std::string cmd;
  for (const auto& a : argv) cmd += shell_quote(a) + " ";
  cmd += "</dev/null >/dev/full 2>" + shell_quote((tmp / "full.err").string());
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(CliHostile, FailedWritesToStdoutExitOne) {
  TempDir tmp;
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full on this system";
  const fs::path g = write_graph(tmp, "g.json", example_graph_json(0.5, 31));
  const std::string cache = (tmp / "cache").string();
  EXPECT_EQ(run_to_dev_full({"graph", g.string(), "--hashes"}, tmp), 1);
  EXPECT_NE(read_all(tmp / "full.err").find("standard output"), std::string::npos)
      << read_all(tmp / "full.err");
  EXPECT_EQ(run_to_dev_full({"run", g.string(), "--cache", cache}, tmp), 1);
  EXPECT_EQ(run_to_dev_full({"cache", "ls", "--cache", cache}, tmp), 1);
  EXPECT_EQ(run_to_dev_full({"ops"}, tmp), 1);
}

/// Runs the CLI in a child that is killed after 20 s; returns its exit code
/// (-1 when it had to be killed) and its stderr.
std::pair<int, std::string> run_bounded(const std::vector<std::string>& args, const TempDir& tmp) {
  std::vector<std::string> argv{CELLFLOW_CLI};
  if (const char* other = std::getenv("CELLFLOW_TEST_CLI"); other != nullptr && *other != 0)
    argv[0] = other;
  argv.insert(argv.end(), args.begin(), args.end());
  Child child(argv, tmp / "bounded.out", tmp / "bounded.err");
  if (!child.wait_for(20)) {
    child.kill9();
    child.wait();
    return {-1, read_all(tmp / "bounded.err")};
  }
  return {child.code(), read_all(tmp / "bounded.err")};
}

TEST(CliHostile, FifoWhereAFileBelongsIsRefusedWithoutBlocking) {
  TempDir tmp;
  const std::string cache = (tmp / "cache").string();
  // The graph file itself.
  ASSERT_EQ(::mkfifo((tmp / "fifo.json").c_str(), 0644), 0);
  auto [code, err] = run_bounded({"run", (tmp / "fifo.json").string(), "--cache", cache}, tmp);
  EXPECT_NE(code, -1) << "blocked on a FIFO";
  EXPECT_NE(code, 0) << err;
  EXPECT_NE(err.find("regular file"), std::string::npos) << err;
  // A Zarr array's .zarray and one of its chunks.
  fs::create_directories(tmp / "a.zarr");
  ASSERT_EQ(::mkfifo((tmp / "a.zarr" / ".zarray").c_str(), 0644), 0);
  const fs::path zg = write_graph(tmp, "z.json", read_zarr_graph(tmp / "a.zarr"));
  std::tie(code, err) = run_bounded({"run", zg.string(), "--cache", cache}, tmp);
  EXPECT_NE(code, -1) << "blocked on a FIFO .zarray";
  EXPECT_NE(code, 0) << err;
  EXPECT_NE(err.find(".zarray"), std::string::npos) << err;
  fs::remove(tmp / "a.zarr" / ".zarray");
  write_zarr(tmp / "b.zarr", "null");
  ASSERT_EQ(::mkfifo((tmp / "b.zarr" / "0.0").c_str(), 0644), 0);
  const fs::path bg = write_graph(tmp, "b.json", read_zarr_graph(tmp / "b.zarr"));
  std::tie(code, err) = run_bounded({"run", bg.string(), "--cache", cache}, tmp);
  EXPECT_NE(code, -1) << "blocked on a FIFO chunk";
  EXPECT_EQ(code, 1) << err;
  EXPECT_NE(err.find("0.0"), std::string::npos) << err;
  // A plugin.
  ASSERT_EQ(::mkfifo((tmp / "plugin.so").c_str(), 0644), 0);
  std::tie(code, err) = run_bounded({"ops", "--plugin", (tmp / "plugin.so").string()}, tmp);
  EXPECT_NE(code, -1) << "blocked on a FIFO plugin";
  EXPECT_NE(code, 0) << err;
  EXPECT_NE(err.find("regular file"), std::string::npos) << err;
}

TEST(CliHostile, ControlCharactersNeverReachTheTerminalRaw) {
  TempDir tmp;
  // A node id with ESC (colour change) and BEL; a param with ESC in an error.
  const std::string id = "raw\\u001b[31m\\u0007";
  const fs::path g =
      write_graph(tmp, "esc.json",
                  one_node(id, "synthetic.blobs", R"({"shape": [16, 16], "cell_shape": [8, 8]})"));
  const CommandResult r =
      run_cli({"run", g.string(), "--cache", (tmp / "cache").string()}, tmp.path());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\x07'), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("raw\\x1b[31m\\x07"), std::string::npos) << r.out;
  const fs::path bad =
      write_graph(tmp, "bad.json",
                  one_node("x\\u001b]0;pwned\\u0007", "synthetic.blobs",
                           R"({"shape": [16, 16], "cell_shape": [8, 8], "dtype": "\u001b[2J"})"));
  const CommandResult e =
      run_cli({"run", bad.string(), "--cache", (tmp / "cache").string()}, tmp.path());
  EXPECT_EQ(e.exit_code, 2) << describe(e);
  EXPECT_EQ(e.err.find('\x1b'), std::string::npos) << e.err;
  EXPECT_EQ(e.err.find('\x07'), std::string::npos) << e.err;
  EXPECT_NE(e.err.find("\\x1b"), std::string::npos) << e.err;
}

/// Exports synthetic.blobs of `shape` (u16) to `to`.
CommandResult export_blobs(const TempDir& tmp, const std::string& shape, const fs::path& to) {
  const fs::path g = write_graph(
      tmp, "blobs.json",
      one_node("raw", "synthetic.blobs",
               R"({"shape": )" + shape + R"(, "cell_shape": [16, 64, 64], "dtype": "u16"})"));
  return run_cli(
      {"export", g.string(), "raw", "--to", to.string(), "--cache", (tmp / "cache").string()},
      tmp.path());
}

TEST(CliHostile, ImageExportOnAFullDiskFailsAndKeepsThePreviousExport) {
  TempDir tmp;
  ScopedMount small("-t tmpfs -o size=1M tmpfs", tmp / "small");
  if (!small.ok()) GTEST_SKIP() << "cannot mount a 1 MiB tmpfs (needs root): not tested here";
  for (const char* name : {"out.mha", "out.tif"}) {
    SCOPED_TRACE(name);
    const fs::path to = tmp / "small" / name;
    const CommandResult first = export_blobs(tmp, "[16, 64, 64]", to);  // 128 KiB
    ASSERT_EQ(first.exit_code, 0) << describe(first);
    const std::string before = read_all(to);
    const CommandResult big = export_blobs(tmp, "[64, 128, 128]", to);  // 2 MiB
    EXPECT_EQ(big.exit_code, 1) << describe(big);
    EXPECT_EQ(big.out.find("wrote"), std::string::npos) << big.out;
    EXPECT_TRUE(read_all(to) == before) << "the previous export must stay intact";
    EXPECT_EQ(temp_files(tmp / "small"), std::vector<std::string>{});
    fs::remove(to);
  }
}

TEST(CliHostile, MhdExportNeverOverwritesAnUnrelatedRawFile) {
  TempDir tmp;
  write_all(tmp / "scan.raw", "precious data");
  const CommandResult r = export_blobs(tmp, "[16, 64, 64]", tmp / "scan.mhd");
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("scan.raw"), std::string::npos) << r.err;
  EXPECT_EQ(read_all(tmp / "scan.raw"), "precious data");
  EXPECT_FALSE(fs::exists(tmp / "scan.mhd"));
}

TEST(CliHostile, CsvExportOnAFullDiskFailsAndKeepsThePreviousExport) {
  TempDir tmp;
  ScopedMount small("-t tmpfs -o size=1M tmpfs", tmp / "small");
  if (!small.ok()) GTEST_SKIP() << "cannot mount a 1 MiB tmpfs (needs root): not tested here";
  const fs::path g = write_graph(tmp, "objects.json", R"({"cellflow": 1, "nodes": [
    {"id": "raw", "op": "synthetic.blobs",
     "params": {"shape": [32, 32, 32], "cell_shape": [16, 16, 16], "dtype": "f32", "seed": 4}},
    {"id": "mask", "op": "threshold", "inputs": ["raw"], "params": {"above": 0.5}},
    {"id": "labels", "op": "label", "inputs": ["mask"]},
    {"id": "objects", "op": "label.stats", "inputs": ["labels", "raw"]}]})");
  const fs::path to = tmp / "small" / "objects.csv";
  const std::vector<std::string> args{
      "export", g.string(), "objects", "--to", to.string(), "--cache", (tmp / "cache").string()};
  const CommandResult first = run_cli(args, tmp.path());
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  const std::string before = read_all(to);
  ASSERT_FALSE(before.empty());
  // Fill the disk, then export again.
  std::system(("dd if=/dev/zero of=" + shell_quote((tmp / "small" / "fill").string()) +
               " bs=4096 2>/dev/null")
                  .c_str());
  const CommandResult again = run_cli(args, tmp.path());
  EXPECT_EQ(again.exit_code, 1) << describe(again);
  EXPECT_TRUE(read_all(to) == before) << "the previous export must stay intact";
  EXPECT_EQ(temp_files(tmp / "small"), std::vector<std::string>{});
}

TEST(CliHostile, NonsensicalSettingsAreRefusedWithOneClearLine) {
  TempDir tmp;
  const fs::path g = write_graph(tmp, "g.json", example_graph_json(0.5, 32));
  const std::string cache = (tmp / "cache").string();
  const auto refused = [&](const std::vector<std::string>& args, const std::string& mention) {
    SCOPED_TRACE(mention);
    const CommandResult r = run_cli(args, tmp.path());
    EXPECT_EQ(r.exit_code, 2) << describe(r);
    EXPECT_NE(r.err.find(mention), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
    EXPECT_LT(r.err.size(), 200u) << "short: " << r.err;
    EXPECT_FALSE(fs::exists(cache));
  };
  refused({"run", g.string(), "--cache", cache, "--memory", "10"}, "--memory 10");
  refused({"run", g.string(), "--cache", cache, "--timeout", "-1"}, "--timeout");
  refused({"run", g.string(), "--cache", ""}, "--cache");
  refused({"export", g.string(), "density", "--to", (tmp / "d.tif").string(), "--cache", ""},
          "--cache");
  refused({"cache", "ls", "--cache", ""}, "--cache");
}

TEST(CliHostile, MisspeltNamesGetADidYouMean) {
  TempDir tmp;
  const fs::path good = write_graph(tmp, "g.json", example_graph_json(0.5, 33));
  const auto suggests = [&](const std::vector<std::string>& args, const std::string& hint) {
    SCOPED_TRACE(hint);
    const CommandResult r = run_cli(args, tmp.path());
    EXPECT_EQ(r.exit_code, 2) << describe(r);
    EXPECT_NE(r.err.find("did you mean " + hint), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(tmp / "cache"));
  };
  const std::string cache = (tmp / "cache").string();
  suggests({"rnu", good.string()}, "\"run\"");
  suggests({"run", good.string(), "--cache", cache, "--qiet"}, "\"--quiet\"");
  suggests({"cache", "lss", "--cache", cache}, "\"ls\"");
  std::string json = example_graph_json(0.5, 33);
  json.replace(json.find("\"gaussian\""), 10, "\"gausian\"");
  suggests({"run", write_graph(tmp, "op.json", json).string(), "--cache", cache}, "\"gaussian\"");
  json = example_graph_json(0.5, 33);
  json.replace(json.find("\"sigma\""), 7, "\"sigam\"");
  suggests({"run", write_graph(tmp, "param.json", json).string(), "--cache", cache}, "\"sigma\"");
  json = example_graph_json(0.5, 33);
  json.replace(json.find("\"inputs\": [\"raw\"]"), 17, "\"inputs\": [\"rwa\"]");
  suggests({"run", write_graph(tmp, "input.json", json).string(), "--cache", cache}, "\"raw\"");
}

TEST(CliHostile, ZarrExportNeverRemovesWhatItDidNotWrite) {
  TempDir tmp;
  const fs::path to = tmp / "out.ome.zarr";
  ASSERT_EQ(export_blobs(tmp, "[16, 64, 64]", to).exit_code, 0);
  // Re-exporting replaces an export...
  const CommandResult again = export_blobs(tmp, "[16, 64, 64]", to);
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_TRUE(fs::exists(to / "0" / ".zarray"));
  // ... but not a group that holds something else (a labels folder).
  write_all(to / "labels" / "notes.txt", "hand-made labels");
  const auto before = snapshot(to);
  const CommandResult r = export_blobs(tmp, "[16, 64, 64]", to);
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("labels"), std::string::npos) << r.err;
  EXPECT_TRUE(snapshot(to) == before) << "the group must be untouched";
  EXPECT_EQ(temp_files(tmp.path()), std::vector<std::string>{});
}

TEST(CliHostile, ZarrExportOnAFullDiskKeepsThePreviousExport) {
  TempDir tmp;
  ScopedMount small("-t tmpfs -o size=1M tmpfs", tmp / "small");
  if (!small.ok()) GTEST_SKIP() << "cannot mount a 1 MiB tmpfs (needs root): not tested here";
  const fs::path to = tmp / "small" / "out.zarr";
  ASSERT_EQ(export_blobs(tmp, "[16, 64, 64]", to).exit_code, 0);
  const auto before = snapshot(to);
  const CommandResult big = export_blobs(tmp, "[64, 128, 128]", to);  // 2 MiB
  EXPECT_EQ(big.exit_code, 1) << describe(big);
  EXPECT_TRUE(snapshot(to) == before) << "the previous export must stay intact";
  EXPECT_EQ(temp_files(tmp / "small"), std::vector<std::string>{});
}

TEST(CliHostile, ProgressJsonOnStdoutIsOnlyJsonLines) {
  TempDir tmp;
  const fs::path g = write_graph(tmp, "g.json", example_graph_json(0.5, 34));
  const CommandResult r = run_cli(
      {"run", g.string(), "--cache", (tmp / "cache").string(), "--progress-json", "-"}, tmp.path());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  std::istringstream lines(r.out);
  std::string line;
  int events = 0;
  while (std::getline(lines, line)) {
    EXPECT_NO_THROW(parse_json(line, "stdout")) << "not JSON: " << line;
    ++events;
  }
  EXPECT_GT(events, 2);
  EXPECT_NE(r.err.find("wall time"), std::string::npos) << "the table goes to stderr: " << r.err;
}

TEST(CliHostile, OpsNameShowsOneOp) {
  TempDir tmp;
  const CommandResult one = run_cli({"ops", "gaussian"}, tmp.path());
  ASSERT_EQ(one.exit_code, 0) << describe(one);
  EXPECT_TRUE(one.out.starts_with("gaussian (version")) << one.out;
  EXPECT_NE(one.out.find("sigma"), std::string::npos) << one.out;
  EXPECT_EQ(one.out.find("\nthreshold ("), std::string::npos) << "only the op asked for";
  const CommandResult json = run_cli({"ops", "--json", "gaussian"}, tmp.path());
  ASSERT_EQ(json.exit_code, 0) << describe(json);
  EXPECT_EQ(parse_json(json.out, "ops").find("ops")->as_array().size(), 1u);
  const CommandResult typo = run_cli({"ops", "gausian"}, tmp.path());
  EXPECT_EQ(typo.exit_code, 2) << describe(typo);
  EXPECT_NE(typo.err.find("did you mean \"gaussian\""), std::string::npos) << typo.err;
}

}  // namespace
}  // namespace cellflow::test

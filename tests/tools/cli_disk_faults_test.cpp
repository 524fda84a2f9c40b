// `cellflow run` when the cache's disk fails it: full, read-only, not
// writable, not openable. Each gives one clear error naming the file and exit
// 1 (2 for a cache that cannot be opened at all), commits nothing partial
// (no half cell files, no temporary files left), and leaves a cache that a
// later run completes to the same bytes as an undisturbed run. Disk-full and
// read-only media need root (a small tmpfs, a read-only bind mount); without
// root the permission tests use chmod and the others are skipped, saying so.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "cli_common.hpp"
#include "fault_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

const std::vector<std::string> kIds = {"raw", "smooth", "mask", "density"};

/// The example pipeline, larger: 96^3 f32 in 32^3 cells (about 3 MiB per
/// f32 node on disk).
std::string big_graph_json() {
  std::string json = example_graph_json();
  const auto replace = [&](const std::string& from, const std::string& to) {
    const auto p = json.find(from);
    EXPECT_NE(p, std::string::npos) << from;
    if (p != std::string::npos) json.replace(p, from.size(), to);
  };
  replace("[40, 48, 56]", "[96, 96, 96]");
  replace("[16, 16, 16]", "[32, 32, 32]");
  return json;
}

bool is_root() { return ::geteuid() == 0; }

CommandResult run(const TempDir& tmp, const fs::path& graph, const fs::path& cache,
                  std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"run", graph.string(), "--cache", cache.string(), "--quiet"};
  args.insert(args.end(), extra.begin(), extra.end());
  return run_cli(args, tmp.path());
}

/// Every node's committed files in `a` and `b` are identical.
void expect_same_nodes(const fs::path& a, const fs::path& b, const Graph& memory) {
  for (const auto& id : kIds) {
    const std::string& hash = memory.node(id).hash;
    const auto fa = node_files(a / hash);
    EXPECT_FALSE(fa.empty()) << id;
    EXPECT_EQ(fa, node_files(b / hash)) << "node " << id;
  }
}

void expect_verify_clean(const TempDir& tmp, const fs::path& cache) {
  const CommandResult v = run_cli({"cache", "verify", "--cache", cache.string()}, tmp.path());
  EXPECT_EQ(v.exit_code, 0) << describe(v);
  EXPECT_NE(v.out.find(": clean"), std::string::npos) << v.out;
}

TEST(CliDiskFaults, DiskFullFailsCleanlyAndTheNextRunCompletesTheCache) {
  if (!is_root()) {
    GTEST_SKIP() << "skipped: needs root to mount a 1 MiB tmpfs (running as uid " << ::geteuid()
                 << ")";
  }
  TempDir tmp;
  const std::string json = big_graph_json();
  const fs::path graph = write_graph(tmp, "big.json", json);
  ScopedMount disk("-t tmpfs -o size=1M tmpfs", tmp / "disk");
  if (!disk.ok())
    GTEST_SKIP() << "skipped: mount -t tmpfs failed (no CAP_SYS_ADMIN in this container?)";
  const fs::path cache = tmp / "disk" / "cache";

  const CommandResult full = run(tmp, graph, cache);
  EXPECT_EQ(full.exit_code, 1) << describe(full);
  EXPECT_NE(full.err.find("No space left on device"), std::string::npos) << full.err;
  EXPECT_NE(full.err.find("file " + cache.string() + "/"), std::string::npos)
      << "the error names the file: " << full.err;
  EXPECT_EQ(std::count(full.err.begin(), full.err.end(), '\n'), 1) << "one line: " << full.err;
  EXPECT_TRUE(temp_files(cache).empty()) << temp_files(cache).front();
  expect_verify_clean(tmp, cache);

  // More room: the next run completes the job, reusing what was committed.
  ASSERT_TRUE(disk.remount("size=64M"));
  const CommandResult ok = run(tmp, graph, cache, {"--summary-json", (tmp / "s.json").string()});
  ASSERT_EQ(ok.exit_code, 0) << describe(ok);
  const Summary s = read_summary(tmp / "s.json");
  EXPECT_LT(s.get("raw", "cells_computed"), s.get("raw", "cells_total"))
      << "cells committed before the disk filled are not recomputed";
  ASSERT_EQ(run(tmp, graph, tmp / "clean").exit_code, 0);
  const Graph memory = build_graph(json, std::nullopt);
  expect_same_nodes(cache, tmp / "clean", memory);
  expect_verify_clean(tmp, cache);
}

// Makes `dir` read-only for the CLI: a read-only bind mount at `view` when
// root (root ignores permissions), else chmod of `dir` itself (view = dir).
class ReadOnlyView {
 public:
  ReadOnlyView(const fs::path& dir, const fs::path& view) {
    if (is_root()) {
      mount_ = std::make_unique<ScopedMount>("--bind " + shell_quote(dir.string()), view);
      ok_ = mount_->ok() && mount_->remount("bind,ro");
      path_ = view;
      expected_ = "Read-only file system";
    } else {
      chmod_all(dir, false);
      dir_ = dir;
      ok_ = true;
      path_ = dir;
      expected_ = "Permission denied";
    }
  }
  ~ReadOnlyView() { restore(); }
  void restore() {
    mount_.reset();
    if (!dir_.empty()) chmod_all(dir_, true);
    dir_.clear();
  }
  bool ok() const { return ok_; }
  const fs::path& path() const { return path_; }
  const std::string& expected_error() const { return expected_; }

 private:
  static void chmod_all(const fs::path& dir, bool writable) {
    const auto perms =
        writable ? fs::perms::owner_write
                 : fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write;
    const auto opts = writable ? fs::perm_options::add : fs::perm_options::remove;
    std::error_code ec;
    fs::permissions(dir, perms, opts, ec);
    for (const auto& e : fs::recursive_directory_iterator(dir, ec))
      if (e.is_directory()) fs::permissions(e.path(), perms, opts, ec);
  }
  std::unique_ptr<ScopedMount> mount_;
  fs::path dir_;
  fs::path path_;
  std::string expected_;
  bool ok_ = false;
};

TEST(CliDiskFaults, ACompleteCacheOnReadOnlyMediaIsUsable) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json());
  ASSERT_EQ(run(tmp, graph, tmp / "cache").exit_code, 0);
  const auto before = snapshot(tmp / "cache");
  ReadOnlyView ro(tmp / "cache", tmp / "ro");
  if (!ro.ok()) GTEST_SKIP() << "skipped: could not make a read-only view of the cache";

  const CommandResult r = run(tmp, graph, ro.path(), {"--summary-json", (tmp / "s.json").string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const Summary s = read_summary(tmp / "s.json");
  for (const auto& id : kIds) EXPECT_EQ(s.get(id, "cells_computed"), 0) << id;
  expect_verify_clean(tmp, ro.path());
  EXPECT_EQ(run_cli({"cache", "ls", "--cache", ro.path().string()}, tmp.path()).exit_code, 0);
  ro.restore();
  EXPECT_EQ(snapshot(tmp / "cache"), before);
}

TEST(CliDiskFaults, AReadOnlyPartialCacheFailsNamingTheFileAndChangesNothing) {
  TempDir tmp;
  const std::string json = example_graph_json();
  const fs::path graph = write_graph(tmp, "graph.json", json);
  const fs::path cache = tmp / "cache";
  ASSERT_EQ(run(tmp, graph, cache, {"--output", "smooth"}).exit_code, 0);
  const auto before = snapshot(cache);
  {
    ReadOnlyView ro(cache, tmp / "ro");
    if (!ro.ok()) GTEST_SKIP() << "skipped: could not make a read-only view of the cache";
    const CommandResult r = run(tmp, graph, ro.path());
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    EXPECT_NE(r.err.find(ro.expected_error()), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("file " + ro.path().string() + "/"), std::string::npos)
        << "names the file: " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  }
  EXPECT_EQ(snapshot(cache), before) << "nothing was written";
  // Writable again, the cache completes to the bytes of an undisturbed run.
  ASSERT_EQ(run(tmp, graph, cache).exit_code, 0);
  ASSERT_EQ(run(tmp, graph, tmp / "clean").exit_code, 0);
  expect_same_nodes(cache, tmp / "clean", build_graph(json, std::nullopt));
}

TEST(CliDiskFaults, ANodeFolderThatCannotBeWrittenFailsTheRunNotTheCache) {
  TempDir tmp;
  const std::string json = example_graph_json();
  const fs::path graph = write_graph(tmp, "graph.json", json);
  const fs::path cache = tmp / "cache";
  const Graph memory = build_graph(json, std::nullopt);
  // mask's array and cell folders exist (a run computed it, then its cells
  // were lost) but cannot be written.
  ASSERT_EQ(run(tmp, graph, cache, {"--output", "mask"}).exit_code, 0);
  const fs::path mask_cells = cache / memory.node("mask").hash / "0";
  std::vector<fs::path> cells;
  for (const auto& e : fs::recursive_directory_iterator(mask_cells))
    if (e.is_regular_file() && e.path().filename().string()[0] != '.') cells.push_back(e.path());
  ASSERT_FALSE(cells.empty());
  for (const fs::path& c : cells) fs::remove(c);
  fs::remove(cache / memory.node("mask").hash / ".cellflow-complete");
  {
    ReadOnlyView ro(mask_cells, mask_cells);  // root: bind mount over itself
    if (!ro.ok()) GTEST_SKIP() << "skipped: could not make the node folder read-only";
    const CommandResult r = run(tmp, graph, cache);
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    EXPECT_NE(r.err.find(ro.expected_error()), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("file " + mask_cells.string() + "/"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("node \"mask\""), std::string::npos) << r.err;
    EXPECT_TRUE(temp_files(cache).empty()) << temp_files(cache).front();
  }
  expect_verify_clean(tmp, cache);
  ASSERT_EQ(run(tmp, graph, cache).exit_code, 0);
  ASSERT_EQ(run(tmp, graph, tmp / "clean").exit_code, 0);
  expect_same_nodes(cache, tmp / "clean", memory);
}

TEST(CliDiskFaults, ACacheThatCannotBeOpenedIsAUsageError) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json());
  // Below a regular file: no folder can be created there, root or not.
  write_all(tmp / "file", "x");
  const CommandResult r = run(tmp, graph, tmp / "file" / "cache");
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("cannot create it"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find((tmp / "file" / "cache").string()), std::string::npos) << r.err;

  // In a read-only place where the cache does not exist yet.
  fs::create_directories(tmp / "empty");
  ReadOnlyView ro(tmp / "empty", tmp / "ro");
  if (!ro.ok()) GTEST_SKIP() << "skipped: could not make a read-only folder";
  const CommandResult r2 = run(tmp, graph, ro.path() / "cache");
  EXPECT_EQ(r2.exit_code, 2) << describe(r2);
  EXPECT_NE(r2.err.find(ro.expected_error()), std::string::npos) << r2.err;
}

}  // namespace
}  // namespace cellflow::test

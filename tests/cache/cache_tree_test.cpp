// Tests of CacheTree (cache/src/cache_tree.cpp): init/commit semantics,
// cleaning of uncommitted directories, read-only children of committed trees,
// and races of threads and processes (one of them killed mid-fill) on one
// nested tree. Process tests re-execute this binary in helper mode.
#include "cellflow/cache/cache_tree.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "cache/helper_process.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/graph/value.hpp"
#include "cellflow/store/wait_lock.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

constexpr const char* kHelperEnv = "CELLFLOW_TREE_TEST_HELPER";
const char* const kChildren[] = {"a", "b", "c"};
const char* const kGrandChildren[] = {"x", "y"};
constexpr int kFilesPerLeaf = 4;

std::string leaf_content(const std::string& rel, int i) {
  std::string s;
  for (int k = 0; k < 2000; ++k) s += rel + " " + std::to_string(i) + "\n";
  return s;
}

/// The cvpl_tools protocol on <dir>/tree: open, fill what is not committed,
/// commit. Every commit this caller makes is logged as "<rel> <who>" to
/// `log`. With `stall_at`, stops forever before committing that leaf.
void fill_tree(const fs::path& dir, const fs::path& log, const std::string& who,
               const std::string& stall_at = "") {
  const auto committed = [&](CacheTree& t, const std::string& rel) {
    if (t.commit()) test::append_line(log, rel + " " + who);
  };
  CacheTree root(dir / "tree");
  if (root.is_committed()) return;
  root.writer().write_text("owner", who);
  for (const char* c : kChildren) {
    CacheTree child = root.child(c);
    if (child.is_committed()) continue;
    child.writer().write_text("owner", who);
    for (const char* g : kGrandChildren) {
      CacheTree leaf = child.child(g);
      if (leaf.is_committed()) continue;
      const std::string rel = std::string(c) + "/" + g;
      leaf.writer().write_text("owner", who);
      for (int i = 0; i < kFilesPerLeaf; ++i) {
        leaf.writer().write_text("data" + std::to_string(i), leaf_content(rel, i));
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      if (rel == stall_at) {
        std::ofstream(dir / "stalled") << who;
        while (true) ::pause();
      }
      committed(leaf, rel);
    }
    committed(child, c);
  }
  committed(root, ".");
}

int run_helper(const std::string& spec) {
  std::istringstream in(spec);
  std::string dir, who, stall_at;
  in >> dir >> who >> stall_at;
  try {
    fill_tree(dir, fs::path(dir) / (stall_at.empty() ? "commits.log" : "stalled_commits.log"), who,
              stall_at);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "helper %s: %s\n", who.c_str(), e.what());
    return 5;
  }
}

[[maybe_unused]] const int kHelperMode = [] {
  if (const char* spec = std::getenv(kHelperEnv)) std::_Exit(run_helper(spec));
  return 0;
}();

pid_t spawn_helper(const std::string& spec) { return test::spawn_self(kHelperEnv, spec); }

/// Checks the finished tree against the commit log: every directory committed
/// exactly once, by the one who filled it, with every file whole.
void expect_complete_tree(const fs::path& dir) {
  std::map<std::string, std::vector<std::string>> commits;
  std::istringstream log(test::read_all(dir / "commits.log"));
  for (std::string rel, who; log >> rel >> who;) commits[rel].push_back(who);
  std::vector<std::string> expected{"."};
  for (const char* c : kChildren) {
    expected.emplace_back(c);
    for (const char* g : kGrandChildren) expected.push_back(std::string(c) + "/" + g);
  }
  EXPECT_EQ(commits.size(), expected.size());
  for (const std::string& rel : expected) {
    SCOPED_TRACE(rel);
    ASSERT_EQ(commits[rel].size(), 1u) << "committed " << commits[rel].size() << " times";
    const fs::path d = dir / "tree" / rel;
    const std::string who = commits[rel][0];
    EXPECT_TRUE(CacheTree(d).is_committed());
    EXPECT_EQ(test::read_all(d / "owner"), who);
    const Value marker = parse_json(test::read_all(d / CacheTree::kCommittedMarker));
    EXPECT_NE(marker.find("committed"), nullptr);
    if (rel.find('/') != std::string::npos) {
      for (int i = 0; i < kFilesPerLeaf; ++i)
        EXPECT_EQ(test::read_all(d / ("data" + std::to_string(i))), leaf_content(rel, i))
            << "file " << i;
    }
  }
  // Nothing stray: only the expected files and folders.
  for (const std::string& entry : test::listing(dir / "tree")) {
    const bool ok = entry.find(".tmp.") == std::string::npos;
    EXPECT_TRUE(ok) << "temporary file left: " << entry;
  }
}

TEST(CacheTreeTest, CommitIsKeptAndUncommittedStartsClean) {
  TempDir tmp;
  {
    CacheTree root(tmp / "root");
    EXPECT_FALSE(root.is_committed());
    root.writer().write_text("result.txt", "42");
    CacheTree step = root.child("step1");
    test::write_all(step.path() / "partial.txt", "half");
    // Abandoned without commit (as a crash would).
  }
  {
    CacheTree root(tmp / "root");
    EXPECT_FALSE(root.is_committed());
    EXPECT_FALSE(fs::exists(tmp / "root/result.txt")) << "an uncommitted directory starts clean";
    EXPECT_FALSE(fs::exists(tmp / "root/step1"));
    CacheTree step = root.child("step1");
    step.writer().write_text("out.txt", "done");
    EXPECT_TRUE(step.commit());
    EXPECT_FALSE(step.commit()) << "a second commit reports that it was committed already";
    root.writer().write_text("result.txt", "42");
    EXPECT_TRUE(root.commit());
  }
  {
    CacheTree root(tmp / "root");
    EXPECT_TRUE(root.is_committed());
    EXPECT_EQ(test::read_all(tmp / "root/result.txt"), "42");
    CacheTree step = root.child("step1");
    EXPECT_TRUE(step.is_committed());
    EXPECT_EQ(test::read_all(tmp / "root/step1/out.txt"), "done");
    // A child that was never committed inside a committed tree is left alone.
    CacheTree other = root.child("never");
    EXPECT_FALSE(other.is_committed());
    EXPECT_FALSE(fs::exists(tmp / "root/never"));
    EXPECT_THROW(other.commit(), InvalidArgument);
  }
}

TEST(CacheTreeTest, RejectsBadNamesAndIsReentrantWithinAThread) {
  TempDir tmp;
  CacheTree root(tmp / "root");
  EXPECT_THROW(root.child("../up"), InvalidArgument);
  EXPECT_THROW(root.child(".hidden"), InvalidArgument);
  EXPECT_THROW(root.child(""), InvalidArgument);
  root.writer().write_text("first", "1");
  {
    // The same thread opens it again (a helper function that opens its own
    // handle): it shares the hold at once, and does not clean what is there.
    CacheTree again(tmp / "root", std::chrono::milliseconds(100));
    EXPECT_FALSE(again.is_committed());
    EXPECT_EQ(test::read_all(tmp / "root/first"), "1");
    again.writer().write_text("second", "2");
  }
  // Still held by `root`: another thread waits, and gives up at its timeout.
  std::thread other(
      [&] { EXPECT_THROW(CacheTree(tmp / "root", std::chrono::milliseconds(100)), LockTimeout); });
  other.join();
  CacheTree moved = std::move(root);
  EXPECT_TRUE(moved.commit());
  CacheTree after(tmp / "root");  // released: opens (committed) at once
  EXPECT_TRUE(after.is_committed());
  EXPECT_EQ(test::read_all(tmp / "root/second"), "2");
}

TEST(CacheTreeTest, AnotherHandleWaitsForTheHolderThenSeesItCommitted) {
  TempDir tmp;
  CacheTree holder(tmp / "root");
  std::atomic<bool> opened{false};
  bool committed_seen = false;
  std::thread other([&] {
    CacheTree t(tmp / "root");
    committed_seen = t.is_committed();
    opened = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(opened.load()) << "a second handle must wait while the first fills the directory";
  holder.writer().write_text("x", "1");
  holder.commit();
  other.join();
  EXPECT_TRUE(committed_seen);
  EXPECT_EQ(test::read_all(tmp / "root/x"), "1");
}

TEST(CacheTreeTest, ThreadsRacingOnOneTreeCommitEachDirectoryOnce) {
  TempDir tmp;
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t)
    threads.emplace_back(
        [&, t] { fill_tree(tmp.path(), tmp / "commits.log", "thread" + std::to_string(t)); });
  for (auto& th : threads) th.join();
  expect_complete_tree(tmp.path());
}

TEST(CacheTreeTest, ProcessesRacingOnOneTreeCommitEachDirectoryOnce) {
  TempDir tmp;
  // One process fills part of the tree (committing a/x, a/y and a) and is
  // killed before committing b/y; the others race for the rest.
  const pid_t stalled = spawn_helper(tmp.path().string() + " stalled b/y");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(tmp / "stalled") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(fs::exists(tmp / "stalled"));
  std::vector<pid_t> racers;
  for (int i = 0; i < 5; ++i)
    racers.push_back(spawn_helper(tmp.path().string() + " p" + std::to_string(i)));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ::kill(stalled, SIGKILL);
  EXPECT_EQ(test::wait_exit_code(stalled), 128 + SIGKILL);
  for (pid_t pid : racers) EXPECT_EQ(test::wait_exit_code(pid), 0);
  EXPECT_TRUE(fs::exists(tmp / "stalled_commits.log"))
      << "the killed process had committed part of the tree";
  expect_complete_tree(tmp.path());
  // The killed process's work was discarded with the uncommitted root.
  for (const auto& [rel, content] : test::snapshot(tmp / "tree"))
    EXPECT_NE(content, "stalled") << rel << " was written by the killed process";
}

}  // namespace
}  // namespace cellflow

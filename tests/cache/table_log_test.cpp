// TableLog: rows appended to a cache table from threads and processes at
// once — nothing lost, nothing duplicated, retries idempotent, damage found.
#include "cellflow/store/table_log.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cellflow/cache/cache_scan.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/store/memory_env.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;

Table rows(double writer, int first, int n) {
  Table t({"writer", "i"});
  for (int i = first; i < first + n; ++i) {
    const double r[] = {writer, static_cast<double>(i)};
    t.add_row(r);
  }
  return t;
}

TEST(TableLog, ThreadsAndProcessesAppendAtOnceNothingLostNothingDuplicated) {
  test::TempDir tmp;
  const fs::path cache = tmp / "cache";
  TableLog(cache, "events");  // creates the cache before the children fork
  constexpr int kProcesses = 3, kThreads = 3, kBatches = 20, kRows = 5;
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int rc = 0;
      try {
        TableLog log(cache, "events");
        for (int b = 0; b < kBatches; ++b) log.append(rows(100 + p, b * kRows, kRows));
      } catch (...) {
        rc = 1;
      }
      ::_exit(rc);
    }
    children.push_back(pid);
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      TableLog log(cache, "events");
      for (int b = 0; b < kBatches; ++b) log.append(rows(t, b * kRows, kRows));
    });
  for (auto& th : threads) th.join();
  for (const pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  const Table all = TableLog(cache, "events").read();
  ASSERT_EQ(all.num_rows(), static_cast<size_t>((kProcesses + kThreads) * kBatches * kRows));
  std::set<std::pair<double, double>> seen;
  for (size_t r = 0; r < all.num_rows(); ++r)
    EXPECT_TRUE(seen.insert({all.at(r, 0), all.at(r, 1)}).second) << "duplicated row " << r;
  EXPECT_EQ(TableLog(cache, "events").batches(),
            static_cast<size_t>((kProcesses + kThreads) * kBatches));
  EXPECT_TRUE(verify_cache(cache).clean());
}

TEST(TableLog, ARetriedBatchIsNotDuplicatedAndOrderIsBatchOrder) {
  auto env = std::make_shared<MemoryEnv>();
  TableLog log(env, "t");
  EXPECT_TRUE(log.append(rows(1, 0, 2), "b2"));
  EXPECT_TRUE(log.append(rows(1, 10, 1), "b1"));
  EXPECT_FALSE(log.append(rows(9, 99, 5), "b2")) << "the same batch id twice";
  const Table t = log.read();
  ASSERT_EQ(t.num_rows(), 3u);
  EXPECT_EQ(t.at(0, 1), 10);  // b1 first
  EXPECT_EQ(t.at(1, 1), 0);
  EXPECT_EQ(t.at(2, 1), 1);
  EXPECT_THROW(TableLog(env, "../x"), InvalidArgument);
  EXPECT_THROW(log.append(rows(1, 0, 1), "a/b"), InvalidArgument);
}

TEST(TableLog, AFailedAppendLeavesNothingAndAMovedBatchIsDamage) {
  auto env = std::make_shared<MemoryEnv>();
  TableLog log(env, "t");
  ASSERT_TRUE(log.append(rows(1, 0, 3), "a"));
  env->inject(1, MemoryEnv::Fault::kNoSpace);  // the write step of the next batch
  EXPECT_THROW(log.append(rows(1, 3, 3), "b"), IoError);
  EXPECT_EQ(log.batches(), 1u);
  EXPECT_EQ(log.read().num_rows(), 3u);
  // A batch copied into another table fails its identity-bound checksum.
  TableLog other(env, "u");
  ASSERT_TRUE(other.append(rows(2, 0, 1), "x"));
  env->plant("tables/u/y", EntryKind::kFile, *env->read("tables/t/a"));
  EXPECT_THROW(other.read(), CorruptionError);
  const VerifyReport found = verify_cache(env);
  ASSERT_EQ(found.damaged.size(), 1u);
  EXPECT_NE(found.damaged[0].file.string().find("tables/u/y"), std::string::npos);
  VerifyOptions repair;
  repair.repair = true;
  verify_cache(env, repair);
  EXPECT_TRUE(verify_cache(env).clean());
  EXPECT_EQ(other.read().num_rows(), 1u);
}

}  // namespace
}  // namespace cellflow

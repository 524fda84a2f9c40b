// run_blockwise() / enumerate_blocks(): daisy's fit modes against hand-computed
// block lists, conflict-free scheduling, parallelism without conflicts,
// retries, done-checks, cooperative timeouts, upstream tasks and orphans.
#include "cellflow/graph/blockwise.hpp"

#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/cancel.hpp"

namespace cellflow {
namespace {

using std::chrono::milliseconds;

Box box1(int64_t b, int64_t e) { return Box(Dims{b}, Dims{e}); }
Box box2(int64_t y0, int64_t y1, int64_t x0, int64_t x1) { return Box(Dims{y0, x0}, Dims{y1, x1}); }

struct Expected {
  int64_t id;
  Dims index;
  Box read, write;
};

void expect_blocks(const std::vector<Block>& got, const std::vector<Expected>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE("block " + std::to_string(i));
    EXPECT_EQ(got[i].id, want[i].id);
    EXPECT_EQ(got[i].index, want[i].index) << got[i].index.str();
    EXPECT_EQ(got[i].read_roi, want[i].read)
        << got[i].read_roi.str() << " vs " << want[i].read.str();
    EXPECT_EQ(got[i].write_roi, want[i].write)
        << got[i].write_roi.str() << " vs " << want[i].write.str();
  }
}

BlockwiseTask task1d(Fit fit) {
  BlockwiseTask t;
  t.name = "t";
  t.total_roi = box1(0, 30);
  t.read_roi = box1(0, 14);
  t.write_roi = box1(4, 10);
  t.fit = fit;
  return t;
}

// total [0,30), read [0,14), write [4,10): context 4 | 4, total write [4,26).
TEST(BlockwiseFit, Valid1D) {
  expect_blocks(enumerate_blocks(task1d(Fit::kValid)), {{0, Dims{0}, box1(0, 14), box1(4, 10)},
                                                        {1, Dims{1}, box1(6, 20), box1(10, 16)},
                                                        {2, Dims{2}, box1(12, 26), box1(16, 22)}});
}

TEST(BlockwiseFit, Overhang1D) {
  expect_blocks(enumerate_blocks(task1d(Fit::kOverhang)),
                {{0, Dims{0}, box1(0, 14), box1(4, 10)},
                 {1, Dims{1}, box1(6, 20), box1(10, 16)},
                 {2, Dims{2}, box1(12, 26), box1(16, 22)},
                 {3, Dims{3}, box1(18, 32), box1(22, 28)}});
}

TEST(BlockwiseFit, Shrink1D) {
  expect_blocks(enumerate_blocks(task1d(Fit::kShrink)), {{0, Dims{0}, box1(0, 14), box1(4, 10)},
                                                         {1, Dims{1}, box1(6, 20), box1(10, 16)},
                                                         {2, Dims{2}, box1(12, 26), box1(16, 22)},
                                                         {3, Dims{3}, box1(18, 30), box1(22, 26)}});
}

// The ROIs are relative: read [-4,10) write [0,6) over total [10,40) is the
// same tiling as above, shifted to the total ROI's begin.
TEST(BlockwiseFit, RelativeRoisAreShiftedToTheTotalRoi) {
  BlockwiseTask t;
  t.total_roi = box1(10, 40);
  t.read_roi = box1(-4, 10);
  t.write_roi = box1(0, 6);
  t.fit = Fit::kShrink;
  expect_blocks(enumerate_blocks(t), {{0, Dims{0}, box1(10, 24), box1(14, 20)},
                                      {1, Dims{1}, box1(16, 30), box1(20, 26)},
                                      {2, Dims{2}, box1(22, 36), box1(26, 32)},
                                      {3, Dims{3}, box1(28, 40), box1(32, 36)}});
  t.fit = Fit::kValid;
  EXPECT_EQ(enumerate_blocks(t).size(), 3u);
}

// Asymmetric context 1 | 4 that tiles the total write ROI [1,16) exactly:
// every mode gives the same five blocks.
TEST(BlockwiseFit, ExactTilingIsTheSameInEveryMode) {
  const std::vector<Expected> want = {{0, Dims{0}, box1(0, 8), box1(1, 4)},
                                      {1, Dims{1}, box1(3, 11), box1(4, 7)},
                                      {2, Dims{2}, box1(6, 14), box1(7, 10)},
                                      {3, Dims{3}, box1(9, 17), box1(10, 13)},
                                      {4, Dims{4}, box1(12, 20), box1(13, 16)}};
  for (Fit fit : {Fit::kValid, Fit::kOverhang, Fit::kShrink}) {
    SCOPED_TRACE(std::string(fit_name(fit)));
    BlockwiseTask t;
    t.total_roi = box1(0, 20);
    t.read_roi = box1(0, 8);
    t.write_roi = box1(1, 4);
    t.fit = fit;
    expect_blocks(enumerate_blocks(t), want);
  }
}

// A total ROI smaller than one read ROI: total write [4,6) holds no whole
// write ROI (valid: none); overhang keeps the block; shrink clips it.
TEST(BlockwiseFit, TotalSmallerThanOneBlock) {
  BlockwiseTask t;
  t.total_roi = box1(0, 10);
  t.read_roi = box1(0, 14);
  t.write_roi = box1(4, 10);
  t.fit = Fit::kValid;
  EXPECT_TRUE(enumerate_blocks(t).empty());
  t.fit = Fit::kOverhang;
  expect_blocks(enumerate_blocks(t), {{0, Dims{0}, box1(0, 14), box1(4, 10)}});
  t.fit = Fit::kShrink;
  expect_blocks(enumerate_blocks(t), {{0, Dims{0}, box1(0, 10), box1(4, 6)}});
}

// 2-D: total [0,30)x[0,20), read [0,14)x[0,9), write [4,10)x[2,7).
// Axis 0 as in the 1-D case; axis 1: context 2 | 2, total write [2,18),
// write rois [2,7) [7,12) [12,17) (valid) and [17,22) (overhang) / [17,18) (shrink).
BlockwiseTask task2d(Fit fit) {
  BlockwiseTask t;
  t.name = "t2";
  t.total_roi = box2(0, 30, 0, 20);
  t.read_roi = box2(0, 14, 0, 9);
  t.write_roi = box2(4, 10, 2, 7);
  t.fit = fit;
  return t;
}

TEST(BlockwiseFit, Valid2D) {
  expect_blocks(enumerate_blocks(task2d(Fit::kValid)),
                {
                    {0, Dims{0, 0}, box2(0, 14, 0, 9), box2(4, 10, 2, 7)},
                    {1, Dims{0, 1}, box2(0, 14, 5, 14), box2(4, 10, 7, 12)},
                    {2, Dims{0, 2}, box2(0, 14, 10, 19), box2(4, 10, 12, 17)},
                    {3, Dims{1, 0}, box2(6, 20, 0, 9), box2(10, 16, 2, 7)},
                    {4, Dims{1, 1}, box2(6, 20, 5, 14), box2(10, 16, 7, 12)},
                    {5, Dims{1, 2}, box2(6, 20, 10, 19), box2(10, 16, 12, 17)},
                    {6, Dims{2, 0}, box2(12, 26, 0, 9), box2(16, 22, 2, 7)},
                    {7, Dims{2, 1}, box2(12, 26, 5, 14), box2(16, 22, 7, 12)},
                    {8, Dims{2, 2}, box2(12, 26, 10, 19), box2(16, 22, 12, 17)},
                });
}

TEST(BlockwiseFit, Overhang2D) {
  expect_blocks(enumerate_blocks(task2d(Fit::kOverhang)),
                {
                    {0, Dims{0, 0}, box2(0, 14, 0, 9), box2(4, 10, 2, 7)},
                    {1, Dims{0, 1}, box2(0, 14, 5, 14), box2(4, 10, 7, 12)},
                    {2, Dims{0, 2}, box2(0, 14, 10, 19), box2(4, 10, 12, 17)},
                    {3, Dims{0, 3}, box2(0, 14, 15, 24), box2(4, 10, 17, 22)},
                    {4, Dims{1, 0}, box2(6, 20, 0, 9), box2(10, 16, 2, 7)},
                    {5, Dims{1, 1}, box2(6, 20, 5, 14), box2(10, 16, 7, 12)},
                    {6, Dims{1, 2}, box2(6, 20, 10, 19), box2(10, 16, 12, 17)},
                    {7, Dims{1, 3}, box2(6, 20, 15, 24), box2(10, 16, 17, 22)},
                    {8, Dims{2, 0}, box2(12, 26, 0, 9), box2(16, 22, 2, 7)},
                    {9, Dims{2, 1}, box2(12, 26, 5, 14), box2(16, 22, 7, 12)},
                    {10, Dims{2, 2}, box2(12, 26, 10, 19), box2(16, 22, 12, 17)},
                    {11, Dims{2, 3}, box2(12, 26, 15, 24), box2(16, 22, 17, 22)},
                    {12, Dims{3, 0}, box2(18, 32, 0, 9), box2(22, 28, 2, 7)},
                    {13, Dims{3, 1}, box2(18, 32, 5, 14), box2(22, 28, 7, 12)},
                    {14, Dims{3, 2}, box2(18, 32, 10, 19), box2(22, 28, 12, 17)},
                    {15, Dims{3, 3}, box2(18, 32, 15, 24), box2(22, 28, 17, 22)},
                });
}

TEST(BlockwiseFit, Shrink2D) {
  expect_blocks(enumerate_blocks(task2d(Fit::kShrink)),
                {
                    {0, Dims{0, 0}, box2(0, 14, 0, 9), box2(4, 10, 2, 7)},
                    {1, Dims{0, 1}, box2(0, 14, 5, 14), box2(4, 10, 7, 12)},
                    {2, Dims{0, 2}, box2(0, 14, 10, 19), box2(4, 10, 12, 17)},
                    {3, Dims{0, 3}, box2(0, 14, 15, 20), box2(4, 10, 17, 18)},
                    {4, Dims{1, 0}, box2(6, 20, 0, 9), box2(10, 16, 2, 7)},
                    {5, Dims{1, 1}, box2(6, 20, 5, 14), box2(10, 16, 7, 12)},
                    {6, Dims{1, 2}, box2(6, 20, 10, 19), box2(10, 16, 12, 17)},
                    {7, Dims{1, 3}, box2(6, 20, 15, 20), box2(10, 16, 17, 18)},
                    {8, Dims{2, 0}, box2(12, 26, 0, 9), box2(16, 22, 2, 7)},
                    {9, Dims{2, 1}, box2(12, 26, 5, 14), box2(16, 22, 7, 12)},
                    {10, Dims{2, 2}, box2(12, 26, 10, 19), box2(16, 22, 12, 17)},
                    {11, Dims{2, 3}, box2(12, 26, 15, 20), box2(16, 22, 17, 18)},
                    {12, Dims{3, 0}, box2(18, 30, 0, 9), box2(22, 26, 2, 7)},
                    {13, Dims{3, 1}, box2(18, 30, 5, 14), box2(22, 26, 7, 12)},
                    {14, Dims{3, 2}, box2(18, 30, 10, 19), box2(22, 26, 12, 17)},
                    {15, Dims{3, 3}, box2(18, 30, 15, 20), box2(22, 26, 17, 18)},
                });
}

TEST(BlockwiseFit, ShrinkKeepsTheContextAndStaysInside) {
  const BlockwiseTask t = task2d(Fit::kShrink);
  for (const Block& b : enumerate_blocks(t)) {
    EXPECT_TRUE(t.total_roi.contains(b.read_roi)) << b.read_roi.str();
    EXPECT_EQ(b.read_roi, b.write_roi.grow(Dims{4, 2}, Dims{4, 2}).intersect(t.total_roi));
  }
}

TEST(BlockwiseFit, FitNamesRoundTrip) {
  for (Fit f : {Fit::kValid, Fit::kOverhang, Fit::kShrink}) EXPECT_EQ(parse_fit(fit_name(f)), f);
  try {
    parse_fit("fits");
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("\"fits\""), std::string::npos) << e.what();
  }
}

TEST(BlockwiseValidation, RejectsInconsistentTasks) {
  BlockwiseTask t = task1d(Fit::kValid);
  t.read_roi = box1(5, 14);  // does not contain write [4,10)
  try {
    enumerate_blocks(t);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("task \"t\": field \"read_roi\""), std::string::npos)
        << e.what();
  }
  t = task1d(Fit::kValid);
  t.write_roi = box1(4, 4);
  EXPECT_THROW(enumerate_blocks(t), InvalidArgument);
  t = task1d(Fit::kValid);
  t.read_roi = box2(0, 14, 0, 14);
  EXPECT_THROW(enumerate_blocks(t), InvalidArgument);

  t = task1d(Fit::kValid);  // no process function
  EXPECT_THROW(run_blockwise(t), InvalidArgument);
  t.process = [](const Block&) {};
  t.max_retries = -1;
  EXPECT_THROW(run_blockwise(t), InvalidArgument);

  BlockwiseTask a = task1d(Fit::kValid), b = task1d(Fit::kValid);
  a.process = b.process = [](const Block&) {};
  b.upstream = {&a};  // same name "t"
  EXPECT_THROW(run_blockwise(b), InvalidArgument);
  b.name = "b";
  a.upstream = {&b};  // a cycle
  EXPECT_THROW(run_blockwise(b), InvalidArgument);
}

// Records which blocks run at the same time, with a global sequence number at
// the start and end of each process() call, so overlaps are exact.
class Recorder {
 public:
  struct Span {
    Block block;
    int64_t start = -1, end = -1;
  };

  void begin(const std::string& task, const Block& b) {
    std::lock_guard lock(mu_);
    Span& s = spans_[{task, b.id}];
    s.block = b;
    s.start = seq_++;
    running_.push_back({task, b});
    max_running_ = std::max(max_running_, running_.size());
  }
  void end(const std::string& task, const Block& b) {
    std::lock_guard lock(mu_);
    spans_[{task, b.id}].end = seq_++;
    running_.erase(std::find_if(running_.begin(), running_.end(), [&](const auto& r) {
      return r.first == task && r.second.id == b.id;
    }));
  }
  /// Pairs of blocks of `task` that were running at once while in conflict.
  std::vector<std::string> conflicting_overlaps(const std::string& task) const {
    std::vector<std::string> out;
    for (const auto& [ka, a] : spans_) {
      for (const auto& [kb, b] : spans_) {
        if (ka.first != task || kb.first != task || !(ka.second < kb.second)) continue;
        const bool conflict = !a.block.read_roi.intersect(b.block.write_roi).empty() ||
                              !b.block.read_roi.intersect(a.block.write_roi).empty();
        const bool overlap = a.start < b.end && b.start < a.end;
        if (conflict && overlap)
          out.push_back(a.block.write_roi.str() + " & " + b.block.write_roi.str());
      }
    }
    return out;
  }
  size_t conflicting_pairs(const std::string& task) const {
    size_t n = 0;
    for (const auto& [ka, a] : spans_)
      for (const auto& [kb, b] : spans_)
        if (ka.first == task && kb.first == task && ka.second < kb.second &&
            (!a.block.read_roi.intersect(b.block.write_roi).empty() ||
             !b.block.read_roi.intersect(a.block.write_roi).empty()))
          ++n;
    return n;
  }
  const std::map<std::pair<std::string, int64_t>, Span>& spans() const { return spans_; }
  size_t max_running() const { return max_running_; }

 private:
  std::mutex mu_;
  int64_t seq_ = 0;
  std::map<std::pair<std::string, int64_t>, Span> spans_;
  std::vector<std::pair<std::string, Block>> running_;
  size_t max_running_ = 0;
};

unsigned usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return static_cast<unsigned>(CPU_COUNT(&set));
  return std::thread::hardware_concurrency();
}

TEST(BlockwiseRun, ConflictingBlocksNeverRunAtTheSameTime) {
  for (Fit fit : {Fit::kValid, Fit::kOverhang, Fit::kShrink}) {
    SCOPED_TRACE(std::string(fit_name(fit)));
    Recorder rec;
    BlockwiseTask t;
    t.name = "conflicts";
    t.total_roi = box2(0, 50, 0, 45);
    t.read_roi = box2(0, 12, 0, 10);
    t.write_roi = box2(2, 10, 3, 7);  // context 2|2 and 3|3
    t.fit = fit;
    t.num_workers = 4;
    t.process = [&](const Block& b) {
      rec.begin("conflicts", b);
      std::this_thread::sleep_for(milliseconds(1));
      rec.end("conflicts", b);
    };
    const BlockwiseReport r = run_blockwise(t);
    ASSERT_TRUE(r.ok()) << r.summary();
    const auto n = static_cast<int64_t>(enumerate_blocks(t).size());
    EXPECT_EQ(r.task("conflicts").done, n);
    EXPECT_EQ(static_cast<int64_t>(rec.spans().size()), n);
    EXPECT_GT(rec.conflicting_pairs("conflicts"), 0u);  // the test has something to check
    const auto bad = rec.conflicting_overlaps("conflicts");
    EXPECT_TRUE(bad.empty()) << bad.size() << " conflicting pairs overlapped, e.g. " << bad.front();
    std::printf("fit %s: %lld blocks, %zu conflicting pairs, at most %zu blocks at once\n",
                std::string(fit_name(fit)).c_str(), static_cast<long long>(n),
                rec.conflicting_pairs("conflicts"), rec.max_running());
  }
}

// A rendezvous: each arriving block waits (up to a timeout) until `need`
// blocks have arrived. It proves two blocks ran at once without relying on timing.
class Rendezvous {
 public:
  explicit Rendezvous(int need) : need_(need) {}
  bool arrive_and_wait(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    ++arrived_;
    cv_.notify_all();
    return cv_.wait_for(lock, timeout, [&] { return arrived_ >= need_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  int need_;
};

TEST(BlockwiseRun, WithoutConflictsOverlappingBlocksRunInParallel) {
  if (usable_cores() < 2) GTEST_SKIP() << "needs two cores";
  Rendezvous meet(2);
  std::atomic<int> met{0};
  BlockwiseTask t = task1d(Fit::kShrink);  // 4 blocks whose reads overlap their neighbours' writes
  t.read_write_conflict = false;
  t.num_workers = 2;
  t.process = [&](const Block& b) {
    if (b.id < 2 && meet.arrive_and_wait(std::chrono::seconds(20))) met.fetch_add(1);
  };
  const BlockwiseReport r = run_blockwise(t);
  ASSERT_TRUE(r.ok()) << r.summary();
  // Blocks 0 and 1 conflict (block 1 reads [6,20), block 0 writes [4,10)), yet ran at once.
  EXPECT_EQ(met.load(), 2);
}

TEST(BlockwiseRun, WithConflictsNeighboursWaitForEachOther) {
  // The same rendezvous with read_write_conflict: blocks 0 and 1 must not
  // meet; block 0 times out waiting (quickly) and block 1 runs after it.
  Rendezvous meet(2);
  std::atomic<int> met{0};
  BlockwiseTask t = task1d(Fit::kShrink);
  t.num_workers = 2;
  t.process = [&](const Block& b) {
    if (b.id < 2 && meet.arrive_and_wait(milliseconds(300))) met.fetch_add(1);
  };
  const BlockwiseReport r = run_blockwise(t);
  ASSERT_TRUE(r.ok()) << r.summary();
  EXPECT_EQ(met.load(), 1);  // only the second arrival saw both
}

TEST(BlockwiseRun, NumWorkersCapsATask) {
  Recorder rec;
  BlockwiseTask a = task1d(Fit::kShrink), b = task2d(Fit::kShrink);
  a.name = "capped";
  a.total_roi = box1(0, 200);
  a.read_write_conflict = false;
  a.num_workers = 1;
  a.process = [&](const Block& blk) {
    rec.begin("capped", blk);
    std::this_thread::sleep_for(milliseconds(1));
    rec.end("capped", blk);
  };
  b.num_workers = 0;  // the arena gets every core
  b.read_write_conflict = false;
  b.process = [](const Block&) { std::this_thread::sleep_for(milliseconds(1)); };
  const BlockwiseReport r = run_blockwise({&a, &b});
  ASSERT_TRUE(r.ok()) << r.summary();
  EXPECT_EQ(r.task("capped").done, 32);  // total write [4,196) / 6
  EXPECT_EQ(rec.max_running(), 1u);
}

TEST(BlockwiseRun, RetriesThenSucceeds) {
  std::mutex mu;
  std::map<int64_t, int> attempts;
  BlockwiseTask t = task1d(Fit::kValid);
  t.max_retries = 2;
  t.process = [&](const Block& b) {
    std::lock_guard lock(mu);
    if (++attempts[b.id] <= 2 && b.id == 1) throw std::runtime_error("flaky");
  };
  const BlockwiseReport r = run_blockwise(t);
  EXPECT_TRUE(r.ok()) << r.summary();
  const TaskReport& tr = r.task("t");
  EXPECT_EQ(tr.done, 3);
  EXPECT_EQ(tr.failed, 0);
  EXPECT_EQ(tr.retries, 2);
  EXPECT_EQ(attempts[1], 3);
  EXPECT_EQ(attempts[0], 1);
}

TEST(BlockwiseRun, AlwaysFailingBlockFailsAndOrphansWhatDependsOnIt) {
  // Upstream "a" (1-D, no conflicts) and downstream "b" reading a's output with
  // context; a's block 1 (writes [10,16)) always fails.
  std::atomic<int> attempts_of_failing{0};
  BlockwiseTask a = task1d(Fit::kShrink);
  a.name = "a";
  a.read_write_conflict = false;
  a.max_retries = 1;
  a.process = [&](const Block& b) {
    if (b.id == 1) {
      attempts_of_failing.fetch_add(1);
      throw std::runtime_error("disk on fire");
    }
  };
  std::mutex mu;
  std::set<int64_t> ran_b;
  BlockwiseTask b;
  b.name = "b";
  b.total_roi = box1(4, 26);  // a's output
  b.read_roi = box1(0, 5);
  b.write_roi = box1(1, 4);  // context 1|1, total write [5,25), 7 blocks (shrink)
  b.fit = Fit::kShrink;
  b.read_write_conflict = false;
  b.upstream = {&a};
  b.process = [&](const Block& blk) {
    std::lock_guard lock(mu);
    ran_b.insert(blk.id);
  };
  const BlockwiseReport r = run_blockwise(b);  // a runs too: it is upstream
  EXPECT_FALSE(r.ok());
  ASSERT_EQ(r.tasks.size(), 2u);
  EXPECT_EQ(r.tasks[0].name, "a");
  const TaskReport& ra = r.task("a");
  EXPECT_EQ(ra.done, 3);
  EXPECT_EQ(ra.failed, 1);
  EXPECT_EQ(ra.retries, 1);
  EXPECT_EQ(attempts_of_failing.load(), 2);
  ASSERT_EQ(ra.failures.size(), 1u);
  EXPECT_EQ(ra.failures[0].block.id, 1);
  EXPECT_EQ(ra.failures[0].attempts, 2);
  EXPECT_NE(ra.failures[0].error.find("disk on fire"), std::string::npos);
  // b's blocks: write [5,8) [8,11) [11,14) [14,17) [17,20) [20,23) [23,25),
  // reads [4,9) [7,12) [10,15) [13,18) [16,21) [19,24) [22,26): those meeting
  // a's failed write [10,16) are blocks 1..3.
  const TaskReport& rb = r.task("b");
  EXPECT_EQ(rb.blocks, 7);
  EXPECT_EQ(rb.orphaned, 3);
  EXPECT_EQ(rb.done, 4);
  EXPECT_EQ(ran_b, (std::set<int64_t>{0, 4, 5, 6}));
  EXPECT_NE(r.summary().find("a: 4 blocks, 3 done, 0 skipped, 1 failed, 0 orphaned"),
            std::string::npos)
      << r.summary();
}

TEST(BlockwiseRun, FailedBlockOrphansConflictingBlocksOfItsTask) {
  // With read_write_conflict, block 1 (colour 1) waits for blocks 0 and 2
  // (colour 0) because it reads what they write; block 0 fails, so block 1 is
  // orphaned, as in daisy. Block 3 waits for block 2 only.
  BlockwiseTask t = task1d(Fit::kOverhang);
  t.max_retries = 0;
  std::atomic<bool> ran1{false};
  t.process = [&](const Block& b) {
    if (b.id == 0) throw std::runtime_error("boom");
    if (b.id == 1) ran1 = true;
  };
  const BlockwiseReport r = run_blockwise(t);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.task("t").failed, 1);
  EXPECT_EQ(r.task("t").orphaned, 1);
  EXPECT_EQ(r.task("t").done, 2);
  EXPECT_FALSE(ran1.load());
}

TEST(BlockwiseRun, CheckSkipsDoneBlocksAndVerifiesProcessedOnes) {
  std::mutex mu;
  std::set<int64_t> done_before{0, 2}, processed;
  BlockwiseTask t = task2d(Fit::kValid);  // 9 blocks
  t.read_write_conflict = false;
  t.max_retries = 1;
  t.check = [&](const Block& b) {
    std::lock_guard lock(mu);
    // Block 4's process() "forgets" to write: it never counts as done.
    return done_before.count(b.id) > 0 || (processed.count(b.id) > 0 && b.id != 4);
  };
  t.process = [&](const Block& b) {
    std::lock_guard lock(mu);
    processed.insert(b.id);
  };
  const BlockwiseReport r = run_blockwise(t);
  const TaskReport& tr = r.task("t2");
  EXPECT_EQ(tr.skipped, 2);
  EXPECT_EQ(tr.done, 6);
  EXPECT_EQ(tr.failed, 1);
  EXPECT_EQ(tr.retries, 1);
  EXPECT_EQ(processed.count(0) + processed.count(2), 0u);
  ASSERT_EQ(tr.failures.size(), 1u);
  EXPECT_EQ(tr.failures[0].block.id, 4);
  EXPECT_NE(tr.failures[0].error.find("check()"), std::string::npos) << tr.failures[0].error;
  EXPECT_FALSE(r.ok());
}

TEST(BlockwiseRun, PostCheckReplacesTheCheckAfterABlock) {
  // daisy's pair of check functions: a cheap pre-check before, a thorough
  // post-check after (here: the pre-check never sees the work as done).
  std::mutex mu;
  std::set<int64_t> processed;
  std::atomic<int> pre{0}, post{0};
  BlockwiseTask t = task2d(Fit::kValid);  // 9 blocks
  t.read_write_conflict = false;
  t.max_retries = 0;
  t.check = [&](const Block& b) {
    ++pre;
    return b.id == 8;  // only block 8 carries a done marker
  };
  t.post_check = [&](const Block& b) {
    ++post;
    std::lock_guard lock(mu);
    return processed.count(b.id) > 0 && b.id != 3;  // block 3's output is unsound
  };
  t.process = [&](const Block& b) {
    std::lock_guard lock(mu);
    processed.insert(b.id);
  };
  const BlockwiseReport r = run_blockwise(t);
  const TaskReport& tr = r.task("t2");
  EXPECT_EQ(tr.skipped, 1);
  EXPECT_EQ(tr.done, 7);
  EXPECT_EQ(tr.failed, 1);
  EXPECT_EQ(pre.load(), 9);   // before each block, never after
  EXPECT_EQ(post.load(), 8);  // after each processed block
  ASSERT_EQ(tr.failures.size(), 1u);
  EXPECT_EQ(tr.failures[0].block.id, 3);
  EXPECT_NE(tr.failures[0].error.find("post_check()"), std::string::npos) << tr.failures[0].error;
}

TEST(BlockwiseRun, InitWorkerRunsOncePerThreadBeforeItsFirstBlock) {
  std::mutex mu;
  std::map<std::thread::id, int> inits;
  std::atomic<int> blocks_before_init{0};
  std::atomic<int> init_calls{0};
  BlockwiseTask t = task2d(Fit::kValid);  // 9 blocks
  t.read_write_conflict = false;
  t.num_workers = 2;
  t.max_retries = 1;
  t.init_worker = [&] {
    // The first init fails: that block's attempt fails, and init is asked
    // again before the thread's next block.
    if (++init_calls == 1) throw IoError("model not found");
    std::lock_guard lock(mu);
    ++inits[std::this_thread::get_id()];
  };
  t.process = [&](const Block&) {
    std::lock_guard lock(mu);
    if (inits.count(std::this_thread::get_id()) == 0) ++blocks_before_init;
    std::this_thread::sleep_for(milliseconds(2));
  };
  const BlockwiseReport r = run_blockwise(t);
  const TaskReport& tr = r.task("t2");
  EXPECT_EQ(tr.done, 9);
  EXPECT_EQ(tr.retries, 1);
  EXPECT_EQ(blocks_before_init.load(), 0);
  for (const auto& [thread, n] : inits) EXPECT_EQ(n, 1);
  EXPECT_EQ(init_calls.load(), static_cast<int>(inits.size()) + 1);
}

TEST(BlockwiseRun, CheckOnARetryCountsEarlierWorkAsDone) {
  // process() commits its output, then throws: the retry's check sees the
  // output and the block is done (by this run), not skipped.
  std::mutex mu;
  std::set<int64_t> written;
  BlockwiseTask t = task1d(Fit::kValid);
  t.check = [&](const Block& b) {
    std::lock_guard lock(mu);
    return written.count(b.id) > 0;
  };
  t.process = [&](const Block& b) {
    std::lock_guard lock(mu);
    written.insert(b.id);
    if (b.id == 2) throw std::runtime_error("lost the connection after writing");
  };
  const BlockwiseReport r = run_blockwise(t);
  EXPECT_TRUE(r.ok()) << r.summary();
  EXPECT_EQ(r.task("t").done, 3);
  EXPECT_EQ(r.task("t").skipped, 0);
  EXPECT_EQ(r.task("t").retries, 1);
}

TEST(BlockwiseRun, CooperativeTimeouts) {
  BlockwiseTask t = task1d(Fit::kOverhang);  // 4 blocks
  t.read_write_conflict = false;
  t.timeout_seconds = 0.05;
  t.max_retries = 1;
  std::atomic<int> slow_attempts{0};
  t.process = [&](const Block& b) {
    if (b.id == 1) {  // polls check_cancelled() until the deadline (or 10 s)
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (std::chrono::steady_clock::now() < give_up) {
        check_cancelled();
        std::this_thread::sleep_for(milliseconds(1));
      }
    } else if (b.id == 2) {  // ignores cancellation, returns late
      slow_attempts.fetch_add(1);
      std::this_thread::sleep_for(milliseconds(120));
    }
  };
  const auto start = std::chrono::steady_clock::now();
  const BlockwiseReport r = run_blockwise(t);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const TaskReport& tr = r.task("t");
  EXPECT_EQ(tr.done, 2);
  EXPECT_EQ(tr.failed, 2);
  EXPECT_EQ(tr.retries, 2);
  EXPECT_EQ(slow_attempts.load(), 2);
  ASSERT_EQ(tr.failures.size(), 2u);
  EXPECT_NE(tr.failures[0].error.find("timed out"), std::string::npos) << tr.failures[0].error;
  EXPECT_NE(tr.failures[1].error.find("timed out"), std::string::npos) << tr.failures[1].error;
  EXPECT_LT(seconds, 5.0);  // the cooperative block stopped at its deadline
  EXPECT_FALSE(r.ok());
}

TEST(BlockwiseRun, DownstreamBlocksWaitForTheUpstreamBlocksTheyRead) {
  Recorder rec;
  BlockwiseTask a;
  a.name = "a";
  a.total_roi = box2(0, 40, 0, 40);
  a.read_roi = box2(0, 8, 0, 8);
  a.write_roi = box2(0, 8, 0, 8);
  a.num_workers = 3;
  a.process = [&](const Block& b) {
    rec.begin("a", b);
    std::this_thread::sleep_for(milliseconds(b.id % 3));
    rec.end("a", b);
  };
  BlockwiseTask b;
  b.name = "b";
  b.total_roi = box2(0, 40, 0, 40);
  b.read_roi = box2(0, 10, 0, 10);
  b.write_roi = box2(3, 7, 3, 7);  // context 3
  b.fit = Fit::kShrink;
  b.num_workers = 3;
  b.upstream = {&a};
  b.process = [&](const Block& blk) {
    rec.begin("b", blk);
    rec.end("b", blk);
  };
  BlockwiseTask c;  // reads b's output, no context
  c.name = "c";
  c.total_roi = box2(3, 37, 3, 37);
  c.read_roi = box2(0, 17, 0, 17);
  c.write_roi = box2(0, 17, 0, 17);
  c.upstream = {&b};
  c.process = [&](const Block& blk) {
    rec.begin("c", blk);
    rec.end("c", blk);
  };
  const BlockwiseReport r = run_blockwise({&c, &a});
  ASSERT_TRUE(r.ok()) << r.summary();
  ASSERT_EQ(r.tasks.size(), 3u);
  EXPECT_EQ(r.tasks[0].name, "a");
  EXPECT_EQ(r.tasks[1].name, "b");
  EXPECT_EQ(r.tasks[2].name, "c");
  EXPECT_EQ(r.task("a").done, 25);
  EXPECT_EQ(r.task("c").done, 4);
  int checked = 0;
  for (const auto& [kd, down] : rec.spans()) {
    const std::string up_task = kd.first == "b" ? "a" : kd.first == "c" ? "b" : "";
    if (up_task.empty()) continue;
    for (const auto& [ku, up] : rec.spans()) {
      if (ku.first != up_task || up.block.write_roi.intersect(down.block.read_roi).empty())
        continue;
      EXPECT_LT(up.end, down.start)
          << kd.first << " block " << down.block.read_roi.str() << " started before " << ku.first
          << " block " << up.block.write_roi.str() << " finished";
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(BlockwiseRun, EmptyTaskAndNestedCheckCancelledOutsideARun) {
  BlockwiseTask t;
  t.name = "empty";
  t.total_roi = box1(0, 5);
  t.read_roi = box1(0, 14);
  t.write_roi = box1(4, 10);
  t.process = [](const Block&) { FAIL() << "no block expected"; };
  const BlockwiseReport r = run_blockwise(t);
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.task("empty").blocks, 0);
  EXPECT_NO_THROW(check_cancelled());  // no token outside a block
}

}  // namespace
}  // namespace cellflow

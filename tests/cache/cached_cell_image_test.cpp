// CachedCellImage: lazy cells, single-flight loading, memory budget, reload of
// evicted persisted cells, corruption recovery, errors.
#include "cellflow/cache/cached_cell_image.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/memory_cache.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

using test::TempDir;

// The voxel value of the test image: a function of global coordinates.
int32_t voxel(const Dims& g) { return static_cast<int32_t>(g[0] * 10000 + g[1] * 100 + g[2]); }

CellBuffer fill(const Box& box) {
  CellBuffer b = CellBuffer::allocate(DType::kI32, box.shape());
  int32_t* p = b.mutable_as<int32_t>();
  for_each_index(box, [&](const Dims& g) { *p++ = voxel(g); });
  return b;
}

// Counts calls per cell.
struct Counter {
  std::mutex mu;
  std::map<int64_t, int> calls;
  std::atomic<int> total{0};
  int of(int64_t linear) {
    std::lock_guard lock(mu);
    return calls[linear];
  }
};

CachedCellImage::ComputeFn counting(
    Counter& counter, const CellGrid& grid,
    std::chrono::milliseconds delay = std::chrono::milliseconds(0)) {
  return [&counter, grid, delay](const CellIndex& cell, const Box& box) {
    {
      std::lock_guard lock(counter.mu);
      ++counter.calls[grid.linear(cell)];
    }
    ++counter.total;
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    return fill(box);
  };
}

const CellGrid kGrid({20, 24, 30}, {8, 8, 8});  // 3 x 3 x 4 cells, edge cells on every axis

TEST(CachedCellImage, GetComputesOnceAndServesFromMemory) {
  MemoryCache mem(64 << 20);
  Counter counter;
  CachedCellImage img("test", kGrid, DType::kI32, counting(counter, kGrid), nullptr, &mem);
  EXPECT_EQ(img.name(), "test");
  EXPECT_EQ(img.grid(), kGrid);
  EXPECT_EQ(img.dtype(), DType::kI32);
  EXPECT_FALSE(img.available({1, 1, 1}));
  const CellBuffer a = img.get({1, 1, 1});
  EXPECT_TRUE(img.available({1, 1, 1}));
  EXPECT_TRUE(test::same_bytes(a, fill(kGrid.cell_box({1, 1, 1}))));
  const CellBuffer b = img.get({1, 1, 1});
  EXPECT_EQ(a.data(), b.data()) << "the same buffer, not a recomputation";
  const CellBuffer edge = img.get({2, 2, 3});
  EXPECT_EQ(edge.shape(), (Dims{4, 8, 6}));
  EXPECT_EQ(counter.total.load(), 2);
  const CellImageStats s = img.stats();
  EXPECT_EQ(s.computed, 2);
  EXPECT_EQ(s.loaded, 0);
  EXPECT_EQ(s.memory_hits, 1);
  EXPECT_THROW(img.get({3, 0, 0}), InvalidArgument);
  EXPECT_THROW(img.get({0, 0}), InvalidArgument);
  EXPECT_THROW(img.get({-1, 0, 0}), InvalidArgument);
}

TEST(CachedCellImage, SingleFlightEightThreadsOneCell) {
  MemoryCache mem(64 << 20);
  Counter counter;
  CachedCellImage img("test", kGrid, DType::kI32,
                      counting(counter, kGrid, std::chrono::milliseconds(100)), nullptr, &mem);
  std::vector<std::thread> threads;
  std::vector<CellBuffer> results(8);
  std::atomic<int> ready{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      ++ready;
      while (ready.load() < 8) std::this_thread::yield();
      results[static_cast<size_t>(t)] = img.get({1, 2, 0});
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(counter.total.load(), 1)
      << "concurrent readers of one cell must wait for one computation";
  EXPECT_EQ(img.stats().computed, 1);
  for (const auto& r : results) EXPECT_TRUE(test::same_bytes(r, fill(kGrid.cell_box({1, 2, 0}))));
}

TEST(CachedCellImage, SingleFlightManyThreadsAllCells) {
  MemoryCache mem(64 << 20);
  Counter counter;
  CachedCellImage img("test", kGrid, DType::kI32,
                      counting(counter, kGrid, std::chrono::milliseconds(2)), nullptr, &mem);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int64_t i = 0; i < kGrid.num_cells(); ++i) {
        const int64_t c = (i * 5 + t * 7) % kGrid.num_cells();
        const CellBuffer b = img.get(kGrid.cell_at(c));
        EXPECT_EQ(b.as<int32_t>()[0], voxel(kGrid.cell_box(kGrid.cell_at(c)).begin()));
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(counter.total.load(), kGrid.num_cells());
  for (int64_t c = 0; c < kGrid.num_cells(); ++c) EXPECT_EQ(counter.of(c), 1) << c;
}

TEST(CachedCellImage, ReadAssemblesRegionsAcrossCells) {
  MemoryCache mem(64 << 20);
  Counter counter;
  CachedCellImage img("test", kGrid, DType::kI32, counting(counter, kGrid), nullptr, &mem);
  const Box region({5, 7, 20}, {19, 17, 30});  // crosses cells and the last edge cell
  const CellBuffer got = img.read(region);
  EXPECT_TRUE(test::same_bytes(got, fill(region)));
  // Only the cells the region touches were computed: z 0..2, y 0..2, x 2..3.
  EXPECT_EQ(counter.total.load(), 3 * 3 * 2);
  for (int64_t c = 0; c < kGrid.num_cells(); ++c) {
    const CellIndex cell = kGrid.cell_at(c);
    const bool touched = !kGrid.cell_box(cell).intersect(region).empty();
    EXPECT_EQ(counter.of(c), touched ? 1 : 0) << cell.str();
  }
  // The whole image, into a caller's buffer.
  std::vector<int32_t> all(static_cast<size_t>(kGrid.bounds().volume()));
  img.read_into(kGrid.bounds(), all.data());
  EXPECT_EQ(all[0], 0);
  EXPECT_EQ(all.back(), voxel({19, 23, 29}));
  EXPECT_EQ(counter.total.load(), kGrid.num_cells());
  EXPECT_THROW(img.read(Box({0, 0, 0}, {21, 1, 1})), InvalidArgument);
}

// read_shared: a region that is exactly one cell (edge cells too) is the
// cached buffer itself; any other region is a copy, as read() gives.
TEST(CachedCellImage, ASharedReadOfOneWholeCellIsTheCellItself) {
  MemoryCache mem(64 << 20);
  Counter counter;
  CachedCellImage img("test", kGrid, DType::kI32, counting(counter, kGrid), nullptr, &mem);
  for (const CellIndex& cell : {CellIndex{0, 0, 0}, CellIndex{2, 2, 3}}) {
    const Box box = kGrid.cell_box(cell);
    const CellBuffer shared = img.read_shared(box);
    EXPECT_EQ(shared.data(), img.get(cell).data()) << cell.str();
    EXPECT_TRUE(test::same_bytes(shared, fill(box)));
  }
  const Box part({0, 0, 0}, {8, 8, 7});  // inside one cell, not all of it
  const CellBuffer copy = img.read_shared(part);
  EXPECT_NE(copy.data(), img.get(CellIndex{0, 0, 0}).data());
  EXPECT_TRUE(test::same_bytes(copy, fill(part)));
  // release() drops a cell from memory; the next read computes it again.
  EXPECT_EQ(counter.of(0), 1);
  img.release(CellIndex{0, 0, 0});
  EXPECT_TRUE(test::same_bytes(img.read_shared(kGrid.cell_box(CellIndex{0, 0, 0})),
                               fill(kGrid.cell_box(CellIndex{0, 0, 0}))));
  EXPECT_EQ(counter.of(0), 2);
}

TEST(CachedCellImage, EvictedPersistedCellIsReloadedNotRecomputed) {
  TempDir tmp;
  const size_t cell_bytes = 8 * 8 * 8 * 4;
  MemoryCache mem(cell_bytes + cell_bytes / 2);  // room for one full cell
  Counter counter;
  auto store = ZarrArray::create(tmp / "arr", DType::kI32, kGrid);
  CachedCellImage img("test", kGrid, DType::kI32, counting(counter, kGrid), store, &mem);
  CellBuffer a0 = img.get({0, 0, 0});
  EXPECT_TRUE(store->contains({0, 0, 0})) << "computed cells are persisted";
  img.get({0, 0, 1});  // a0 is held: not evicted
  EXPECT_EQ(img.stats().computed, 2);
  const CellBuffer expected = fill(kGrid.cell_box({0, 0, 0}));
  EXPECT_TRUE(test::same_bytes(a0, expected));
  // Release a0 and push it out of memory with other cells.
  a0 = CellBuffer();
  img.get({0, 1, 0});
  img.get({0, 1, 1});
  EXPECT_GT(mem.stats().evictions, 0);
  const CellBuffer again = img.get({0, 0, 0});
  EXPECT_TRUE(test::same_bytes(again, expected));
  EXPECT_EQ(counter.of(kGrid.linear({0, 0, 0})), 1) << "an evicted persisted cell must be reloaded";
  EXPECT_EQ(img.stats().computed, 4);
  EXPECT_EQ(img.stats().loaded, 1);
}

TEST(CachedCellImage, EvictedMemoryOnlyCellIsRecomputed) {
  const size_t cell_bytes = 8 * 8 * 8 * 4;
  MemoryCache mem(cell_bytes + cell_bytes / 2);
  Counter counter;
  CachedCellImage img("test", kGrid, DType::kI32, counting(counter, kGrid), nullptr, &mem);
  img.get({0, 0, 0});
  img.get({0, 0, 1});
  img.get({0, 1, 0});
  img.get({0, 0, 0});
  EXPECT_EQ(counter.of(kGrid.linear({0, 0, 0})), 2);
  EXPECT_EQ(img.stats().loaded, 0);
}

TEST(CachedCellImage, HeldCellStaysInMemory) {
  const size_t cell_bytes = 8 * 8 * 8 * 4;
  MemoryCache mem(cell_bytes);
  Counter counter;
  CachedCellImage img("test", kGrid, DType::kI32, counting(counter, kGrid), nullptr, &mem);
  const CellBuffer held = img.get({0, 0, 0});
  for (int64_t c = 1; c < 6; ++c) img.get(kGrid.cell_at(c));
  const CellBuffer again = img.get({0, 0, 0});
  EXPECT_EQ(again.data(), held.data());
  EXPECT_EQ(counter.of(0), 1);
}

TEST(CachedCellImage, SecondImageOnSameStoreLoadsInsteadOfComputing) {
  TempDir tmp;
  MemoryCache mem(64 << 20);
  Counter first, second;
  {
    auto store = ZarrArray::create(tmp / "arr", DType::kI32, kGrid);
    CachedCellImage img("a", kGrid, DType::kI32, counting(first, kGrid), store, &mem);
    img.read(kGrid.bounds());
  }
  EXPECT_EQ(first.total.load(), kGrid.num_cells());
  EXPECT_EQ(mem.stats().entries, 0) << "a destroyed image releases its memory entries";
  auto store = ZarrArray::open(tmp / "arr");
  CachedCellImage img("b", kGrid, DType::kI32, counting(second, kGrid), store, &mem);
  for (int64_t c = 0; c < kGrid.num_cells(); ++c) EXPECT_TRUE(img.available(kGrid.cell_at(c)));
  // ensure() on committed cells neither computes nor loads.
  for (int64_t c = 0; c < kGrid.num_cells(); ++c) EXPECT_FALSE(img.ensure(kGrid.cell_at(c)));
  EXPECT_EQ(img.stats().loaded, 0);
  EXPECT_TRUE(test::same_bytes(img.read(kGrid.bounds()), fill(kGrid.bounds())));
  EXPECT_EQ(second.total.load(), 0);
  EXPECT_EQ(img.stats().computed, 0);
  EXPECT_EQ(img.stats().loaded, kGrid.num_cells());
}

TEST(CachedCellImage, EnsureComputesMissingCells) {
  TempDir tmp;
  MemoryCache mem(64 << 20);
  Counter counter;
  auto store = ZarrArray::create(tmp / "arr", DType::kI32, kGrid);
  CachedCellImage img("a", kGrid, DType::kI32, counting(counter, kGrid), store, &mem);
  EXPECT_TRUE(img.ensure({2, 1, 3}));
  EXPECT_TRUE(store->contains({2, 1, 3}));
  EXPECT_FALSE(img.ensure({2, 1, 3}));
  EXPECT_EQ(counter.total.load(), 1);
}

TEST(CachedCellImage, CorruptStoredCellIsRecomputedNeverReturned) {
  TempDir tmp;
  MemoryCache mem(64 << 20);
  Counter first, second;
  const CellIndex cell{1, 1, 1};
  {
    auto store = ZarrArray::create(tmp / "arr", DType::kI32, kGrid);
    CachedCellImage img("a", kGrid, DType::kI32, counting(first, kGrid), store, &mem);
    img.get(cell);
  }
  const auto file = ZarrArray::open(tmp / "arr")->cell_path(cell);
  std::string bytes = test::read_all(file);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0xff);
  test::write_all(file, bytes);

  auto store = ZarrArray::open(tmp / "arr");
  CachedCellImage img("b", kGrid, DType::kI32, counting(second, kGrid), store, &mem);
  const CellBuffer got = img.get(cell);
  EXPECT_TRUE(test::same_bytes(got, fill(kGrid.cell_box(cell))));
  EXPECT_EQ(second.total.load(), 1);
  EXPECT_EQ(img.stats().corrupt, 1);
  EXPECT_EQ(img.stats().computed, 1);
  // The recomputed cell was committed again, intact.
  auto reread = ZarrArray::open(tmp / "arr")->read(cell);
  ASSERT_TRUE(reread.has_value());
  EXPECT_TRUE(test::same_bytes(*reread, fill(kGrid.cell_box(cell))));
}

TEST(CachedCellImage, ComputeErrorsCarryTheCellAndAreRetried) {
  MemoryCache mem(64 << 20);
  std::atomic<int> calls{0};
  CachedCellImage img(
      "node \"bad\"", kGrid, DType::kI32,
      [&](const CellIndex&, const Box& box) -> CellBuffer {
        if (calls++ == 0) throw std::runtime_error("flaky failure");
        return fill(box);
      },
      nullptr, &mem);
  try {
    img.get({1, 2, 3});
    FAIL() << "no throw";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("flaky failure"), std::string::npos) << what;
    EXPECT_NE(what.find("(1,2,3)"), std::string::npos) << what;
    EXPECT_NE(what.find("bad"), std::string::npos) << what;
  }
  // A failure is not cached: the next get computes again.
  EXPECT_TRUE(test::same_bytes(img.get({1, 2, 3}), fill(kGrid.cell_box({1, 2, 3}))));
  EXPECT_EQ(calls.load(), 2);
}

TEST(CachedCellImage, WrongShapeFromComputeIsAnError) {
  MemoryCache mem(64 << 20);
  CachedCellImage img(
      "x", kGrid, DType::kI32,
      [](const CellIndex&, const Box&) {
        return CellBuffer::zeros(DType::kI32, {8, 8, 8});
      },
      nullptr, &mem);
  EXPECT_NO_THROW(img.get({0, 0, 0}));
  EXPECT_THROW(img.get({2, 2, 3}), NodeError);  // an edge cell is 4 x 8 x 6
  CachedCellImage img2(
      "y", kGrid, DType::kI32,
      [](const CellIndex&, const Box& box) { return CellBuffer::zeros(DType::kF32, box.shape()); },
      nullptr, &mem);
  EXPECT_THROW(img2.get({0, 0, 0}), NodeError);
}

// A viewer's read: returns at once with what is in memory, the rest filled
// and listed; the missing cells arrive in the background and are announced.
TEST(CachedCellImage, ReadAvailableNeverWaitsAndFillsInLater) {
  Counter counter;
  MemoryCache mem(1 << 26);
  std::atomic<bool> release{false};
  // Cells block until released: a read that waited for them would hang.
  CachedCellImage img(
      "viewer", kGrid, DType::kI32,
      [&](const CellIndex& cell, const Box& box) {
        while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return counting(counter, kGrid)(cell, box);
      },
      nullptr, &mem);
  release = true;
  (void)img.get({0, 0, 0});  // one cell in memory
  release = false;
  const Box region({4, 4, 4}, {12, 12, 12});  // touches 8 cells, (0,0,0) among them
  std::mutex mu;
  std::vector<CellIndex> arrived;
  std::condition_variable cv;
  const auto partial =
      img.read_available(region, -7.0, [&](const CellIndex& c, std::exception_ptr e) {
        EXPECT_FALSE(e);
        std::lock_guard lock(mu);
        arrived.push_back(c);
        cv.notify_all();
      });
  ASSERT_EQ(partial.missing.size(), 7u);
  EXPECT_FALSE(partial.complete());
  const CellBuffer truth = fill(region);
  const int32_t* got = partial.data.as<int32_t>();
  const int32_t* want = truth.as<int32_t>();
  int64_t from_memory = 0, filled = 0;
  int64_t i = 0;
  for_each_index(region, [&](const Dims& g) {
    const bool in_first = g[0] < 8 && g[1] < 8 && g[2] < 8;
    if (in_first) {
      EXPECT_EQ(got[i], want[i]);
      ++from_memory;
    } else {
      EXPECT_EQ(got[i], -7);
      ++filled;
    }
    ++i;
  });
  EXPECT_EQ(from_memory, 4 * 4 * 4);
  EXPECT_EQ(filled, region.volume() - 4 * 4 * 4);
  // A second call while they are fetched asks for nothing twice.
  const auto again = img.read_available(region, 0.0, [&](const CellIndex&, std::exception_ptr) {});
  EXPECT_EQ(again.missing.size(), 7u);
  release = true;
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return arrived.size() == 7; }));
  }
  const auto done = img.read_available(region, -7.0);
  EXPECT_TRUE(done.complete());
  EXPECT_TRUE(test::same_bytes(done.data, truth));
  EXPECT_EQ(counter.total.load(), 8) << "each cell computed once";
}

}  // namespace
}  // namespace cellflow

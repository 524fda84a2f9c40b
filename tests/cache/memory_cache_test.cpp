// MemoryCache: byte budget, LRU eviction order, held buffers never evicted, stats.
#include "cellflow/cache/memory_cache.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cstring>
#include <thread>
#include <vector>

#include "cellflow/cache/cell_buffer.hpp"

namespace cellflow {
namespace {

CellBuffer bytes(int64_t n, uint8_t fill = 0) {
  CellBuffer b = CellBuffer::allocate(DType::kU8, {n});
  for (int64_t i = 0; i < n; ++i) b.mutable_as<uint8_t>()[i] = fill;
  return b;
}

bool present(MemoryCache& c, uint64_t owner, int64_t cell) {
  return c.find(owner, cell).has_value();
}

TEST(MemoryCache, InsertFindAndStats) {
  MemoryCache cache(1000);
  EXPECT_EQ(cache.budget(), 1000u);
  const uint64_t a = cache.new_owner();
  const uint64_t b = cache.new_owner();
  EXPECT_NE(a, b);
  cache.insert(a, 0, bytes(100, 1));
  cache.insert(b, 0, bytes(200, 2));  // same cell number, other owner
  auto s = cache.stats();
  EXPECT_EQ(s.used_bytes, 300u);
  EXPECT_EQ(s.entries, 2);
  EXPECT_EQ(s.budget_bytes, 1000u);
  auto hit = cache.find(a, 0);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->num_bytes(), 100u);
  EXPECT_EQ(hit->as<uint8_t>()[0], 1);
  EXPECT_EQ(cache.find(b, 0)->as<uint8_t>()[0], 2);
  EXPECT_FALSE(cache.find(a, 1).has_value());
  s = cache.stats();
  EXPECT_EQ(s.hits, 2);
  EXPECT_EQ(s.misses, 1);
  EXPECT_EQ(s.evictions, 0);
  // Replacing an entry does not double count it.
  cache.insert(a, 0, bytes(150, 3));
  EXPECT_EQ(cache.stats().used_bytes, 350u);
  EXPECT_EQ(cache.stats().entries, 2);
  EXPECT_EQ(cache.stats().peak_bytes, 350u);
  cache.erase(a, 0);
  EXPECT_EQ(cache.stats().used_bytes, 200u);
  EXPECT_FALSE(present(cache, a, 0));
}

TEST(MemoryCache, EvictsLeastRecentlyUsedFirst) {
  MemoryCache cache(1000);
  const uint64_t o = cache.new_owner();
  cache.insert(o, 0, bytes(300));
  cache.insert(o, 1, bytes(300));
  cache.insert(o, 2, bytes(300));
  EXPECT_EQ(cache.stats().evictions, 0);
  // Touch 0: now 1 is the least recently used.
  ASSERT_TRUE(cache.find(o, 0).has_value());
  cache.insert(o, 3, bytes(300));  // 1200 > 1000: one must go
  EXPECT_EQ(cache.stats().evictions, 1);
  EXPECT_EQ(cache.stats().used_bytes, 900u);
  EXPECT_FALSE(present(cache, o, 1));
  EXPECT_TRUE(present(cache, o, 0));
  EXPECT_TRUE(present(cache, o, 2));
  EXPECT_TRUE(present(cache, o, 3));
  // The order of use is now 0 (oldest) ... 2, 3 after the finds above: touch 0 again
  // last so that 2 is the oldest.
  ASSERT_TRUE(cache.find(o, 3).has_value());
  ASSERT_TRUE(cache.find(o, 0).has_value());
  cache.insert(o, 4, bytes(300));
  EXPECT_FALSE(present(cache, o, 2));
  EXPECT_TRUE(present(cache, o, 0));
  EXPECT_TRUE(present(cache, o, 3));
  EXPECT_TRUE(present(cache, o, 4));
  EXPECT_EQ(cache.stats().evictions, 2);
  EXPECT_LE(cache.stats().used_bytes, 1000u);
}

TEST(MemoryCache, NeverEvictsAHeldBuffer) {
  MemoryCache cache(1000);
  const uint64_t o = cache.new_owner();
  CellBuffer held = bytes(400, 9);
  cache.insert(o, 0, held);  // we keep a reference: in use
  cache.insert(o, 1, bytes(400));
  cache.insert(o, 2, bytes(400));  // over budget: 0 is oldest but held, so 1 goes
  EXPECT_TRUE(present(cache, o, 0));
  EXPECT_FALSE(present(cache, o, 1));
  EXPECT_TRUE(present(cache, o, 2));
  // Everything else held too: the cache may exceed its budget rather than drop them.
  CellBuffer held2 = *cache.find(o, 2);
  CellBuffer held3 = bytes(400);
  cache.insert(o, 3, held3);
  EXPECT_TRUE(present(cache, o, 0));
  EXPECT_TRUE(present(cache, o, 2));
  EXPECT_TRUE(present(cache, o, 3));
  EXPECT_EQ(cache.stats().used_bytes, 1200u);
  EXPECT_GE(cache.stats().peak_bytes, 1200u);
  // Released buffers become evictable again on the next pressure.
  held = CellBuffer();
  held2 = CellBuffer();
  cache.set_budget(500);
  EXPECT_FALSE(present(cache, o, 0));
  EXPECT_FALSE(present(cache, o, 2));
  EXPECT_TRUE(present(cache, o, 3));  // still held
  EXPECT_EQ(cache.stats().used_bytes, 400u);
  // A found buffer still holds its data after eviction.
  EXPECT_EQ(held3.as<uint8_t>()[0], 0);
}

TEST(MemoryCache, SetBudgetClearAndEraseOwner) {
  MemoryCache cache(10000);
  const uint64_t a = cache.new_owner();
  const uint64_t b = cache.new_owner();
  for (int i = 0; i < 5; ++i) {
    cache.insert(a, i, bytes(100));
    cache.insert(b, i, bytes(100));
  }
  EXPECT_EQ(cache.stats().used_bytes, 1000u);
  cache.set_budget(600);
  EXPECT_EQ(cache.budget(), 600u);
  EXPECT_LE(cache.stats().used_bytes, 600u);
  EXPECT_EQ(cache.stats().evictions, 4);
  // The oldest inserts went first: a0 b0 a1 b1.
  EXPECT_FALSE(present(cache, a, 0));
  EXPECT_FALSE(present(cache, b, 1));
  EXPECT_TRUE(present(cache, a, 2));
  cache.erase_owner(a);
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(present(cache, a, i));
  EXPECT_TRUE(present(cache, b, 4));
  CellBuffer held = *cache.find(b, 4);
  cache.clear();
  EXPECT_TRUE(present(cache, b, 4)) << "clear() keeps held entries";
  EXPECT_FALSE(present(cache, b, 3));
  EXPECT_EQ(cache.stats().used_bytes, 100u);
}

TEST(MemoryCache, ConcurrentUseStaysWithinBudget) {
  MemoryCache cache(64 * 1024);
  const uint64_t o = cache.new_owner();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        const int64_t cell = (i * 7 + t) % 500;
        if (auto hit = cache.find(o, cell)) {
          EXPECT_EQ(hit->as<uint8_t>()[0], static_cast<uint8_t>(cell));
        } else {
          cache.insert(o, cell, bytes(1024, static_cast<uint8_t>(cell)));
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(cache.stats().used_bytes, 64u * 1024u);
  EXPECT_GT(cache.stats().evictions, 0);
  EXPECT_EQ(static_cast<size_t>(cache.stats().entries) * 1024u, cache.stats().used_bytes);
}

TEST(MemoryCache, GlobalIsOneInstance) {
  // What one caller puts in the global cache, another call finds: one store
  // (comparing the two references' addresses could not tell).
  const uint64_t owner = MemoryCache::global().new_owner();
  MemoryCache::global().insert(owner, 3, bytes(256, 42));
  const auto found = MemoryCache::global().find(owner, 3);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->num_bytes(), 256u);
  EXPECT_EQ(std::to_integer<int>(found->data()[255]), 42);
  MemoryCache::global().erase(owner, 3);
  EXPECT_FALSE(present(MemoryCache::global(), owner, 3));
  EXPECT_GT(MemoryCache::global().budget(), 0u);
}

// Restores the buffer pool's limit when a test ends.
struct PoolLimitGuard {
  size_t saved = CellBuffer::pool_limit();
  ~PoolLimitGuard() { CellBuffer::set_pool_limit(saved); }
};

TEST(CellBufferPool, AFreedLargeBufferIsReusedForTheSameSize) {
  const PoolLimitGuard guard;
  CellBuffer::set_pool_limit(size_t{8} << 20);
  const std::byte* first = nullptr;
  {
    CellBuffer a = CellBuffer::allocate(DType::kF32, Shape{64, 64, 16});  // 256 KiB
    first = a.data();
    a.mutable_as<float>()[0] = 3.5F;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 64, 0u);
  }
  EXPECT_GE(CellBuffer::pool_bytes(), size_t{256} << 10);
  CellBuffer b = CellBuffer::allocate(DType::kF32, Shape{64, 64, 16});
  EXPECT_EQ(b.data(), first);  // warm memory, no new mapping
  // A different size is not served from that block.
  CellBuffer c = CellBuffer::allocate(DType::kF32, Shape{64, 64, 32});
  EXPECT_NE(c.data(), first);
  // zeros() really zeroes a reused block.
  b = CellBuffer();
  CellBuffer z = CellBuffer::zeros(DType::kF32, Shape{64, 64, 16});
  EXPECT_EQ(z.data(), first);
  for (int64_t i = 0; i < z.num_elements(); ++i) ASSERT_EQ(z.as<float>()[i], 0.0F) << i;
}

// A pooled block up to a quarter larger serves a smaller buffer whole (the
// padded inputs of border cells differ a little in size) and goes back whole.
TEST(CellBufferPool, ASlightlyLargerFreeBlockServesASmallerBuffer) {
  const PoolLimitGuard guard;
  CellBuffer::set_pool_limit(0);  // an empty pool: no block from earlier tests
  CellBuffer::set_pool_limit(size_t{8} << 20);
  const std::byte* first = nullptr;
  {
    CellBuffer a = CellBuffer::allocate(DType::kF32, Shape{64, 64, 20});  // 320 KiB
    first = a.data();
  }
  EXPECT_EQ(CellBuffer::pool_bytes(), size_t{320} << 10);
  {
    CellBuffer near = CellBuffer::allocate(DType::kF32, Shape{64, 64, 17});  // 272 KiB: 18 % less
    EXPECT_EQ(near.data(), first);
    EXPECT_EQ(CellBuffer::pool_bytes(), 0u);  // taken whole, not split
    near.mutable_as<float>()[near.num_elements() - 1] = 1.0F;
  }
  EXPECT_EQ(CellBuffer::pool_bytes(), size_t{320} << 10);
  CellBuffer again = CellBuffer::allocate(DType::kF32, Shape{64, 64, 20});
  EXPECT_EQ(again.data(), first);
}

// A much larger pooled block is split: its first part serves the buffer and
// the rest stays pooled (warm pages for e.g. u8 masks made after f32 cells were
// freed); the pieces come back as blocks of their own sizes.
TEST(CellBufferPool, AMuchLargerFreeBlockIsSplitToServeASmallerBuffer) {
  const PoolLimitGuard guard;
  CellBuffer::set_pool_limit(0);
  CellBuffer::set_pool_limit(size_t{8} << 20);
  constexpr int64_t kMiB = int64_t{1} << 20;
  const std::byte* first = nullptr;
  {
    CellBuffer a = CellBuffer::allocate(DType::kU8, Shape{kMiB});
    first = a.data();
  }
  EXPECT_EQ(CellBuffer::pool_bytes(), size_t{1} << 20);
  {
    CellBuffer q1 = CellBuffer::allocate(DType::kU8, Shape{kMiB / 4});
    EXPECT_EQ(q1.data(), first);
    EXPECT_EQ(CellBuffer::pool_bytes(), size_t{768} << 10);
    CellBuffer q2 = CellBuffer::allocate(DType::kU8, Shape{kMiB / 4});
    EXPECT_EQ(q2.data(), first + kMiB / 4);  // the rest of the same block
    EXPECT_EQ(CellBuffer::pool_bytes(), size_t{512} << 10);
    // Both pieces are usable to their last byte and do not overlap.
    std::memset(q1.mutable_data(), 1, static_cast<size_t>(kMiB / 4));
    std::memset(q2.mutable_data(), 2, static_cast<size_t>(kMiB / 4));
    EXPECT_EQ(q1.as<uint8_t>()[kMiB / 4 - 1], 1);
    EXPECT_EQ(q2.as<uint8_t>()[0], 2);
  }
  EXPECT_EQ(CellBuffer::pool_bytes(), size_t{1} << 20);
  // The pieces are not joined again: a 1 MiB buffer gets pages of its own.
  CellBuffer whole = CellBuffer::allocate(DType::kU8, Shape{kMiB});
  EXPECT_TRUE(whole.data() < first || whole.data() >= first + kMiB);
  EXPECT_EQ(CellBuffer::pool_bytes(), size_t{1} << 20);
}

// A new block is mapped populated: filling a cell does not trap once per page
// (on this VM a page fault cost ~5 us, a quarter of a cold run's CPU).
TEST(CellBufferPool, ANewBufferIsResidentBeforeItIsWritten) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "a sanitizer's shadow memory faults in when the cell is first written";
#endif
  const PoolLimitGuard guard;
  CellBuffer::set_pool_limit(0);  // no warm block: this one is mapped now
  constexpr int64_t kBytes = int64_t{8} << 20;
  CellBuffer b = CellBuffer::allocate(DType::kU8, Shape{kBytes});
  const auto minor_faults = [] {
    rusage ru{};
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_minflt;
  };
  const long before = minor_faults();
  std::memset(b.mutable_data(), 7, static_cast<size_t>(kBytes));
  const long faults = minor_faults() - before;
  // 2048 pages of 4 KiB; a handful of faults elsewhere are tolerated.
  EXPECT_LT(faults, 64) << "writing a new 8 MiB cell took " << faults << " page faults";
  EXPECT_EQ(std::to_integer<int>(b.data()[kBytes - 1]), 7);
}

TEST(CellBufferPool, KeepsAtMostItsLimitDroppingTheOldestFirst) {
  const PoolLimitGuard guard;
  CellBuffer::set_pool_limit(0);
  EXPECT_EQ(CellBuffer::pool_bytes(), 0u);
  constexpr size_t kBlock = size_t{128} << 10;
  CellBuffer::set_pool_limit(3 * kBlock);
  std::vector<CellBuffer> bufs;
  std::vector<const std::byte*> addresses;
  for (int i = 0; i < 5; ++i) {
    bufs.push_back(CellBuffer::allocate(DType::kU8, Shape{static_cast<int64_t>(kBlock)}));
    addresses.push_back(bufs.back().data());
  }
  bufs.clear();  // frees 0..4 in order: 0 and 1 are dropped, 2..4 kept
  EXPECT_EQ(CellBuffer::pool_bytes(), 3 * kBlock);
  // Most recently freed first.
  CellBuffer again = CellBuffer::allocate(DType::kU8, Shape{static_cast<int64_t>(kBlock)});
  EXPECT_EQ(again.data(), addresses[4]);
  EXPECT_EQ(CellBuffer::pool_bytes(), 2 * kBlock);
  CellBuffer::set_pool_limit(0);
  EXPECT_EQ(CellBuffer::pool_bytes(), 0u);
}

TEST(CellBufferPool, ManyThreadsAllocatingAndFreeingStayWithinTheLimit) {
  const PoolLimitGuard guard;
  constexpr size_t kLimit = size_t{1} << 20;
  CellBuffer::set_pool_limit(kLimit);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 200; ++i) {
        const int64_t n = (int64_t{64} << 10) * (1 + (i + t) % 3);
        CellBuffer b = CellBuffer::allocate(DType::kU8, Shape{n});
        std::memset(b.mutable_data(), t, static_cast<size_t>(n));
        ASSERT_EQ(b.as<uint8_t>()[n - 1], t);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(CellBuffer::pool_bytes(), kLimit);
}

#if defined(__SANITIZE_ADDRESS__)
// Pooled blocks stay mapped, so without poisoning ASan could not see a read of
// a freed cell buffer (or past the end of a live one).
TEST(CellBufferPoolDeathTest, ASanReportsUseAfterFreeAndOverflow) {
  const PoolLimitGuard guard;
  CellBuffer::set_pool_limit(size_t{8} << 20);
  EXPECT_DEATH(
      {
        const std::byte* p = nullptr;
        {
          const CellBuffer b = CellBuffer::allocate(DType::kU8, Shape{(int64_t{64} << 10) + 100});
          p = b.data();
        }
        const volatile std::byte x = p[10];
        (void)x;
      },
      "use-after-poison");
  EXPECT_DEATH(
      {
        const CellBuffer b = CellBuffer::allocate(DType::kU8, Shape{(int64_t{64} << 10) + 100});
        const volatile std::byte x = b.data()[(int64_t{64} << 10) + 100];
        (void)x;
      },
      "use-after-poison");
}
#endif

TEST(CellBufferPool, TheGlobalBudgetSetsThePoolLimit) {
  const PoolLimitGuard guard;
  const size_t budget = MemoryCache::global().budget();
  MemoryCache::global().set_budget(size_t{256} << 20);
  EXPECT_EQ(CellBuffer::pool_limit(), size_t{32} << 20);
  MemoryCache::global().set_budget(size_t{64} << 20);
  EXPECT_EQ(CellBuffer::pool_limit(), size_t{16} << 20);
  MemoryCache::global().set_budget(budget);
}

}  // namespace
}  // namespace cellflow

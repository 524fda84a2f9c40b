// MemoryCache: byte budget, LRU eviction order, held buffers never evicted, stats.
#include "cellflow/cache/memory_cache.hpp"

#include <gtest/gtest.h>

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
  EXPECT_EQ(&MemoryCache::global(), &MemoryCache::global());
  EXPECT_GT(MemoryCache::global().budget(), 0u);
}

}  // namespace
}  // namespace cellflow

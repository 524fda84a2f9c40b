#include "cellflow/cache/memory_cache.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <list>
#include <mutex>
#include <unordered_map>

#include "cellflow/cache/error.hpp"

namespace cellflow {
namespace {

struct Key {
  uint64_t owner;
  int64_t cell;
  bool operator==(const Key&) const = default;
};

struct KeyHash {
  size_t operator()(const Key& k) const noexcept {
    uint64_t h = k.owner * 0x9E3779B97F4A7C15ULL ^ static_cast<uint64_t>(k.cell);
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ULL;
    return static_cast<size_t>(h ^ (h >> 29));
  }
};

struct Entry {
  Key key;
  CellBuffer buffer;
};

}  // namespace

struct MemoryCache::Impl {
  mutable std::mutex mu;
  size_t budget;
  size_t used = 0;
  size_t peak = 0;
  int64_t hits = 0, misses = 0, evictions = 0;
  std::list<Entry> lru;  // front = most recently used
  std::unordered_map<Key, std::list<Entry>::iterator, KeyHash> index;
  std::atomic<uint64_t> next_owner{1};

  void drop(std::list<Entry>::iterator it) {
    used -= it->buffer.num_bytes();
    index.erase(it->key);
    lru.erase(it);
  }

  // Evicts least recently used entries that nobody else holds until within budget.
  void evict() {
    auto it = lru.end();
    while (used > budget && it != lru.begin()) {
      --it;
      if (it->buffer.use_count() > 1) continue;  // held by a reader: keep
      auto victim = it++;
      drop(victim);
      ++evictions;
    }
  }
};

namespace {
// Freed cell buffers kept for reuse (CellBuffer::set_pool_limit): an eighth of
// the process's budget, between 16 and 256 MiB.
size_t pool_limit_for(size_t budget) {
  return std::clamp(budget / 8, size_t{16} << 20, size_t{256} << 20);
}
}  // namespace

MemoryCache& MemoryCache::global() {
  static MemoryCache& cache = []() -> MemoryCache& {
    // Read once, at first use; cellflow itself never calls setenv.
    const char* env = std::getenv("CELLFLOW_MEMORY");  // NOLINT(concurrency-mt-unsafe)
    static MemoryCache c(env != nullptr ? parse_size(env, "CELLFLOW_MEMORY") : size_t{2} << 30);
    CellBuffer::set_pool_limit(pool_limit_for(c.budget()));
    return c;
  }();
  return cache;
}

MemoryCache::MemoryCache(size_t budget_bytes) : impl_(std::make_unique<Impl>()) {
  impl_->budget = budget_bytes;
}

MemoryCache::~MemoryCache() = default;

void MemoryCache::set_budget(size_t bytes) {
  {
    std::lock_guard lock(impl_->mu);
    impl_->budget = bytes;
    impl_->evict();
  }
  if (this == &global()) CellBuffer::set_pool_limit(pool_limit_for(bytes));
}

size_t MemoryCache::budget() const {
  std::lock_guard lock(impl_->mu);
  return impl_->budget;
}

uint64_t MemoryCache::new_owner() { return impl_->next_owner.fetch_add(1); }

std::optional<CellBuffer> MemoryCache::find(uint64_t owner, int64_t cell) {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->index.find(Key{owner, cell});
  if (it == impl_->index.end()) {
    ++impl_->misses;
    return std::nullopt;
  }
  ++impl_->hits;
  impl_->lru.splice(impl_->lru.begin(), impl_->lru, it->second);
  return it->second->buffer;
}

void MemoryCache::insert(uint64_t owner, int64_t cell, CellBuffer buffer) {
  std::lock_guard lock(impl_->mu);
  const Key key{owner, cell};
  if (auto it = impl_->index.find(key); it != impl_->index.end()) impl_->drop(it->second);
  impl_->used += buffer.num_bytes();
  impl_->lru.push_front(Entry{key, std::move(buffer)});
  impl_->index.emplace(key, impl_->lru.begin());
  impl_->peak = std::max(impl_->peak, impl_->used);
  impl_->evict();
}

void MemoryCache::erase(uint64_t owner, int64_t cell) {
  std::lock_guard lock(impl_->mu);
  if (auto it = impl_->index.find(Key{owner, cell}); it != impl_->index.end())
    impl_->drop(it->second);
}

void MemoryCache::erase_owner(uint64_t owner) {
  std::lock_guard lock(impl_->mu);
  for (auto it = impl_->lru.begin(); it != impl_->lru.end();) {
    auto cur = it++;
    if (cur->key.owner == owner) impl_->drop(cur);
  }
}

void MemoryCache::clear() {
  std::lock_guard lock(impl_->mu);
  for (auto it = impl_->lru.begin(); it != impl_->lru.end();) {
    auto cur = it++;
    if (cur->buffer.use_count() == 1) impl_->drop(cur);
  }
}

MemoryCacheStats MemoryCache::stats() const {
  std::lock_guard lock(impl_->mu);
  return MemoryCacheStats{
      impl_->budget, impl_->used,   impl_->peak,     static_cast<int64_t>(impl_->lru.size()),
      impl_->hits,   impl_->misses, impl_->evictions};
}

size_t parse_size(const std::string& text, const std::string& what) {
  const auto bad = [&] {
    return InvalidArgument(fmt::format(
        "{}: cannot parse \"{}\" as a size (examples: 4096, 512M, 2G, 1.5GiB)", what, text));
  };
  size_t pos = 0;
  double number = 0;
  try {
    number = std::stod(text, &pos);
  } catch (const std::exception&) {
    throw bad();
  }
  if (!(number >= 0) || !std::isfinite(number)) throw bad();
  std::string unit;
  for (size_t i = pos; i < text.size(); ++i)
    if (!std::isspace(static_cast<unsigned char>(text[i])))
      unit += static_cast<char>(std::toupper(static_cast<unsigned char>(text[i])));
  double mult = 1;
  if (unit.empty() || unit == "B")
    mult = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB")
    mult = 1024.0;
  else if (unit == "M" || unit == "MB" || unit == "MIB")
    mult = 1024.0 * 1024;
  else if (unit == "G" || unit == "GB" || unit == "GIB")
    mult = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TB" || unit == "TIB")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else
    throw bad();
  return static_cast<size_t>(number * mult);
}

}  // namespace cellflow

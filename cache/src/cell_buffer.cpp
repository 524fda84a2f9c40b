#include "cellflow/cache/cell_buffer.hpp"

#include <fmt/format.h>
#include <sanitizer/asan_interface.h>  // no-op macros unless built with ASan
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "cellflow/cache/error.hpp"

namespace cellflow {
namespace {

// Buffers of at least this many bytes come from the pool below; smaller ones
// from malloc, whose arenas serve them without page faults.
constexpr size_t kPooledMin = size_t{64} << 10;
constexpr size_t kPage = 4096;

// Freed cell buffers, kept mapped for the next buffer of the same size.
//
// Why: glibc serves large blocks with mmap and unmaps them on free, so every
// new cell buffer would be faulted in page by page (cellflow-bench measured
// the ITK path 10-15 % slower than the bare loop because of it), and when its dynamic threshold
// moves them onto the heap instead, freed cells stay resident out of our
// sight. Here blocks are mapped by us, reused while warm (most recently freed
// first), and unmapped — returned to the system at once — when the pool
// exceeds its limit (oldest first). What the process holds is then the memory
// cache's budget plus at most this limit.
//
// Under AddressSanitizer a pooled block is poisoned while it waits and so is
// the page-rounding slack after a live buffer: a use after free or a read
// past the end of a cell is still reported, as it is for malloc'd memory.
class BufferPool {
 public:
  static BufferPool& global() {
    static auto* pool = new BufferPool();  // outlives every static CellBuffer
    return *pool;
  }

  /// A block of at least `bytes` (a multiple of the page size) of which the
  /// first `used` are the buffer's; `bytes` becomes the block's size. A pooled
  /// block up to a quarter larger serves whole: the padded inputs of cells at
  /// the image's faces, edges and corners differ a little in size, and a warm
  /// block beats fresh pages. One at least twice as large is split.
  void* take(size_t& bytes, size_t used) {
    void* p = nullptr;
    {
      std::lock_guard lock(mu_);
      // The smallest block up to a quarter larger; failing that, the smallest
      // at least twice as large, to be split. Blocks in between are left
      // alone: splitting them would leave pieces too small for the sizes that
      // alternate in a run (1 MiB cells and their 2 MiB padded inputs).
      auto it = by_size_.lower_bound(bytes);
      if (it != by_size_.end() && it->first > bytes + bytes / 4)
        it = by_size_.lower_bound(2 * bytes);
      if (it != by_size_.end()) {
        const auto block = it->second.back();
        it->second.pop_back();
        const size_t size = it->first;
        if (it->second.empty()) by_size_.erase(it);
        p = block->data;
        order_.erase(block);
        held_ -= size;
        if (size <= bytes + bytes / 4) {
          bytes = size;
        } else {
          // Its first `bytes` serve, the rest stays pooled as a block of its
          // own, still warm (e.g. u8 mask cells made from freed f32 cells).
          // Pages are unmapped one range at a time, so the pieces come and go
          // independently.
          add_locked(static_cast<std::byte*>(p) + bytes, size - bytes);
        }
      }
    }
    if (p == nullptr) {
      // Populated at once: the kernel fills the block in one call instead of
      // one trap per 4 KiB page on first write. On a VM a trap costs several
      // microseconds; a cold A64 run spent 0.4 s of its 1.0 s CPU in them.
      p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                 -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
    }
    ASAN_UNPOISON_MEMORY_REGION(p, used);
    ASAN_POISON_MEMORY_REGION(static_cast<std::byte*>(p) + used, bytes - used);
    return p;
  }

  void give(void* p, size_t bytes) {
    ASAN_POISON_MEMORY_REGION(p, bytes);
    std::vector<Block> drop;
    {
      std::lock_guard lock(mu_);
      if (bytes > limit_) {
        drop.push_back(Block{p, bytes});
      } else {
        add_locked(p, bytes);
        trim_locked(drop);
      }
    }
    for (const Block& b : drop) unmap(b);
  }

  void set_limit(size_t bytes) {
    std::vector<Block> drop;
    {
      std::lock_guard lock(mu_);
      limit_ = bytes;
      trim_locked(drop);
    }
    for (const Block& b : drop) unmap(b);
  }

  size_t limit() const {
    std::lock_guard lock(mu_);
    return limit_;
  }

  size_t held() const {
    std::lock_guard lock(mu_);
    return held_;
  }

 private:
  struct Block {
    void* data;
    size_t bytes;
  };
  using Order = std::list<Block>;

  static void unmap(const Block& b) {
    ASAN_UNPOISON_MEMORY_REGION(b.data, b.bytes);  // the range may be mapped again later
    ::munmap(b.data, b.bytes);
  }

  // Pools the block [p, p + bytes) as the most recently freed.
  void add_locked(void* p, size_t bytes) {
    order_.push_back(Block{p, bytes});
    by_size_[bytes].push_back(std::prev(order_.end()));
    held_ += bytes;
  }

  // Moves the oldest blocks into `drop` until at most limit_ bytes are held.
  void trim_locked(std::vector<Block>& drop) {
    while (held_ > limit_ && !order_.empty()) {
      const Block oldest = order_.front();
      // The oldest block of its size is the first of that size's stack.
      auto& stack = by_size_[oldest.bytes];
      stack.erase(stack.begin());
      if (stack.empty()) by_size_.erase(oldest.bytes);
      order_.pop_front();
      held_ -= oldest.bytes;
      drop.push_back(oldest);
    }
  }

  mutable std::mutex mu_;
  Order order_;  // every pooled block, least recently freed first
  std::map<size_t, std::vector<Order::iterator>> by_size_;  // never an empty stack
  size_t held_ = 0;
  size_t limit_ = size_t{64} << 20;
};

}  // namespace

CellBuffer CellBuffer::allocate(DType dtype, const Shape& shape) try {
  CellBuffer b;
  b.dtype_ = dtype;
  b.shape_ = shape;
  const size_t wanted = b.num_bytes();
  if (wanted >= kPooledMin) {
    size_t bytes = (wanted + kPage - 1) / kPage * kPage;
    void* p = BufferPool::global().take(bytes, wanted);
    b.data_ = std::shared_ptr<std::byte>(
        static_cast<std::byte*>(p), [bytes](std::byte* q) { BufferPool::global().give(q, bytes); });
    return b;
  }
  // Round up so that aligned_alloc's size requirement holds; never allocate 0.
  const size_t bytes = std::max<size_t>(64, (wanted + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  b.data_ =
      std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [](std::byte* q) { std::free(q); });
  return b;
} catch (const std::bad_alloc&) {
  // Say how much; the context added on the way out names the node and cell.
  throw Error(
      fmt::format("out of memory: cannot allocate {} bytes for a cell of {} {}",
                  static_cast<uint64_t>(std::max<int64_t>(shape.product(), 0)) * dtype_size(dtype),
                  dtype_name(dtype), shape.str()));
}

CellBuffer CellBuffer::zeros(DType dtype, const Shape& shape) {
  CellBuffer b = allocate(dtype, shape);
  std::memset(b.mutable_data(), 0, b.num_bytes());
  return b;
}

void CellBuffer::set_pool_limit(size_t bytes) { BufferPool::global().set_limit(bytes); }

size_t CellBuffer::pool_limit() { return BufferPool::global().limit(); }

size_t CellBuffer::pool_bytes() { return BufferPool::global().held(); }

bool CellBuffer::equals(const CellBuffer& o) const {
  if (dtype_ != o.dtype_ || !(shape_ == o.shape_)) return false;
  if (data_ == o.data_) return true;
  if (!data_ || !o.data_) return false;
  return std::memcmp(data(), o.data(), num_bytes()) == 0;
}

}  // namespace cellflow

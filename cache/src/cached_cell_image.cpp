#include "cellflow/cache/cached_cell_image.hpp"

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <limits>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/cache/memory_cache.hpp"
#include "cellflow/cache/parallel.hpp"
#include "cellflow/cache/trace.hpp"

namespace cellflow {
namespace {

// One in-flight production of a cell. The first caller (the winner) produces
// it; later callers wait for the result.
//
// Why not tbb::collaborative_call_once: with TBB 2021.8 its waiters enter the
// winner's arena, and application threads each have their own implicit arena
// with one external slot, so eight application threads reading one node
// deadlocked waiting for slots (tests/graph/singleton_test.cpp). Here the
// winner runs the producer inside this_task_arena::isolate, so while it waits
// for its own nested work it never picks up unrelated tasks; a waiter blocks.
// Waits follow the DAG (a cell only ever waits for cells of its inputs), so no
// cycle of waiters can form. The executor schedules a cell only after the
// input cells it reads, so in a run waits are rare.
struct Slot {
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;
  CellBuffer result;
  bool computed = false;
  std::exception_ptr error;
};

// Times one step of a cell for the trace sink (trace.hpp), when one is
// installed as the step starts; a step shorter than `min_seconds` is not
// reported (an uncontended lock is not a wait).
class TraceSpan {
 public:
  TraceSpan(CellTraceEvent::Kind kind, const std::string& image, const CellIndex& cell,
            double min_seconds = 0)
      : sink_(cell_trace_sink()), min_seconds_(min_seconds) {
    if (sink_ == nullptr) return;
    event_.kind = kind;
    event_.image = &image;
    event_.cell = &cell;
    event_.begin = std::chrono::steady_clock::now();
  }
  ~TraceSpan() {
    if (sink_ == nullptr) return;
    event_.end = std::chrono::steady_clock::now();
    if (std::chrono::duration<double>(event_.end - event_.begin).count() >= min_seconds_) {
      sink_->record(event_);
    }
  }
  TraceSpan(const TraceSpan&) = delete;
  TraceSpan& operator=(const TraceSpan&) = delete;
  void cancel() { sink_ = nullptr; }

 private:
  CellTraceSink* sink_;
  double min_seconds_;
  CellTraceEvent event_;
};

}  // namespace

struct CachedCellImage::Impl {
  std::string name;
  CellGrid grid;
  DType dtype;
  ComputeFn compute;
  std::shared_ptr<CellStore> store;
  MemoryCache* cache;
  uint64_t owner;
  bool variable_payload = false;

  std::mutex mu;
  std::unordered_map<int64_t, std::shared_ptr<Slot>> inflight;

  // read_available(): cells fetched in the background, with who to tell.
  std::mutex background_mu;
  std::unordered_map<int64_t, std::vector<CellReadyFn>> background_waiters;
  tbb::task_group background;

  std::atomic<int64_t> computed{0}, loaded{0}, memory_hits{0}, corrupt{0};

  std::string cell_frame(const CellIndex& cell) const { return "cell " + cell.str(); }

  // Loads the cell from the store, or computes (and commits) it.
  // The committed cell, or nullopt (a damaged file is reported and removed).
  std::optional<CellBuffer> load_stored(const CellIndex& cell, int64_t linear) {
    try {
      TraceSpan span(CellTraceEvent::Kind::kLoad, name, cell);
      auto stored = store->read(cell);
      if (!stored) span.cancel();
      if (stored) {
        loaded.fetch_add(1, std::memory_order_relaxed);
        cache->insert(owner, linear, *stored);
        return stored;
      }
    } catch (const CorruptionError& e) {
      corrupt.fetch_add(1, std::memory_order_relaxed);
      log_warning(fmt::format("{}: {}: {}; recomputing it", name, cell_frame(cell), e.what()));
      store->remove(cell);
    }
    return std::nullopt;
  }

  // `seen_missing`: the caller has just found no committed cell, so the look
  // before taking the lock is skipped (the look under it stays).
  CellBuffer produce(const CellIndex& cell, int64_t linear, bool& was_computed, bool seen_missing) {
    std::shared_ptr<void> cross_process_lock;
    if (store) {
      if (!seen_missing)
        if (auto stored = load_stored(cell, linear)) return *stored;
      // Another process may be computing this cell: wait for its lock, then
      // take its result if it committed one.
      cross_process_lock = with_context(name, [&] {
        // Taking a free lock costs microseconds; longer is a wait.
        TraceSpan span(CellTraceEvent::Kind::kWait, name, cell, 100e-6);
        return store->lock(cell);
      });
      if (cross_process_lock) {
        if (auto stored = load_stored(cell, linear)) return *stored;
      }
    }
    const Box box = grid.cell_box(cell);
    CellBuffer out = with_context(name, [&] {
      return with_context(cell_frame(cell), [&] {
        TraceSpan span(CellTraceEvent::Kind::kCompute, name, cell);
        return compute(cell, box);
      });
    });
    const bool shape_ok = variable_payload ? out.shape().rank() == 1 : out.shape() == box.shape();
    if (!out || out.dtype() != dtype || !shape_ok) {
      NodeError e(fmt::format("compute returned {} {} instead of {} {}",
                              out ? dtype_name(out.dtype()) : "nothing", out.shape().str(),
                              dtype_name(dtype), box.shape().str()));
      e.add_context(cell_frame(cell));
      e.add_context(name);
      throw e;
    }
    computed.fetch_add(1, std::memory_order_relaxed);
    was_computed = true;
    if (store) {
      TraceSpan span(CellTraceEvent::Kind::kStore, name, cell);
      with_context(name, [&] { with_context(cell_frame(cell), [&] { store->write(cell, out); }); });
    }
    cache->insert(owner, linear, out);
    return out;
  }

  // Single-flight: one producer per cell at a time in this process.
  CellBuffer load(const CellIndex& cell, int64_t linear, bool* was_computed,
                  bool seen_missing = false) {
    std::shared_ptr<Slot> slot;
    bool winner = false;
    {
      std::lock_guard lock(mu);
      auto& s = inflight[linear];
      if (!s) {
        s = std::make_shared<Slot>();
        winner = true;
      }
      slot = s;
    }
    if (!winner) {
      TraceSpan span(CellTraceEvent::Kind::kWait, name, cell);
      std::unique_lock lock(slot->mu);
      slot->cv.wait(lock, [&] { return slot->finished; });
      if (slot->error) std::rethrow_exception(slot->error);
      if (was_computed != nullptr) *was_computed = false;
      return slot->result;
    }
    CellBuffer result;
    bool computed = false;
    std::exception_ptr error;
    try {
      tbb::this_task_arena::isolate([&] {
        // A flight that just finished may have left the cell in memory.
        if (auto hit = cache->find(owner, linear)) {
          result = *hit;
        } else {
          result = produce(cell, linear, computed, seen_missing);
        }
      });
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard lock(mu);
      inflight.erase(linear);
    }
    {
      std::lock_guard lock(slot->mu);
      slot->finished = true;
      slot->result = result;
      slot->error = error;
    }
    slot->cv.notify_all();
    if (error) std::rethrow_exception(error);
    if (was_computed != nullptr) *was_computed = computed;
    return result;
  }

  void check_cell(const CellIndex& cell) const {
    bool ok = cell.rank() == grid.rank();
    for (int i = 0; ok && i < cell.rank(); ++i) ok = cell[i] >= 0 && cell[i] < grid.grid_shape()[i];
    if (!ok)
      throw InvalidArgument(fmt::format("{}: cell {} is outside the grid {}", name, cell.str(),
                                        grid.grid_shape().str()));
  }
};

CachedCellImage::CachedCellImage(std::string name, CellGrid grid, DType dtype, ComputeFn compute,
                                 std::shared_ptr<CellStore> store, MemoryCache* cache,
                                 bool variable_payload)
    : impl_(std::make_unique<Impl>()) {
  impl_->variable_payload = variable_payload;
  impl_->name = std::move(name);
  impl_->grid = std::move(grid);
  impl_->dtype = dtype;
  impl_->compute = std::move(compute);
  impl_->store = std::move(store);
  impl_->cache = cache != nullptr ? cache : &MemoryCache::global();
  impl_->owner = impl_->cache->new_owner();
}

CachedCellImage::~CachedCellImage() {
  impl_->background.wait();
  impl_->cache->erase_owner(impl_->owner);
}

const std::string& CachedCellImage::name() const { return impl_->name; }
const CellGrid& CachedCellImage::grid() const { return impl_->grid; }
DType CachedCellImage::dtype() const { return impl_->dtype; }
const std::shared_ptr<CellStore>& CachedCellImage::store() const { return impl_->store; }

CellBuffer CachedCellImage::get(const CellIndex& cell) {
  impl_->check_cell(cell);
  const int64_t linear = impl_->grid.linear(cell);
  if (auto hit = impl_->cache->find(impl_->owner, linear)) {
    impl_->memory_hits.fetch_add(1, std::memory_order_relaxed);
    return *hit;
  }
  return impl_->load(cell, linear, nullptr);
}

bool CachedCellImage::ensure(const CellIndex& cell) {
  if (available(cell)) return false;
  bool computed = false;
  impl_->load(cell, impl_->grid.linear(cell), &computed, /*seen_missing=*/true);
  return computed;
}

bool CachedCellImage::available(const CellIndex& cell) const {
  impl_->check_cell(cell);
  if (impl_->store) return impl_->store->contains(cell);
  return impl_->cache->find(impl_->owner, impl_->grid.linear(cell)).has_value();
}

bool CachedCellImage::busy_elsewhere(const CellIndex& cell) const {
  return impl_->store && impl_->store->locked_elsewhere(cell);
}

void CachedCellImage::release(const CellIndex& cell) {
  impl_->check_cell(cell);
  impl_->cache->erase(impl_->owner, impl_->grid.linear(cell));
}

CellBuffer CachedCellImage::read(const Box& region) {
  CellBuffer out = CellBuffer::allocate(impl_->dtype, region.shape());
  read_into(region, out.mutable_data());
  return out;
}

CellBuffer CachedCellImage::read_shared(const Box& region) {
  if (!impl_->variable_payload && region.rank() == impl_->grid.rank() &&
      impl_->grid.bounds().contains(region)) {
    const Box cells = impl_->grid.cells_touching(region);
    if (cells.volume() == 1 && impl_->grid.cell_box(cells.begin()) == region) {
      CellBuffer buf = get(cells.begin());
      if (buf.shape() == region.shape() && buf.dtype() == impl_->dtype) return buf;
    }
  }
  return read(region);
}

void CachedCellImage::read_into(const Box& region, void* out) {
  if (impl_->variable_payload)
    throw InvalidArgument(fmt::format("{}: is a table; read its cells with get()", impl_->name));
  if (region.rank() != impl_->grid.rank() || !impl_->grid.bounds().contains(region))
    throw InvalidArgument(fmt::format("{}: region {} is outside the image {}", impl_->name,
                                      region.str(), impl_->grid.bounds().str()));
  const Box cells = impl_->grid.cells_touching(region);
  const int64_t n = cells.volume();
  const size_t esize = dtype_size(impl_->dtype);
  const auto copy_cell = [&](const CellIndex& cell) {
    const CellBuffer buf = get(cell);
    const Box cell_box = impl_->grid.cell_box(cell);
    copy_region(buf.data(), cell_box, out, region, cell_box.intersect(region), esize);
  };
  if (n <= 1) {
    for_each_index(cells, copy_cell);
    return;
  }
  const Shape cells_shape = cells.shape();
  parallel_for_all(n, [&](int64_t i) {
    CellIndex c(cells.rank());
    int64_t rest = i;
    for (int d = cells.rank() - 1; d >= 0; --d) {
      c[d] = cells.begin()[d] + rest % cells_shape[d];
      rest /= cells_shape[d];
    }
    copy_cell(c);
  });
}

CachedCellImage::PartialRead CachedCellImage::read_available(const Box& region, double fill,
                                                             CellReadyFn on_ready) {
  if (impl_->variable_payload)
    throw InvalidArgument(fmt::format("{}: is a table; read its cells with get()", impl_->name));
  if (region.rank() != impl_->grid.rank() || !impl_->grid.bounds().contains(region))
    throw InvalidArgument(fmt::format("{}: region {} is outside the image {}", impl_->name,
                                      region.str(), impl_->grid.bounds().str()));
  PartialRead result;
  result.data = CellBuffer::allocate(impl_->dtype, region.shape());
  const size_t esize = dtype_size(impl_->dtype);
  dispatch_dtype(impl_->dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = result.data.template mutable_as<T>();
    T value = static_cast<T>(0);
    if constexpr (std::is_floating_point_v<T>) {
      value = static_cast<T>(fill);
    } else if (!std::isnan(fill)) {  // out-of-range conversions are undefined: clamp
      value = static_cast<T>(std::clamp(fill, static_cast<double>(std::numeric_limits<T>::lowest()),
                                        static_cast<double>(std::numeric_limits<T>::max())));
    }
    std::fill(p, p + region.volume(), value);
  });
  for_each_index(impl_->grid.cells_touching(region), [&](const CellIndex& cell) {
    const int64_t linear = impl_->grid.linear(cell);
    if (auto hit = impl_->cache->find(impl_->owner, linear)) {
      impl_->memory_hits.fetch_add(1, std::memory_order_relaxed);
      const Box cell_box = impl_->grid.cell_box(cell);
      copy_region(hit->data(), cell_box, result.data.mutable_data(), region,
                  cell_box.intersect(region), esize);
      return;
    }
    result.missing.push_back(cell);
  });
  if (!on_ready) return result;
  for (const CellIndex& cell : result.missing) {
    const int64_t linear = impl_->grid.linear(cell);
    {
      std::lock_guard lock(impl_->background_mu);
      auto& waiters = impl_->background_waiters[linear];
      waiters.push_back(on_ready);
      if (waiters.size() > 1) continue;  // already being fetched: told with the others
    }
    Impl* impl = impl_.get();
    impl_->background.run([this, impl, cell, linear] {
      std::exception_ptr error;
      try {
        (void)get(cell);
      } catch (...) {
        error = std::current_exception();
      }
      std::vector<CellReadyFn> waiters;
      {
        std::lock_guard lock(impl->background_mu);
        waiters = std::move(impl->background_waiters[linear]);
        impl->background_waiters.erase(linear);
      }
      for (const CellReadyFn& fn : waiters) fn(cell, error);
    });
  }
  return result;
}

CellImageStats CachedCellImage::stats() const {
  return CellImageStats{impl_->computed.load(), impl_->loaded.load(), impl_->memory_hits.load(),
                        impl_->corrupt.load()};
}

}  // namespace cellflow

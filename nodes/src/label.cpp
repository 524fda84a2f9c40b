// label: connected components of the foreground (input != 0), globally
// consistent across cells. A global op:
//   prepare()  labels every input cell on its own (in parallel), keeps each
//              cell's component count, each component's first voxel and the
//              labels of the cell's boundary layers; unions components that
//              touch across cell borders (faces, and for full connectivity
//              edges and corners too); numbers the objects 1..N in raster
//              order of their first voxel over the whole image; and keeps per
//              cell a table local component -> final label. Boundary layers
//              are dropped afterwards: memory is O(components) per cell, plus
//              the cells' provisional labels (as runs, or as an image in the
//              narrowest unsigned type), kept while they fit a quarter of the
//              memory cache's budget.
//   compute()  maps the cell's kept provisional labels to final labels; when
//              they were not kept, it labels the cell again with the same
//              deterministic algorithm first.
// The labels therefore depend on neither the cell shape, the thread count nor
// which cells were kept.
#include "cellflow/nodes/label.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <mutex>
#include <numeric>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "cellflow/cache/cached_cell_image.hpp"
#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/cache/memory_cache.hpp"
#include "cellflow/cache/parallel.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

struct WorkCounters {
  std::atomic<int64_t> labelled{0};
  std::atomic<int64_t> kept{0};
  std::atomic<int64_t> reused{0};
  std::atomic<int64_t> relabelled{0};
};

WorkCounters& work_counters() {
  static WorkCounters counters;
  return counters;
}

void add_one(std::atomic<int64_t>& counter) { counter.fetch_add(1, std::memory_order_relaxed); }

/// Offsets in {-1, 0, 1}^rank other than 0: the 2 * rank face neighbours, or
/// all 3^rank - 1 neighbours with `full`. With `backward`, only those visited
/// before the centre in raster order (first non-zero entry -1).
std::vector<Dims> neighbour_offsets(int rank, bool full, bool backward) {
  std::vector<Dims> out;
  for_each_index(Box(Dims(rank, -1), Dims(rank, 2)), [&](const Dims& o) {
    int nonzero = 0;
    int first = 0;
    for (int d = 0; d < rank; ++d) {
      if (o[d] != 0) {
        if (nonzero == 0) first = static_cast<int>(o[d]);
        ++nonzero;
      }
    }
    if (nonzero == 0 || (!full && nonzero != 1) || (backward && first != -1)) return;
    out.push_back(o);
  });
  return out;
}

/// Two-pass connected-component labeling of one box, sequential and
/// deterministic: components are numbered 1..count in raster order of their
/// first voxel. Not thread-safe; one per task.
class BoxLabeler {
 public:
  BoxLabeler(const Shape& shape, bool full) : shape_(shape) {
    const int r = shape.rank();
    padded_ = Shape(r);
    for (int d = 0; d < r; ++d) padded_[d] = shape[d] + 2;
    Dims stride(r, 1);
    for (int d = r - 2; d >= 0; --d) stride[d] = stride[d + 1] * padded_[d + 1];
    for (const Dims& o : neighbour_offsets(r, full, /*backward=*/true)) {
      int64_t off = 0;
      for (int d = 0; d < r; ++d) off += o[d] * stride[d];
      offsets_.push_back(off);
    }
    stride_ = stride;
  }

  /// Labels the non-zero voxels of `in` (shape `shape`) into `labels` (one
  /// entry per voxel, 0 for background) and returns the number of components.
  /// With `first`, appends the linear index (in the box) of each component's
  /// first voxel.
  uint32_t run(const CellBuffer& in, std::vector<uint32_t>& labels, std::vector<int64_t>* first) {
    add_one(work_counters().labelled);
    // The thread's buffer: kept mapped between cells (one cell's labels at a
    // time per thread), so that each cell does not fault in fresh pages.
    // The pad around the box must read 0; the scan writes every voxel inside
    // it, so the buffer is cleared only when the padded shape changes (the
    // halo of one shape is inside another's).
    thread_local std::vector<uint32_t> pad;
    thread_local Shape pad_shape;
    pad_ = &pad;
    if (!(pad_shape == padded_)) {
      pad.assign(static_cast<size_t>(padded_.product()), 0);
      pad_shape = padded_;
    }
    parent_.assign(1, 0);
    dispatch_dtype(in.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      scan(in.as<T>());
    });
    // Pass 2: resolve provisional labels, numbered by first appearance.
    labels.resize(static_cast<size_t>(shape_.product()));  // every voxel is written below
    std::vector<uint32_t> remap(parent_.size(), 0);
    uint32_t count = 0;
    const int64_t len = shape_[shape_.rank() - 1];
    detail::for_each_row(shape_, [&](const Dims& row, int64_t offset) {
      const uint32_t* p = pad_->data() + padded_row(row);
      uint32_t* dst = labels.data() + offset;
      for (int64_t x = 0; x < len; ++x) {
        const uint32_t l = p[x];
        if (l == 0) {
          dst[x] = 0;
          continue;
        }
        const uint32_t root = find(l);
        if (remap[root] == 0) {
          remap[root] = ++count;
          if (first != nullptr) first->push_back(offset + x);
        }
        dst[x] = remap[root];
      }
    });
    return count;
  }

 private:
  int64_t padded_row(const Dims& row) const {
    int64_t off = 1;  // the row's first voxel sits after one pad voxel on the last axis
    for (int d = 0; d + 1 < shape_.rank(); ++d) off += (row[d] + 1) * stride_[d];
    return off;
  }

  uint32_t find(uint32_t x) {
    while (parent_[x] != x) {
      parent_[x] = parent_[parent_[x]];
      x = parent_[x];
    }
    return x;
  }

  uint32_t unite(uint32_t a, uint32_t b) {
    a = find(a);
    b = find(b);
    if (a == b) return a;
    if (a > b) std::swap(a, b);
    parent_[b] = a;
    return a;
  }

  // Pass 1: provisional labels from the neighbours already visited; the pad
  // of zeros around the box spares every bounds check.
  template <class T>
  void scan(const T* src) {
    const int64_t len = shape_[shape_.rank() - 1];
    detail::for_each_row(shape_, [&](const Dims& row, int64_t offset) {
      uint32_t* p = pad_->data() + padded_row(row);
      const T* s = src + offset;
      for (int64_t x = 0; x < len; ++x) {
        if (s[x] == T{0}) {
          p[x] = 0;  // what a previous cell left here
          continue;
        }
        uint32_t lab = 0;
        for (const int64_t off : offsets_) {
          const uint32_t n = p[x + off];
          if (n == 0) continue;
          lab = lab == 0 ? n : (n == lab ? lab : unite(lab, n));
        }
        if (lab == 0) {
          lab = static_cast<uint32_t>(parent_.size());
          parent_.push_back(lab);
        }
        p[x] = lab;
      }
    });
  }

  Shape shape_;
  Shape padded_;
  Dims stride_;
  std::vector<int64_t> offsets_;
  std::vector<uint32_t>* pad_ = nullptr;  // the thread's, set by run()
  std::vector<uint32_t> parent_;
};

/// What prepare() keeps of one cell while it merges: the labels of the
/// cell's 2 * rank boundary layers ([2d]: first along axis d, [2d+1]: last).
struct CellSummary {
  uint32_t count = 0;
  std::vector<int64_t> first;  // global linear index of each component's first voxel
  std::vector<std::vector<uint32_t>> layers;
};

/// Index of `local` (coordinates in a box of `shape`) in the layer of axis `d`.
int64_t layer_offset(const Shape& shape, const Dims& local, int d) {
  int64_t off = 0;
  for (int e = 0; e < shape.rank(); ++e) {
    if (e != d) off = off * shape[e] + local[e];
  }
  return off;
}

/// The calling thread's buffer of one cell's labels.
std::vector<uint32_t>& thread_labels() {
  thread_local std::vector<uint32_t> labels;
  return labels;
}

/// The narrowest unsigned type that holds labels 0..count.
DType narrow_dtype(uint32_t count) {
  return count <= std::numeric_limits<uint8_t>::max()    ? DType::kU8
         : count <= std::numeric_limits<uint16_t>::max() ? DType::kU16
                                                         : DType::kU32;
}

/// The number of runs of equal values in `labels`.
int64_t count_runs(const std::vector<uint32_t>& labels) {
  int64_t runs = labels.empty() ? 0 : 1;
  for (size_t i = 1; i < labels.size(); ++i) runs += labels[i] != labels[i - 1] ? 1 : 0;
  return runs;
}

/// A cell's provisional labels as prepare() keeps them for compute(): the runs
/// of equal labels over the cell's voxels in C order (few for objects of many
/// voxels, and small memory that is already mapped), or, where runs would take
/// more room (fragmented masks), the label image in the narrowest unsigned
/// type that holds the cell's labels.
class KeptLabels {
 public:
  /// The bytes the kept form of a cell's labels takes.
  static size_t bytes(int64_t voxels, int64_t runs, uint32_t count) {
    return std::min(static_cast<size_t>(runs) * 2 * sizeof(uint32_t),
                    static_cast<size_t>(voxels) * dtype_size(narrow_dtype(count)));
  }

  /// REQUIRES: `runs` == count_runs(labels), every label <= `count`.
  KeptLabels(const std::vector<uint32_t>& labels, const Shape& shape, int64_t runs,
             uint32_t count) {
    const DType dtype = narrow_dtype(count);
    if (static_cast<size_t>(runs) * 2 * sizeof(uint32_t) <=
        static_cast<size_t>(shape.product()) * dtype_size(dtype)) {
      // A cell buffer, not a vector: large ones come warm from the pool that
      // the cells freed before them went back to (fresh pages cost more than
      // this pass on a VM).
      runs_ = CellBuffer::allocate(DType::kU32, Shape{runs * 2});
      auto* out = runs_.mutable_as<uint32_t>();
      const uint32_t* in = labels.data();
      const size_t n = labels.size();
      for (size_t i = 0; i < n;) {
        const uint32_t v = in[i];
        size_t j = i + 1;
        while (j < n && in[j] == v) ++j;
        *out++ = static_cast<uint32_t>(j - i);  // cells hold < 2^32 voxels (bind)
        *out++ = v;
        i = j;
      }
      return;
    }
    image_ = CellBuffer::allocate(dtype, shape);
    dispatch_dtype(dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_unsigned_v<T>) {
        std::copy(labels.begin(), labels.end(), image_.mutable_as<T>());
      }
    });
  }

  size_t bytes() const {
    // (An empty CellBuffer has rank 0: one element by its shape, no bytes here.)
    return (runs_ ? runs_.num_bytes() : 0) + (image_ ? image_.num_bytes() : 0);
  }

  /// Writes the final label of each voxel, table[local - 1] (0 stays 0), to `out`.
  void map(const std::vector<uint64_t>& table, CellBuffer& out) const {
    dispatch_dtype(out.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      T* dst = out.mutable_as<T>();
      if (!image_) {
        const auto* runs = runs_.as<uint32_t>();
        for (int64_t k = 0; k < runs_.num_elements(); k += 2) {
          const uint32_t local = runs[k + 1];
          dst = std::fill_n(dst, runs[k], local == 0 ? T{0} : static_cast<T>(table[local - 1]));
        }
        return;
      }
      dispatch_dtype(image_.dtype(), [&](auto from) {
        using L = typename decltype(from)::type;
        if constexpr (std::is_unsigned_v<L>)
          map_labels(image_.as<L>(), table, dst, out.num_elements());
      });
    });
  }

  /// dst[i] = the final label of provisional label local[i] (0 stays 0).
  template <class L, class T>
  static void map_labels(const L* local, const std::vector<uint64_t>& table, T* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      dst[i] = local[i] == 0 ? T{0} : static_cast<T>(table[local[i] - 1]);
    }
  }

 private:
  CellBuffer runs_;  // (length, label) pairs; empty when image_ is set
  CellBuffer image_;
};

/// The provisional labels of the cells that prepare() kept for compute(), up
/// to a byte budget: a cell that does not fit when offered is not kept (first
/// come, first kept: no eviction, so that a pass over the cells in the order
/// they were offered finds the kept ones instead of none). Each entry is handed
/// out once. Thread-safe.
class ProvisionalLabels {
 public:
  void reset(int64_t cells, size_t budget_bytes) {
    std::lock_guard lock(mu_);
    cells_.clear();
    cells_.resize(static_cast<size_t>(cells));
    budget_ = budget_bytes;
    used_ = 0;
  }

  /// Keeps make() (KeptLabels of `bytes` bytes) for `cell` if they fit the
  /// budget, calling make() only then; returns whether.
  template <class Make>
  bool offer(int64_t cell, size_t bytes, Make&& make) {
    {
      std::lock_guard lock(mu_);
      if (used_ + bytes > budget_) return false;
      used_ += bytes;  // reserved: the labels are made outside the lock
    }
    KeptLabels labels = make();
    std::lock_guard lock(mu_);
    cells_[static_cast<size_t>(cell)] = std::move(labels);
    return true;
  }

  /// The labels kept for `cell`, removed from the store; nullopt if none.
  std::optional<KeptLabels> take(int64_t cell) {
    std::lock_guard lock(mu_);
    std::optional<KeptLabels> out = std::exchange(cells_[static_cast<size_t>(cell)], std::nullopt);
    if (out) used_ -= out->bytes();
    return out;
  }

 private:
  std::mutex mu_;
  std::vector<std::optional<KeptLabels>> cells_;
  size_t budget_ = 0;
  size_t used_ = 0;
};

class LabelKernel final : public NodeKernel {
 public:
  LabelKernel(ImageInfo info, bool full) : NodeKernel(std::move(info)), full_(full) {
    grid_ = CellGrid(output().shape, output().cell_shape);
  }

  bool needs_prepare() const override { return true; }

  void prepare(std::span<CachedCellImage* const> inputs) override {
    std::lock_guard lock(prepare_mu_);
    if (prepared_.load(std::memory_order_acquire)) return;
    CachedCellImage& image = *inputs[0];
    if (!(image.grid() == grid_)) {
      throw NodeError(fmt::format("label: the input's grid {} / {} is not the node's {} / {}",
                                  image.grid().shape().str(), image.grid().cell_shape().str(),
                                  grid_.shape().str(), grid_.cell_shape().str()));
    }
    const int r = grid_.rank();
    const int64_t cells = grid_.num_cells();
    const Shape& shape = grid_.shape();

    // 1. Each cell on its own; its labels are kept for compute() while they fit.
    kept_.reset(cells, MemoryCache::global().budget() / 4);
    std::vector<CellSummary> summary(static_cast<size_t>(cells));
    parallel_for_all(cells, [&](int64_t c) {
      const Box box = grid_.cell_box(grid_.cell_at(c));
      const Shape s = box.shape();
      // The thread's buffer, reused (see BoxLabeler::run); named once here, as
      // every use of a thread_local in a shared library asks for its address.
      std::vector<uint32_t>& labels = thread_labels();
      CellSummary& sum = summary[static_cast<size_t>(c)];
      BoxLabeler labeler(s, full_);
      sum.count = labeler.run(image.get(grid_.cell_at(c)), labels, &sum.first);
      const int64_t runs = count_runs(labels);
      if (kept_.offer(c, KeptLabels::bytes(s.product(), runs, sum.count),
                      [&] { return KeptLabels(labels, s, runs, sum.count); })) {
        add_one(work_counters().kept);
      }
      for (int64_t& f : sum.first) {
        Dims g(r);
        int64_t rest = f;
        for (int d = r - 1; d >= 0; --d) {
          g[d] = box.begin()[d] + rest % s[d];
          rest /= s[d];
        }
        f = detail::linear_offset(shape, g);
      }
      // The boundary layers, each in C order over the layer.
      sum.layers.resize(static_cast<size_t>(2 * r));
      const Box whole = Box::from_shape(s);
      for (int d = 0; d < r; ++d) {
        for (int side = 0; side < 2; ++side) {
          Dims lo(r, 0);
          Dims hi = s;
          lo[d] = side == 0 ? 0 : s[d] - 1;
          hi[d] = lo[d] + 1;
          const Box layer_box(lo, hi);
          auto& layer = sum.layers[static_cast<size_t>(2 * d + side)];
          layer.resize(static_cast<size_t>(layer_box.volume()));
          copy_region(labels.data(), whole, layer.data(), layer_box, layer_box, sizeof(uint32_t));
        }
      }
    });

    // 2. Pairs of components that touch across a cell border, found from the
    // lower-numbered cell of each pair (voxels of its shell, each once).
    std::vector<uint64_t> base(static_cast<size_t>(cells) + 1, 0);
    for (int64_t c = 0; c < cells; ++c) {
      base[static_cast<size_t>(c) + 1] =
          base[static_cast<size_t>(c)] + summary[static_cast<size_t>(c)].count;
    }
    const uint64_t total = base.back();
    const std::vector<Dims> neighbours = neighbour_offsets(r, full_, /*backward=*/false);
    std::vector<std::vector<std::pair<uint64_t, uint64_t>>> pairs(static_cast<size_t>(cells));
    parallel_for_all(cells, [&](int64_t c) {
      const Box box = grid_.cell_box(grid_.cell_at(c));
      const Shape s = box.shape();
      const CellSummary& sum = summary[static_cast<size_t>(c)];
      auto& out = pairs[static_cast<size_t>(c)];
      for (int d = 0; d < r; ++d) {
        Shape ls = s;
        ls[d] = 1;
        for (int side = 0; side < (s[d] > 1 ? 2 : 1); ++side) {
          const auto& layer = sum.layers[static_cast<size_t>(2 * d + side)];
          size_t k = 0;
          for_each_index(Box::from_shape(ls), [&](const Dims& i) {
            const uint32_t lab = layer[k++];
            if (lab == 0) return;
            Dims p = i;
            p[d] = side == 0 ? 0 : s[d] - 1;
            for (int e = 0; e < d; ++e) {
              if (p[e] == 0 || p[e] == s[e] - 1) return;  // on an earlier layer: seen there
            }
            for (int e = 0; e < r; ++e) p[e] += box.begin()[e];
            for (const Dims& o : neighbours) {
              Dims q = p;
              bool inside_cell = true;
              bool inside_image = true;
              for (int e = 0; e < r; ++e) {
                q[e] += o[e];
                if (q[e] < box.begin()[e] || q[e] >= box.end()[e]) inside_cell = false;
                if (q[e] < 0 || q[e] >= shape[e]) inside_image = false;
              }
              if (inside_cell || !inside_image) continue;
              CellIndex nc(r);
              for (int e = 0; e < r; ++e) nc[e] = q[e] / grid_.cell_shape()[e];
              const int64_t n = grid_.linear(nc);
              if (n < c) continue;  // that cell finds this pair
              const Box nbox = grid_.cell_box(nc);
              const Shape ns = nbox.shape();
              // p lies outside the neighbour on some axis: q is on that face of it.
              int axis = 0;
              while (p[axis] >= nbox.begin()[axis] && p[axis] < nbox.end()[axis]) ++axis;
              const int nside = p[axis] < nbox.begin()[axis] ? 0 : 1;
              Dims ql = q;
              for (int e = 0; e < r; ++e) ql[e] -= nbox.begin()[e];
              const auto& nlayer =
                  summary[static_cast<size_t>(n)].layers[static_cast<size_t>(2 * axis + nside)];
              const uint32_t nl = nlayer[static_cast<size_t>(layer_offset(ns, ql, axis))];
              if (nl == 0) continue;
              out.emplace_back(base[static_cast<size_t>(c)] + lab - 1,
                               base[static_cast<size_t>(n)] + nl - 1);
            }
          });
        }
      }
      std::sort(out.begin(), out.end());
      out.erase(std::unique(out.begin(), out.end()), out.end());
    });
    for (CellSummary& sum : summary) sum.layers = {};

    // 3. Merge, then number the objects by their first voxel.
    std::vector<uint64_t> parent(total);
    std::iota(parent.begin(), parent.end(), uint64_t{0});
    const auto find = [&](uint64_t x) {
      while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
      }
      return x;
    };
    for (const auto& cell_pairs : pairs) {
      for (const auto& [a, b] : cell_pairs) {
        const uint64_t ra = find(a);
        const uint64_t rb = find(b);
        if (ra != rb) parent[std::max(ra, rb)] = std::min(ra, rb);
      }
    }
    pairs = {};
    std::vector<int64_t> first(total, std::numeric_limits<int64_t>::max());
    for (int64_t c = 0; c < cells; ++c) {
      const CellSummary& sum = summary[static_cast<size_t>(c)];
      for (uint32_t j = 0; j < sum.count; ++j) {
        const uint64_t root = find(base[static_cast<size_t>(c)] + j);
        first[root] = std::min(first[root], sum.first[j]);
      }
    }
    std::vector<uint64_t> roots;
    for (uint64_t i = 0; i < total; ++i) {
      if (parent[i] == i) roots.push_back(i);
    }
    std::sort(roots.begin(), roots.end(),
              [&](uint64_t a, uint64_t b) { return first[a] < first[b]; });
    if (output().dtype == DType::kU32 && roots.size() > std::numeric_limits<uint32_t>::max()) {
      kept_.reset(0, 0);
      throw NodeError(
          fmt::format("label: {} objects do not fit in {} labels: set param \"dtype\" to \"u64\"",
                      roots.size(), dtype_name(output().dtype)));
    }
    std::vector<uint64_t> final_label(total, 0);
    for (size_t k = 0; k < roots.size(); ++k) final_label[roots[k]] = k + 1;
    tables_.resize(static_cast<size_t>(cells));
    for (int64_t c = 0; c < cells; ++c) {
      auto& table = tables_[static_cast<size_t>(c)];
      table.resize(summary[static_cast<size_t>(c)].count);
      for (uint32_t j = 0; j < table.size(); ++j) {
        table[j] = final_label[find(base[static_cast<size_t>(c)] + j)];
      }
    }
    prepared_.store(true, std::memory_order_release);
  }

  void compute(const Box& out_box, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    if (!prepared_.load(std::memory_order_acquire)) {
      throw NodeError("label: the labels are unknown: prepare() did not run");
    }
    const int r = out_box.rank();
    CellIndex cell(r);
    for (int d = 0; d < r; ++d) cell[d] = out_box.begin()[d] / grid_.cell_shape()[d];
    if (!(grid_.cell_box(cell) == out_box)) {
      throw NodeError(fmt::format("label: {} is not a cell of the node", out_box.str()));
    }
    const int64_t linear = grid_.linear(cell);
    const auto& table = tables_[static_cast<size_t>(linear)];
    if (std::optional<KeptLabels> kept = kept_.take(linear)) {
      add_one(work_counters().reused);
      kept->map(table, out);
      return;
    }
    add_one(work_counters().relabelled);
    std::vector<uint32_t>& labels = thread_labels();
    BoxLabeler labeler(out_box.shape(), full_);
    const uint32_t count = labeler.run(inputs[0].data, labels, nullptr);
    if (count != table.size()) {
      throw NodeError(fmt::format(
          "label: cell {} has {} components now but had {} when the labels were merged (did "
          "its input change?)",
          cell.str(), count, table.size()));
    }
    dispatch_dtype(out.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      KeptLabels::map_labels(labels.data(), table, out.mutable_as<T>(), out.num_elements());
    });
  }

 private:
  const bool full_;
  CellGrid grid_;
  // Written once by prepare(), before prepared_.
  std::vector<std::vector<uint64_t>> tables_;
  // Filled by prepare(), emptied by compute() as it maps the cells.
  mutable ProvisionalLabels kept_;
  std::atomic<bool> prepared_{false};
  std::mutex prepare_mu_;
};

class LabelOp final : public Op {
 public:
  std::string_view name() const override { return "label"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Connected components of the foreground (input != 0), consistent over the whole "
           "image: labels 1..N numbered in raster order of each object's first voxel, the same "
           "whatever the cell shape or thread count (a global pass merges components across "
           "cell borders).";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"connectivity", ParamType::kString, Value("face"),
         "\"face\": voxels sharing a face are connected (6 in 3-D, 4 in 2-D); \"full\": also "
         "edges and corners (26 in 3-D, 8 in 2-D)"},
        {"dtype", ParamType::kDType, Value("u32"), "label type: u32 or u64"},
    };
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const std::string& connectivity = params.get_string("connectivity");
    if (connectivity != "face" && connectivity != "full") {
      throw InvalidArgument(fmt::format(
          "param \"connectivity\" must be \"face\" or \"full\" (got \"{}\")", connectivity));
    }
    const DType dtype = params.get_dtype("dtype");
    if (dtype != DType::kU32 && dtype != DType::kU64) {
      throw InvalidArgument(
          fmt::format("param \"dtype\" must be u32 or u64 (got {})", dtype_name(dtype)));
    }
    const ImageInfo& in = inputs[0];
    // Provisional labels inside one cell are u32.
    Shape padded = in.cell_shape;
    for (int d = 0; d < padded.rank(); ++d) padded[d] += 2;
    if (padded.product() >= int64_t{std::numeric_limits<uint32_t>::max()}) {
      throw InvalidArgument(fmt::format(
          "op \"label\": input cells of shape {} are too large (at most 2^32 - 2 voxels with "
          "their border); use smaller cells",
          in.cell_shape.str()));
    }
    ImageInfo info{dtype, in.shape, in.cell_shape};
    info.labels = true;
    return std::make_unique<LabelKernel>(std::move(info), connectivity == "full");
  }
};

}  // namespace

std::shared_ptr<const Op> make_label_op() { return std::make_shared<LabelOp>(); }

LabelWork label_work() {
  const WorkCounters& c = work_counters();
  return LabelWork{c.labelled.load(std::memory_order_relaxed),
                   c.kept.load(std::memory_order_relaxed), c.reused.load(std::memory_order_relaxed),
                   c.relabelled.load(std::memory_order_relaxed)};
}

}  // namespace cellflow::nodes

// cellflow-bench: the framework's cost, measured against references in the same run.
//   (a) cellflow materializing `gaussian` over a volume already in memory;
//   (b) the same ITK filter on the whole in-memory volume (ITK's own threads);
//   (c) the same ITK filter looped over the same padded cells, no framework.
// It prints ratio_vs_whole_image = a/b and ratio_vs_bare_cells = a/c (each the
// median over --reps repetitions of the ratio within one repetition, whose
// three timings run back to back), the same three for the native engine (a: cellflow with
// engine "native", b: the native kernel on the whole volume in one thread,
// c: the native kernel over the same padded cells) with
// native_ratio_vs_bare_cells and native_speedup_vs_itk_whole_image (ITK
// whole image / cellflow native), the framework's cost per cell (a `cast` to
// the same dtype over --overhead-cell cells, minus a bare loop copying the
// same cells), then the speed of re-reading the persisted node from a warm
// disk cache. The fast engine is timed against the native one twice: the bare
// kernels on one --cell^3 cell with its halo in one thread (fast_cell_speedup_vs_native,
// and each engine's Mvoxel/s of output), and cellflow materializing each
// (fast_speedup_vs_native_materialize). --kernels-only prints the first alone.
// Last, the floor (floor.cpp): workloads A (read.zarr -> gaussian, persisted)
// and B (-> otsu -> label -> region.count + region.density) on a Zarr input
// (--zarr DIR, else generated), cellflow's CPU time on a fresh cache against
// the sum of the unavoidable parts timed bare in one thread (decoding the
// input chunks, the kernels over the same padded cells, encoding and writing
// the persisted cells): A_ratio_vs_floor and B_ratio_vs_floor. --floor-only
// prints the floor alone; --no-floor leaves it out.
#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "cellflow/cellflow.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"
#include "floor.hpp"

namespace {

using namespace cellflow;
using Clock = std::chrono::steady_clock;
using bench::median;

struct Options {
  int64_t size = 256;
  int64_t cell = 64;
  double sigma = 2.0;
  int threads = 2;
  int reps = 5;
  std::string cache_dir;
  int64_t overhead_cell = 32;
  bool kernels_only = false;
  bool floor_only = false;
  bool floor = true;
  std::string zarr;
  int64_t region = 64;
};

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The median of the per-repetition ratios x[i] / y[i]. Each pair was timed
// back to back, so a slow stretch on a shared machine hits both sides of one
// pair instead of one side of the whole comparison.
double paired_ratio(const std::vector<double>& x, const std::vector<double>& y) {
  std::vector<double> r;
  for (size_t i = 0; i < x.size(); ++i) r.push_back(x[i] / y[i]);
  return median(r);
}

GraphDef pipeline(const Options& o, bool with_gaussian, const char* engine = "itk",
                  int64_t cell = 0) {
  if (cell == 0) cell = o.cell;
  GraphDef def;
  def.name = "bench";
  Value p = Value::object();
  p.set("shape", Value::list(std::vector<int64_t>{o.size, o.size, o.size}));
  p.set("cell_shape", Value::list(std::vector<int64_t>{cell, cell, cell}));
  p.set("seed", 7);
  def.add("raw", "synthetic.blobs", {}, p);
  if (with_gaussian) {
    Value g = Value::object();
    g.set("sigma", o.sigma);
    g.set("engine", engine);
    def.add("smooth", "gaussian", {"raw"}, g);
  }
  return def;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw InvalidArgument("missing value after " + a);
      return argv[++i];
    };
    if (a == "--size")
      o.size = std::stoll(next());
    else if (a == "--cell")
      o.cell = std::stoll(next());
    else if (a == "--sigma")
      o.sigma = std::stod(next());
    else if (a == "--threads")
      o.threads = std::stoi(next());
    else if (a == "--reps")
      o.reps = std::stoi(next());
    else if (a == "--cache")
      o.cache_dir = next();
    else if (a == "--overhead-cell")
      o.overhead_cell = std::stoll(next());
    else if (a == "--kernels-only")
      o.kernels_only = true;
    else if (a == "--floor-only")
      o.floor_only = true;
    else if (a == "--no-floor")
      o.floor = false;
    else if (a == "--zarr")
      o.zarr = next();
    else if (a == "--region")
      o.region = std::stoll(next());
    else if (a == "--help" || a == "-h") {
      fmt::print(
          "usage: cellflow-bench [--size N] [--cell C] [--sigma S] [--threads T] [--reps R] "
          "[--cache DIR] [--overhead-cell C] [--kernels-only] [--floor-only | --no-floor] "
          "[--zarr DIR] [--region R]\n");
      std::exit(0);
    } else {
      throw InvalidArgument("unknown option " + a);
    }
  }
  return o;
}

using GaussianFn = void (*)(const float*, const Box&, float*, const Box&,
                            const std::vector<double>&, double, int, const std::vector<double>&);

// The native and the fast kernel on one cell of the volume with its whole
// halo, in this thread, alternating within each repetition.
void bench_cell_kernels(const Options& o, const CellBuffer& volume, const Box& whole,
                        const std::vector<double>& sigma, double max_error, int max_width) {
  const auto radius = nodes::gaussian_radius(sigma, max_error, max_width);
  const int64_t begin = std::max<int64_t>(0, (o.size - o.cell) / 2);
  const Box cell =
      Box(Dims{begin, begin, begin}, Dims{begin + o.cell, begin + o.cell, begin + o.cell})
          .intersect(whole);
  const Box padded = cell.grow(Dims{radius[0], radius[1], radius[2]}).intersect(whole);
  std::vector<float> in(static_cast<size_t>(padded.volume()));
  copy_region(volume.data(), whole, in.data(), padded, padded, sizeof(float));
  std::vector<float> native(static_cast<size_t>(cell.volume()));
  std::vector<float> fast(native.size());
  const auto time = [&](GaussianFn fn, std::vector<float>& out, int calls) {
    const auto t = Clock::now();
    for (int i = 0; i < calls; ++i)
      fn(in.data(), padded, out.data(), cell, sigma, max_error, max_width, {});
    return seconds_since(t) / calls;
  };
  // Enough calls per timing for about 0.2 s of the native kernel, timed
  // after a first call of each (their per-thread scratch is then in place).
  time(nodes::gaussian_filter_region_fast, fast, 1);
  const int calls =
      std::max(1, static_cast<int>(0.2 / time(nodes::gaussian_filter_region_native, native, 1)));
  std::vector<double> tn, tf;
  for (int rep = 0; rep < o.reps; ++rep) {
    tn.push_back(time(nodes::gaussian_filter_region_native, native, calls));
    tf.push_back(time(nodes::gaussian_filter_region_fast, fast, calls));
  }
  double scale = 1, worst = 0;
  for (size_t i = 0; i < native.size(); ++i) {
    scale = std::max(scale, std::abs(double(native[i])));
    worst = std::max(worst, std::abs(double(fast[i]) - double(native[i])));
  }
  const double mvox = static_cast<double>(cell.volume()) / 1e6;
  fmt::print("cell_kernels: {} with halo {}, {} calls per timing, 1 thread\n", cell.str(),
             padded.str(), calls);
  fmt::print("native_cell_Mvoxel_s={:.1f}\nfast_cell_Mvoxel_s={:.1f}\n", mvox / median(tn),
             mvox / median(tf));
  fmt::print("fast_cell_speedup_vs_native={:.2f}\n", paired_ratio(tn, tf));
  fmt::print("fast_max_difference_vs_native_scaled={:.3g}\n", worst / scale);
}

bench::FloorOptions floor_options(const Options& o) {
  bench::FloorOptions f;
  f.size = o.size;
  f.chunk = o.cell;
  f.sigma = o.sigma;
  f.threads = o.threads;
  f.reps = o.reps;
  f.zarr = o.zarr;
  f.region = o.region;
  return f;
}

}  // namespace

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);
  const Registry& registry = nodes::builtin_registry();
  MemoryCache::global().set_budget(size_t{8} << 30);
  if (o.floor_only) {
    bench::run_floor(floor_options(o));
    return 0;
  }
  const Shape shape{o.size, o.size, o.size};
  const Box whole = Box::from_shape(shape);
  const std::vector<double> sigma(3, o.sigma);
  constexpr double kMaxError = 1e-4;  // the gaussian op's defaults
  constexpr int kMaxWidth = 128;
  const auto radius = nodes::gaussian_radius(sigma, kMaxError, kMaxWidth);
  fmt::print(
      "cellflow-bench: {}^3 f32, {}^3 cells, sigma {}, kernel radius {}, {} threads, {} reps\n",
      o.size, o.cell, o.sigma, radius[0], o.threads, o.reps);

  // The input volume, held in memory by a graph that contains only the source.
  Graph source = Graph::build(pipeline(o, false), registry);
  materialize(source, {}, RunOptions{o.threads});
  const CellBuffer volume = source.image("raw")->read(whole);
  if (o.kernels_only) {
    bench_cell_kernels(o, volume, whole, sigma, kMaxError, kMaxWidth);
    return 0;
  }

  tbb::task_arena arena(o.threads);
  std::vector<double> ta, tb, tc;
  CellBuffer ref_whole = CellBuffer::allocate(DType::kF32, shape);
  for (int rep = 0; rep < o.reps; ++rep) {
    // (a) cellflow: a fresh gaussian image each repetition (its source stays cached).
    {
      drop_node_images();  // a fresh image (kept ones would serve from memory)
      Graph g = Graph::build(pipeline(o, true), registry);
      const auto t = Clock::now();
      materialize(g, {}, RunOptions{o.threads});
      ta.push_back(seconds_since(t));
    }
    // (b) ITK on the whole volume with its own threads.
    {
      const auto t = Clock::now();
      nodes::gaussian_filter_region(volume.as<float>(), whole, ref_whole.mutable_as<float>(), whole,
                                    sigma, kMaxError, kMaxWidth, o.threads);
      tb.push_back(seconds_since(t));
    }
    // (c) ITK looped over padded cells, in parallel, no framework.
    {
      const CellGrid grid(shape, Shape{o.cell, o.cell, o.cell});
      CellBuffer out = CellBuffer::allocate(DType::kF32, shape);
      const auto t = Clock::now();
      arena.execute([&] {
        tbb::parallel_for(tbb::blocked_range<int64_t>(0, grid.num_cells(), 1), [&](const auto& r) {
          for (int64_t c = r.begin(); c < r.end(); ++c) {
            const Box cell = grid.cell_box(grid.cell_at(c));
            const Box padded = cell.grow(Dims{radius[0], radius[1], radius[2]}).intersect(whole);
            std::vector<float> in(static_cast<size_t>(padded.volume()));
            copy_region(volume.data(), whole, in.data(), padded, padded, sizeof(float));
            std::vector<float> res(static_cast<size_t>(cell.volume()));
            nodes::gaussian_filter_region(in.data(), padded, res.data(), cell, sigma, kMaxError,
                                          kMaxWidth, 1);
            copy_region(res.data(), cell, out.mutable_data(), whole, cell, sizeof(float));
          }
        });
      });
      tc.push_back(seconds_since(t));
    }
  }
  const double a = median(ta), b = median(tb), c = median(tc);
  fmt::print("cellflow_materialize_s={:.3f}\nitk_whole_image_s={:.3f}\nitk_bare_cells_s={:.3f}\n",
             a, b, c);
  fmt::print("ratio_vs_whole_image={:.3f}\nratio_vs_bare_cells={:.3f}\n", paired_ratio(ta, tb),
             paired_ratio(ta, tc));

  // Check that (a) equals (b): the cell-wise result is ITK's whole-image result.
  {
    Graph g = Graph::build(pipeline(o, true), registry);
    const CellBuffer mine = g.image("smooth")->read(whole);
    double worst = 0;
    const float* p = mine.as<float>();
    const float* q = ref_whole.as<float>();
    for (int64_t i = 0; i < whole.volume(); ++i)
      worst = std::max(
          worst, std::abs(double(p[i]) - double(q[i])) / std::max(1e-6, std::abs(double(q[i]))));
    fmt::print("max_relative_difference_vs_whole_image={:.3g}\n", worst);
  }

  // The native engine, measured the same three ways.
  {
    std::vector<double> na, nb, nc;
    CellBuffer native_whole = CellBuffer::allocate(DType::kF32, shape);
    for (int rep = 0; rep < o.reps; ++rep) {
      {
        drop_node_images();  // a fresh image (kept ones would serve from memory)
        Graph g = Graph::build(pipeline(o, true, "native"), registry);
        const auto t = Clock::now();
        materialize(g, {}, RunOptions{o.threads});
        na.push_back(seconds_since(t));
      }
      {
        const auto t = Clock::now();
        nodes::gaussian_filter_region_native(volume.as<float>(), whole,
                                             native_whole.mutable_as<float>(), whole, sigma,
                                             kMaxError, kMaxWidth);
        nb.push_back(seconds_since(t));
      }
      {
        const CellGrid grid(shape, Shape{o.cell, o.cell, o.cell});
        CellBuffer out = CellBuffer::allocate(DType::kF32, shape);
        const auto t = Clock::now();
        arena.execute([&] {
          tbb::parallel_for(tbb::blocked_range<int64_t>(0, grid.num_cells(), 1), [&](const auto&
                                                                                         r) {
            for (int64_t c = r.begin(); c < r.end(); ++c) {
              const Box cell = grid.cell_box(grid.cell_at(c));
              const Box padded = cell.grow(Dims{radius[0], radius[1], radius[2]}).intersect(whole);
              std::vector<float> in(static_cast<size_t>(padded.volume()));
              copy_region(volume.data(), whole, in.data(), padded, padded, sizeof(float));
              std::vector<float> res(static_cast<size_t>(cell.volume()));
              nodes::gaussian_filter_region_native(in.data(), padded, res.data(), cell, sigma,
                                                   kMaxError, kMaxWidth);
              copy_region(res.data(), cell, out.mutable_data(), whole, cell, sizeof(float));
            }
          });
        });
        nc.push_back(seconds_since(t));
      }
    }
    const double a = median(na), b = median(nb), c = median(nc);
    fmt::print(
        "native_materialize_s={:.3f}\nnative_whole_image_1thread_s={:.3f}\nnative_bare_cells_s={:."
        "3f}\n",
        a, b, c);
    fmt::print("native_ratio_vs_bare_cells={:.3f}\nnative_speedup_vs_itk_whole_image={:.2f}\n",
               paired_ratio(na, nc), paired_ratio(tb, na));
    fmt::print("native_speedup_vs_itk_materialize={:.2f}\n", paired_ratio(ta, na));
    Graph g = Graph::build(pipeline(o, true, "native"), registry);
    const CellBuffer mine = g.image("smooth")->read(whole);
    int64_t differing = 0;
    double worst = 0;
    const float* p = mine.as<float>();
    const float* q = ref_whole.as<float>();
    for (int64_t i = 0; i < whole.volume(); ++i) {
      differing += std::memcmp(p + i, q + i, sizeof(float)) != 0;
      worst = std::max(
          worst, std::abs(double(p[i]) - double(q[i])) / std::max(1e-6, std::abs(double(q[i]))));
    }
    fmt::print(
        "native_max_relative_difference_vs_itk_whole_image={:.3g}\nnative_voxels_not_bit_identical="
        "{}\n",
        worst, differing);
  }

  // The fast engine: the bare kernels on one cell, then cellflow with engine
  // "fast" against "native", back to back in each repetition.
  bench_cell_kernels(o, volume, whole, sigma, kMaxError, kMaxWidth);
  {
    const auto materialize_s = [&](const char* engine) {
      drop_node_images();  // a fresh image (kept ones would serve from memory)
      Graph g = Graph::build(pipeline(o, true, engine), registry);
      const auto t = Clock::now();
      materialize(g, {}, RunOptions{o.threads});
      return seconds_since(t);
    };
    std::vector<double> tn, tf;
    for (int rep = 0; rep < o.reps; ++rep) {
      tn.push_back(materialize_s("native"));
      tf.push_back(materialize_s("fast"));
    }
    fmt::print("fast_materialize_s={:.3f}\nfast_speedup_vs_native_materialize={:.2f}\n", median(tf),
               paired_ratio(tn, tf));
  }

  // The framework's own cost per cell: `cast` to the same dtype (a memcpy per
  // cell) over small cells, against a bare parallel loop that allocates and
  // copies the same cells out of the same in-memory volume.
  {
    const int64_t oc = o.overhead_cell;
    Graph src = Graph::build(pipeline(o, false, "itk", oc), registry);
    materialize(src, {}, RunOptions{o.threads});
    const auto copy_def = [&] {
      GraphDef def = pipeline(o, false, "itk", oc);
      Value p = Value::object();
      p.set("dtype", "f32");
      def.add("copy", "cast", {"raw"}, p);
      def.outputs = {"copy"};
      return def;
    };
    const CellGrid grid(shape, Shape{oc, oc, oc});
    const int reps = std::max(o.reps, 5);
    std::vector<double> tm, tl;
    for (int rep = 0; rep < reps; ++rep) {
      {
        drop_node_images();  // a fresh image (kept ones would serve from memory)
        Graph g = Graph::build(copy_def(), registry);
        const auto t = Clock::now();
        materialize(g, {}, RunOptions{o.threads});
        tm.push_back(seconds_since(t));
      }
      {
        std::vector<CellBuffer> cells(static_cast<size_t>(grid.num_cells()));
        const auto t = Clock::now();
        arena.execute([&] {
          tbb::parallel_for(
              tbb::blocked_range<int64_t>(0, grid.num_cells(), 1), [&](const auto& r) {
                for (int64_t c = r.begin(); c < r.end(); ++c) {
                  const Box cell = grid.cell_box(grid.cell_at(c));
                  CellBuffer b = CellBuffer::allocate(DType::kF32, cell.shape());
                  copy_region(volume.data(), whole, b.mutable_data(), cell, cell, sizeof(float));
                  cells[static_cast<size_t>(c)] = std::move(b);
                }
              });
        });
        tl.push_back(seconds_since(t));
      }
    }
    const double m = median(tm), l = median(tl);
    const double n = static_cast<double>(grid.num_cells());
    fmt::print("overhead_cells={} ({}^3)\nidentity_materialize_s={:.4f}\nbare_copy_loop_s={:.4f}\n",
               grid.num_cells(), oc, m, l);
    // Wall time per cell, and worker time per cell (wall x threads, as the
    // peers' per-chunk overheads are counted).
    fmt::print("framework_us_per_cell={:.1f}\nframework_worker_us_per_cell={:.1f}\n",
               (m - l) / n * 1e6, (m - l) / n * 1e6 * o.threads);
  }

  // Persisting, then a full re-read from the warm disk cache.
  namespace fs = std::filesystem;
  const fs::path dir =
      o.cache_dir.empty() ? fs::temp_directory_path() / fmt::format("cellflow-bench-{}", ::getpid())
                          : fs::path(o.cache_dir);
  fs::remove_all(dir);
  {
    Graph g = Graph::build(pipeline(o, true, "native"), registry, GraphOptions{dir});
    auto t = Clock::now();
    materialize(g, {}, RunOptions{o.threads});
    const double persist = seconds_since(t);
    t = Clock::now();
    const RunReport again = materialize(g, {}, RunOptions{o.threads});
    const double noop = seconds_since(t);
    MemoryCache::global().clear();
    auto img = g.image("smooth");
    t = Clock::now();
    arena.execute([&] { (void)img->read(whole); });
    const double reload = seconds_since(t);
    const double mib = static_cast<double>(whole.volume()) * 4 / (1 << 20);
    fmt::print(
        "persisting_materialize_s={:.3f}\nrerun_complete_s={:.4f}\nreload_from_disk_s={:.3f}\n",
        persist, noop, reload);
    fmt::print("reload_from_disk_MBps={:.0f}\n", mib / reload);
    (void)again;
  }
  if (o.cache_dir.empty()) fs::remove_all(dir);
  if (o.floor) bench::run_floor(floor_options(o));
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "cellflow-bench: error: {}\n", e.what());
  return 1;
}

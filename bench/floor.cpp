// The floor of workloads A and B (see floor.hpp). Each repetition times, in
// this order and in one process:
//   floor, in this thread (CLOCK_THREAD_CPUTIME_ID, user + sys):
//     decode  reading every input chunk file and blosc_decompress_ctx on it
//             (read.zarr's codec call);
//     kernel  A: the gaussian op's kernel (gaussian_filter_region_native, the
//             default engine) over every cell, each gathered with its halo
//             from a plain in-memory volume; B adds Otsu (min/max, a
//             256-bin histogram with the op's helpers, the per-voxel test),
//             labelling (a plain two-pass union-find over the whole mask:
//             one pass, no per-cell merge, the same labels as the op) and
//             the region reductions;
//     encode_write  every cell of every persisted node encoded with the
//             cache's codec (ZarrArray::encode_chunk: blosc lz4 + checksum
//             trailer) and written as the cache writes it (Env::write_atomic:
//             temp file + rename, Durability::kProcess, no fsync);
//   cellflow: Graph::build + materialize on a fresh cache with --threads
//     workers (CLOCK_PROCESS_CPUTIME_ID and wall).
// Copies between the floor's own layouts (a decoded chunk into the volume, a
// result cell into a whole array, a persisted cell out of one) are not timed.
#include "floor.hpp"

#include <blosc.h>
#include <fmt/format.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "cellflow/cache/files.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/cellflow.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"
#include "cellflow/nodes/otsu.hpp"
#include "cellflow/store/env.hpp"
#include "cellflow/store/layout.hpp"

namespace cellflow::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr double kMaxError = 1e-4;  // the gaussian op's defaults
constexpr int kMaxWidth = 128;
constexpr int kOtsuBins = 256;  // the otsu op's default

double cpu_seconds(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double thread_cpu() { return cpu_seconds(CLOCK_THREAD_CPUTIME_ID); }

/// Accumulates this thread's CPU time over the scopes it is started in.
struct CpuTimer {
  double total = 0;
  template <class Fn>
  auto time(Fn&& fn) {
    const double t = thread_cpu();
    struct Add {
      double& total;
      double t;
      ~Add() { total += thread_cpu() - t; }
    } add{total, t};
    return fn();
  }
};

/// A Zarr v2 f32 array compressed with blosc, as read.zarr reads it.
struct Input {
  fs::path dir;
  Shape shape;
  Shape chunks;
  char separator = '.';

  fs::path chunk_file(const CellIndex& c) const {
    std::string key;
    for (int d = 0; d < c.rank(); ++d) {
      if (d > 0) key += separator;
      key += std::to_string(c[d]);
    }
    return dir / key;
  }
};

Shape dims_of(const Value* v, const std::string& what) {
  if (v == nullptr || !v->is_array()) throw InvalidArgument(what + " must be a list");
  std::vector<int64_t> out;
  for (const Value& x : v->as_array()) out.push_back(x.as_int());
  return Shape::from(out);
}

Input open_input(const fs::path& dir) {
  const fs::path meta = dir / ".zarray";
  const auto text = read_file(meta);
  if (!text) throw InvalidArgument(fmt::format("--zarr {}: no .zarray there", dir.string()));
  const Value z = parse_json(*text, meta.string());
  const Value* dtype = z.find("dtype");
  const Value* compressor = z.find("compressor");
  const Value* id = compressor != nullptr ? compressor->find("id") : nullptr;
  if (dtype == nullptr || !dtype->is_string() || dtype->as_string() != "<f4" || id == nullptr ||
      !id->is_string() || id->as_string() != "blosc") {
    throw InvalidArgument(fmt::format(
        "{}: the floor needs a little-endian f32 array compressed with blosc", meta.string()));
  }
  Input in;
  in.dir = dir;
  in.shape = dims_of(z.find("shape"), meta.string() + ": \"shape\"");
  in.chunks = dims_of(z.find("chunks"), meta.string() + ": \"chunks\"");
  if (const Value* sep = z.find("dimension_separator"); sep != nullptr && sep->is_string())
    in.separator = sep->as_string()[0];
  return in;
}

/// synthetic.blobs (seed 7, as the rest of cellflow-bench) written as a Zarr
/// v2 array with the cache's writer: blosc lz4 with shuffle, which zarr-python
/// reads (it ignores the checksum trailer after the blosc frame).
void generate_input(const FloorOptions& o, const fs::path& dir) {
  GraphDef def;
  def.name = "floor-input";
  Value p = Value::object();
  p.set("shape", Value::list(std::vector<int64_t>{o.size, o.size, o.size}));
  p.set("cell_shape", Value::list(std::vector<int64_t>{o.chunk, o.chunk, o.chunk}));
  p.set("seed", 7);
  def.add("raw", "synthetic.blobs", {}, p);
  Graph g = Graph::build(def, nodes::builtin_registry());
  const CellGrid grid(Shape{o.size, o.size, o.size}, Shape{o.chunk, o.chunk, o.chunk});
  auto array = ZarrArray::create(dir, DType::kF32, grid);
  auto image = g.image("raw");
  for (int64_t c = 0; c < grid.num_cells(); ++c) {
    const CellIndex cell = grid.cell_at(c);
    array->write(cell, image->read(grid.cell_box(cell)));
  }
}

GraphDef workload(const fs::path& zarr, double sigma, bool pipeline, int64_t region) {
  GraphDef def;
  def.name = std::string(pipeline ? "B" : "A");
  Value r = Value::object();
  r.set("path", zarr.string());
  def.add("raw", "read.zarr", {}, r);
  Value g = Value::object();
  g.set("sigma", sigma);
  def.add("smooth", "gaussian", {"raw"}, g);
  if (!pipeline) {
    def.outputs = {"smooth"};
    return def;
  }
  def.add("mask", "otsu", {"smooth"});
  def.add("labels", "label", {"mask"});
  Value reg = Value::object();
  reg.set("region", Value::list(std::vector<int64_t>{region, region, region}));
  def.add("counts", "region.count", {"labels"}, reg);
  def.add("density", "region.density", {"mask"}, reg);
  def.outputs = {"counts", "density"};
  return def;
}

/// A whole array of the floor, C order.
struct Array {
  DType dtype = DType::kF32;
  Shape shape;
  std::vector<std::byte> bytes;

  static Array make(DType dtype, const Shape& shape) {
    Array a;
    a.dtype = dtype;
    a.shape = shape;
    a.bytes.assign(static_cast<size_t>(shape.product()) * dtype_size(dtype), std::byte{0});
    return a;
  }
  template <class T>
  T* as() {
    return reinterpret_cast<T*>(bytes.data());
  }
};

/// What one repetition of the floor measured, in seconds of this thread's CPU.
struct FloorTimes {
  double decode = 0;
  double gaussian = 0;
  double otsu = 0;
  double label = 0;
  double region = 0;
  std::map<std::string, double> encode_write;  // per node id
  Array labels;                                // for the check against cellflow's
};

void decode_input(const Input& in, Array& volume, CpuTimer& timer) {
  const CellGrid grid(in.shape, in.chunks);
  const size_t bytes = static_cast<size_t>(in.chunks.product()) * sizeof(float);
  std::vector<float> chunk(static_cast<size_t>(in.chunks.product()));
  const Box whole = Box::from_shape(in.shape);
  for (int64_t c = 0; c < grid.num_cells(); ++c) {
    const CellIndex cell = grid.cell_at(c);
    const fs::path file = in.chunk_file(cell);
    const bool stored = timer.time([&] {
      const auto data = read_file(file);
      if (!data) return false;
      const int n = blosc_decompress_ctx(data->data(), chunk.data(), bytes, 1);
      if (n < 0 || static_cast<size_t>(n) != bytes)
        throw CorruptionError(fmt::format("file {}: blosc cannot decode it", file.string()));
      return true;
    });
    if (!stored) continue;  // the fill value, 0: the volume starts zeroed
    const Box box = grid.cell_box(cell);
    Dims end = box.begin();
    for (int d = 0; d < end.rank(); ++d) end[d] += in.chunks[d];
    copy_region(chunk.data(), Box(box.begin(), end), volume.bytes.data(), whole, box,
                sizeof(float));
  }
}

// Two-pass 6-connected labelling of the whole mask with union-find, objects
// numbered in raster order of their first voxel (as the label op numbers them).
void label_whole(const Array& mask, Array& labels) {
  const Shape& s = mask.shape;
  const int64_t nz = s[0], ny = s[1], nx = s[2];
  const auto* m = reinterpret_cast<const uint8_t*>(mask.bytes.data());
  auto* lab = labels.as<uint32_t>();
  std::vector<uint32_t> parent{0};
  const auto find = [&](uint32_t x) {
    while (parent[x] != x) {
      parent[x] = parent[parent[x]];
      x = parent[x];
    }
    return x;
  };
  const auto unite = [&](uint32_t a, uint32_t b) {
    a = find(a);
    b = find(b);
    if (a == b) return a;
    if (a > b) std::swap(a, b);
    parent[b] = a;
    return a;
  };
  int64_t i = 0;
  for (int64_t z = 0; z < nz; ++z) {
    for (int64_t y = 0; y < ny; ++y) {
      for (int64_t x = 0; x < nx; ++x, ++i) {
        if (m[i] == 0) continue;
        uint32_t l = 0;
        const auto visit = [&](uint32_t n) {
          if (n != 0) l = l == 0 ? n : (n == l ? l : unite(l, n));
        };
        if (z > 0) visit(lab[i - ny * nx]);
        if (y > 0) visit(lab[i - nx]);
        if (x > 0) visit(lab[i - 1]);
        if (l == 0) {
          l = static_cast<uint32_t>(parent.size());
          parent.push_back(l);
        }
        lab[i] = l;
      }
    }
  }
  std::vector<uint32_t> remap(parent.size(), 0);
  uint32_t count = 0;
  for (int64_t k = 0; k < s.product(); ++k) {
    if (lab[k] == 0) continue;
    const uint32_t root = find(lab[k]);
    if (remap[root] == 0) remap[root] = ++count;
    lab[k] = remap[root];
  }
}

// region.count and region.density over blocks of `region` voxels.
void region_reductions(const Array& labels, const Array& mask, int64_t region, Array& counts,
                       Array& density) {
  const Shape& s = labels.shape;
  const CellGrid blocks(s, Shape{region, region, region});
  const auto* lab = reinterpret_cast<const uint32_t*>(labels.bytes.data());
  const auto* m = reinterpret_cast<const uint8_t*>(mask.bytes.data());
  std::vector<uint32_t> seen;
  for (int64_t b = 0; b < blocks.num_cells(); ++b) {
    const Box box = blocks.cell_box(blocks.cell_at(b));
    seen.clear();
    double sum = 0;
    for (int64_t z = box.begin()[0]; z < box.end()[0]; ++z) {
      for (int64_t y = box.begin()[1]; y < box.end()[1]; ++y) {
        const int64_t row = (z * s[1] + y) * s[2];
        uint32_t last = 0;
        for (int64_t x = box.begin()[2]; x < box.end()[2]; ++x) {
          sum += m[row + x];
          const uint32_t v = lab[row + x];
          if (v != 0 && v != last) seen.push_back(v);
          last = v;
        }
      }
    }
    std::sort(seen.begin(), seen.end());
    counts.as<uint32_t>()[b] =
        static_cast<uint32_t>(std::unique(seen.begin(), seen.end()) - seen.begin());
    density.as<float>()[b] = static_cast<float>(sum / static_cast<double>(box.volume()));
  }
}

/// Every cell of `a` (node `node`'s grid, zero-padded to full chunks as the
/// cache stores them) encoded and written into `env` where the cache puts it.
double encode_write(Env& env, const GraphNode& node, const Array& a) {
  if (a.dtype != node.info.dtype || !(a.shape == node.info.shape)) {
    throw InvalidArgument(fmt::format("floor: node \"{}\" is {} {}, the floor's array {} {}",
                                      node.def.id, dtype_name(node.info.dtype),
                                      node.info.shape.str(), dtype_name(a.dtype), a.shape.str()));
  }
  const CellGrid grid(node.info.shape, node.info.cell_shape);
  const size_t size = dtype_size(a.dtype);
  const size_t bytes = static_cast<size_t>(grid.cell_shape().product()) * size;
  const std::string folder = layout::array(node.hash);
  const Box whole = Box::from_shape(a.shape);
  std::vector<std::byte> chunk(bytes);
  CpuTimer timer;
  for (int64_t c = 0; c < grid.num_cells(); ++c) {
    const CellIndex cell = grid.cell_at(c);
    const Box box = grid.cell_box(cell);
    Dims end = box.begin();
    for (int d = 0; d < end.rank(); ++d) end[d] += grid.cell_shape()[d];
    std::fill(chunk.begin(), chunk.end(), std::byte{0});
    copy_region(a.bytes.data(), whole, chunk.data(), Box(box.begin(), end), box, size);
    timer.time([&] {
      const std::string encoded = ZarrArray::encode_chunk(chunk.data(), bytes, size,
                                                          layout::cell_identity(node.hash, cell));
      env.write_atomic(layout::cell(folder, cell), encoded, Durability::kProcess);
    });
  }
  return timer.total;
}

FloorTimes run_floor_once(const Input& in, const FloorOptions& o,
                          const std::map<std::string, const GraphNode*>& persisted,
                          const fs::path& out_dir) {
  FloorTimes t;
  const Shape& shape = in.shape;
  const Box whole = Box::from_shape(shape);
  Array volume = Array::make(DType::kF32, shape);
  {
    CpuTimer timer;
    decode_input(in, volume, timer);
    t.decode = timer.total;
  }

  // The gaussian over each cell of the input's grid (the op's cells) with its halo.
  const std::vector<double> sigma(static_cast<size_t>(shape.rank()), o.sigma);
  const auto radius = nodes::gaussian_radius(sigma, kMaxError, kMaxWidth);
  const CellGrid grid(shape, in.chunks);
  Array smooth = Array::make(DType::kF32, shape);
  std::vector<float> padded_in;
  std::vector<float> result;
  for (int64_t c = 0; c < grid.num_cells(); ++c) {
    const Box cell = grid.cell_box(grid.cell_at(c));
    CpuTimer timer;
    timer.time([&] {
      const Box padded = cell.grow(Dims{radius[0], radius[1], radius[2]}).intersect(whole);
      padded_in.resize(static_cast<size_t>(padded.volume()));
      copy_region(volume.bytes.data(), whole, padded_in.data(), padded, padded, sizeof(float));
      result.resize(static_cast<size_t>(cell.volume()));
      nodes::gaussian_filter_region_native(padded_in.data(), padded, result.data(), cell, sigma,
                                           kMaxError, kMaxWidth);
    });
    t.gaussian += timer.total;
    copy_region(result.data(), cell, smooth.bytes.data(), whole, cell, sizeof(float));
  }

  // Otsu: min and max, the histogram, the threshold, the mask.
  Array mask = Array::make(DType::kU8, shape);
  {
    CpuTimer timer;
    timer.time([&] {
      const float* v = smooth.as<float>();
      const int64_t n = shape.product();
      double lo = std::numeric_limits<double>::infinity();
      double hi = -lo;
      for (int64_t i = 0; i < n; ++i) {
        if (std::isnan(v[i])) continue;
        lo = std::min(lo, static_cast<double>(v[i]));
        hi = std::max(hi, static_cast<double>(v[i]));
      }
      double threshold = lo;
      if (lo < hi) {
        const auto edges = nodes::histogram_edges(lo, hi, kOtsuBins, true);
        std::vector<int64_t> counts(kOtsuBins, 0);
        for (int64_t i = 0; i < n; ++i) {
          if (std::isnan(v[i])) continue;
          ++counts[static_cast<size_t>(nodes::histogram_bin(edges, static_cast<double>(v[i])))];
        }
        threshold = nodes::otsu_threshold(counts, nodes::histogram_centers(edges, true));
      }
      auto* m = mask.as<uint8_t>();
      for (int64_t i = 0; i < n; ++i) m[i] = static_cast<double>(v[i]) > threshold ? 1 : 0;
    });
    t.otsu = timer.total;
  }

  t.labels = Array::make(DType::kU32, shape);
  {
    CpuTimer timer;
    timer.time([&] { label_whole(mask, t.labels); });
    t.label = timer.total;
  }

  Shape coarse(shape.rank());
  for (int d = 0; d < shape.rank(); ++d) coarse[d] = (shape[d] + o.region - 1) / o.region;
  Array counts = Array::make(DType::kU32, coarse);
  Array density = Array::make(DType::kF32, coarse);
  {
    CpuTimer timer;
    timer.time([&] { region_reductions(t.labels, mask, o.region, counts, density); });
    t.region = timer.total;
  }

  const std::map<std::string, const Array*> arrays = {{"smooth", &smooth},
                                                      {"mask", &mask},
                                                      {"labels", &t.labels},
                                                      {"counts", &counts},
                                                      {"density", &density}};
  fs::remove_all(out_dir);
  const auto env = posix_env(out_dir);
  for (const auto& [id, node] : persisted) {
    const auto it = arrays.find(id);
    if (it == arrays.end())
      throw InvalidArgument(fmt::format("floor: no floor array for persisted node \"{}\"", id));
    t.encode_write[id] = encode_write(*env, *node, *it->second);
  }
  fs::remove_all(out_dir);
  return t;
}

struct CellflowRun {
  double cpu = 0;
  double wall = 0;
};

CellflowRun run_cellflow(const GraphDef& def, const fs::path& cache, int threads) {
  fs::remove_all(cache);
  drop_node_images();
  MemoryCache::global().clear();
  CellflowRun r;
  const double cpu = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID);
  const auto wall = Clock::now();
  {
    Graph g = Graph::build(def, nodes::builtin_registry(), GraphOptions{cache});
    const RunReport report = materialize(g, {}, RunOptions{threads});
    r.cpu = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu;
    r.wall = std::chrono::duration<double>(Clock::now() - wall).count();
    // The floor encodes every cell of every persisted node: so must this run have.
    for (const NodeReport& n : report.nodes) {
      if (n.persisted && n.cells_computed != n.cells_total) {
        throw NodeError(fmt::format("floor: cellflow computed {} of the {} cells of node \"{}\"",
                                    n.cells_computed, n.cells_total, g.nodes()[n.node].def.id));
      }
    }
  }
  return r;
}

/// The persisted nodes of `def` (by id) when built on a cache.
std::map<std::string, GraphNode> persisted_nodes(const GraphDef& def, const fs::path& cache) {
  fs::remove_all(cache);
  Graph g = Graph::build(def, nodes::builtin_registry(), GraphOptions{cache});
  std::map<std::string, GraphNode> out;
  for (const GraphNode& n : g.nodes())
    if (n.persist) out.emplace(n.def.id, n);
  return out;
}

}  // namespace

void run_floor(const FloorOptions& o) {
  const fs::path tmp =
      fs::temp_directory_path() / fmt::format("cellflow-bench-floor-{}", ::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{tmp};

  fs::path zarr = o.zarr;
  if (zarr.empty()) {
    zarr = tmp / "input.zarr";
    generate_input(o, zarr);
  }
  zarr = fs::absolute(zarr);
  const Input in = open_input(zarr);
  if (in.shape.rank() != 3) throw InvalidArgument("floor: the input must be 3-D");
  fmt::print(
      "floor: input {} ({} f32, chunks {}, blosc), sigma {}, region {}, cellflow {} "
      "threads, floor 1 thread, {} reps\n",
      o.zarr.empty() ? "generated (synthetic.blobs seed 7)" : zarr.string(), in.shape.str(),
      in.chunks.str(), o.sigma, o.region, o.threads, o.reps);

  const GraphDef def_a = workload(zarr, o.sigma, false, o.region);
  const GraphDef def_b = workload(zarr, o.sigma, true, o.region);
  const fs::path cache = tmp / "cache";
  const auto nodes_a = persisted_nodes(def_a, cache);
  const auto nodes_b = persisted_nodes(def_b, cache);
  std::map<std::string, const GraphNode*> all;
  for (const auto* set : {&nodes_a, &nodes_b})
    for (const auto& [id, n] : *set) all.emplace(id, &n);
  const auto list = [](const std::map<std::string, GraphNode>& m) {
    std::string s;
    for (const auto& [id, n] : m) s += (s.empty() ? "" : ",") + id;
    return s;
  };
  fmt::print("A_persisted={}\nB_persisted={}\n", list(nodes_a), list(nodes_b));

  struct Side {
    std::vector<double> decode, kernel, encode_write, floor, cpu, wall, ratio;
  };
  Side a, b;
  std::vector<double> k_gauss, k_otsu, k_label, k_region;
  bool labels_checked = false;
  for (int rep = 0; rep < o.reps; ++rep) {
    const FloorTimes f = run_floor_once(in, o, all, tmp / "floor-out");
    const auto encode_sum = [&](const std::map<std::string, GraphNode>& m) {
      double s = 0;
      for (const auto& [id, n] : m) s += f.encode_write.at(id);
      return s;
    };
    const CellflowRun ra = run_cellflow(def_a, cache, o.threads);
    const CellflowRun rb = run_cellflow(def_b, cache, o.threads);
    const auto add = [](Side& s, double decode, double kernel, double enc, const CellflowRun& r) {
      s.decode.push_back(decode);
      s.kernel.push_back(kernel);
      s.encode_write.push_back(enc);
      s.floor.push_back(decode + kernel + enc);
      s.cpu.push_back(r.cpu);
      s.wall.push_back(r.wall);
      s.ratio.push_back(r.cpu / (decode + kernel + enc));
    };
    add(a, f.decode, f.gaussian, encode_sum(nodes_a), ra);
    add(b, f.decode, f.gaussian + f.otsu + f.label + f.region, encode_sum(nodes_b), rb);
    k_gauss.push_back(f.gaussian);
    k_otsu.push_back(f.otsu);
    k_label.push_back(f.label);
    k_region.push_back(f.region);
    if (!labels_checked) {
      // The floor computes what cellflow computes: the same labels, voxel for voxel.
      labels_checked = true;
      Graph g = Graph::build(def_b, nodes::builtin_registry(), GraphOptions{cache});
      const CellBuffer mine = g.image("labels")->read(Box::from_shape(in.shape));
      const bool same = mine.num_bytes() == f.labels.bytes.size() &&
                        std::memcmp(mine.data(), f.labels.bytes.data(), mine.num_bytes()) == 0;
      fmt::print("B_floor_labels_identical={}\n", same ? 1 : 0);
    }
  }
  const auto report = [&](const std::string& name, const Side& s) {
    fmt::print("{0}_cellflow_cpu_s={1:.3f}\n{0}_cellflow_wall_s={2:.3f}\n", name, median(s.cpu),
               median(s.wall));
    fmt::print(
        "{0}_floor_decode_s={1:.3f}\n{0}_floor_kernel_s={2:.3f}\n"
        "{0}_floor_encode_write_s={3:.3f}\n{0}_floor_s={4:.3f}\n",
        name, median(s.decode), median(s.kernel), median(s.encode_write), median(s.floor));
    if (name == "B") {
      fmt::print(
          "B_floor_kernel_gaussian_s={:.3f}\nB_floor_kernel_otsu_s={:.3f}\n"
          "B_floor_kernel_label_s={:.3f}\nB_floor_kernel_region_s={:.3f}\n",
          median(k_gauss), median(k_otsu), median(k_label), median(k_region));
    }
    // The median of the per-repetition ratios (both sides of one ratio ran back to back).
    fmt::print("{0}_ratio_vs_floor={1:.2f}\n", name, median(s.ratio));
  };
  report("A", a);
  report("B", b);
}

}  // namespace cellflow::bench

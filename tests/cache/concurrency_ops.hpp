// The writers of the concurrency matrix (tests/cache/concurrency_test.cpp),
// shared by the test (sequential and thread cases) and by
// cellflow_concurrency_worker (the process cases), so that every case runs
// the same code. Two small ops that count their computations:
//   test.pattern (source)  u16 voxels from seed and position
//   test.rows    (table)   `rows` rows per cell: cell, k, value
// Each computation is counted in this process (compute_counts()) and, when
// $CELLFLOW_TEST_COMPUTE_LOG names a file, appended to it as one line
// "<op> <seed> <cell box>" (O_APPEND: lines of concurrent writers never mix).
// Header-only; everything here is thread-safe.
#pragma once

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"
#include "cellflow/cache/metadata_lock.hpp"
#include "cellflow/cache/table.hpp"
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/graph/op.hpp"
#include "cellflow/graph/registry.hpp"

namespace cellflow::concurrency {

namespace fs = std::filesystem;

class ComputeCounts {
 public:
  void record(const std::string& key) {
    {
      std::lock_guard lock(mu_);
      ++counts_[key];
    }
    if (const char* log = std::getenv("CELLFLOW_TEST_COMPUTE_LOG"); log != nullptr && *log) {
      const std::string line = key + "\n";
      const int fd = ::open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd < 0) throw IoError(fmt::format("cannot open compute log {}", log));
      const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
      ::close(fd);
      if (!ok) throw IoError(fmt::format("cannot append to compute log {}", log));
    }
  }
  std::map<std::string, int> snapshot() const {
    std::lock_guard lock(mu_);
    return counts_;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, int> counts_;
};

inline ComputeCounts& compute_counts() {
  static ComputeCounts counts;
  return counts;
}

inline uint16_t pattern_value(int64_t seed, int64_t linear) {
  uint64_t x = static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(linear);
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 32;
  return static_cast<uint16_t>(x);
}

class PatternKernel final : public NodeKernel {
 public:
  PatternKernel(ImageInfo info, int64_t seed, int64_t sleep_ms)
      : NodeKernel(std::move(info)), seed_(seed), sleep_ms_(sleep_ms) {}
  void compute(const Box& box, std::span<const InputRegion>, CellBuffer& out) const override {
    compute_counts().record(fmt::format("pattern {} {}", seed_, box.str()));
    // Widens the window in which other writers could race for this cell.
    if (sleep_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms_));
    const Shape& shape = output().shape;
    auto* o = out.mutable_as<uint16_t>();
    int64_t i = 0;
    for_each_index(box, [&](const Dims& g) {
      int64_t lin = 0;
      for (int d = 0; d < g.rank(); ++d) lin = lin * shape[d] + g[d];
      o[i++] = pattern_value(seed_, lin);
    });
  }

 private:
  int64_t seed_, sleep_ms_;
};

class PatternOp final : public Op {
 public:
  std::string_view name() const override { return "test.pattern"; }
  int version() const override { return 1; }
  std::string_view doc() const override { return "u16 voxels from seed and position"; }
  std::vector<ParamSpec> params() const override {
    return {{"shape", ParamType::kIntList, Value(), "shape", true},
            {"cell_shape", ParamType::kIntList, Value(), "cell shape", true},
            {"seed", ParamType::kInt, Value(0), "seed"},
            {"sleep_ms", ParamType::kInt, Value(0), "sleep per cell"}};
  }
  int min_inputs() const override { return 0; }
  std::unique_ptr<NodeKernel> bind(const Params& p, std::span<const ImageInfo>) const override {
    ImageInfo info{DType::kU16, Shape::from(p.get_ints("shape")),
                   Shape::from(p.get_ints("cell_shape"))};
    return std::make_unique<PatternKernel>(info, p.get_int("seed"), p.get_int("sleep_ms"));
  }
};

class RowsKernel final : public NodeKernel {
 public:
  RowsKernel(ImageInfo info, int64_t seed, int64_t rows)
      : NodeKernel(std::move(info)), seed_(seed), rows_(rows) {}
  Table compute_rows(const Box& box, std::span<const InputRegion>) const override {
    compute_counts().record(fmt::format("rows {} {}", seed_, box.str()));
    const CellGrid grid(output().shape, output().cell_shape);
    CellIndex cell(box.rank());
    for (int d = 0; d < box.rank(); ++d) cell[d] = box.begin()[d] / grid.cell_shape()[d];
    const auto c = static_cast<double>(grid.linear(cell));
    Table t({"cell", "k", "value"});
    for (int64_t k = 0; k < rows_; ++k) {
      const double row[3] = {c, static_cast<double>(k),
                             static_cast<double>(seed_ * 1000000 + grid.linear(cell) * 100 + k)};
      t.add_row(row);
    }
    return t;
  }

 private:
  int64_t seed_, rows_;
};

class RowsOp final : public Op {
 public:
  std::string_view name() const override { return "test.rows"; }
  int version() const override { return 1; }
  std::string_view doc() const override { return "a table: rows per cell"; }
  std::vector<ParamSpec> params() const override {
    return {{"shape", ParamType::kIntList, Value(), "domain shape", true},
            {"cell_shape", ParamType::kIntList, Value(), "cell shape", true},
            {"seed", ParamType::kInt, Value(0), "seed"},
            {"rows", ParamType::kInt, Value(3), "rows per cell"}};
  }
  int min_inputs() const override { return 0; }
  std::unique_ptr<NodeKernel> bind(const Params& p, std::span<const ImageInfo>) const override {
    ImageInfo info{DType::kU8, Shape::from(p.get_ints("shape")),
                   Shape::from(p.get_ints("cell_shape")), OutputKind::kTable};
    return std::make_unique<RowsKernel>(info, p.get_int("seed"), p.get_int("rows"));
  }
};

inline Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    reg->add(std::make_shared<PatternOp>());
    reg->add(std::make_shared<RowsOp>());
    return reg;
  }();
  return *r;
}

inline Value ints(std::initializer_list<int64_t> v) {
  Value::Array a;
  for (int64_t x : v) a.emplace_back(x);
  return Value(std::move(a));
}

/// One node "img" of test.pattern: 24x20x16 voxels in 8x8x8 cells (3x3x2 = 18).
inline GraphDef pattern_graph(int64_t seed, int64_t sleep_ms = 0) {
  GraphDef def;
  def.add("img", "test.pattern", {},
          Value(Value::Object{{"shape", ints({24, 20, 16})},
                              {"cell_shape", ints({8, 8, 8})},
                              {"seed", seed},
                              {"sleep_ms", sleep_ms}}));
  return def;
}
inline constexpr int64_t kPatternCells = 18;

/// One table node "rows" over a 40x30 domain in 4x3 cells (10x10 = 100 cells).
inline GraphDef rows_graph(int64_t seed) {
  GraphDef def;
  def.add("rows", "test.rows", {},
          Value(Value::Object{
              {"shape", ints({40, 30})}, {"cell_shape", ints({4, 3})}, {"seed", seed}}));
  return def;
}
inline constexpr int64_t kRowsCells = 100;
inline constexpr int64_t kRowsPerCell = 3;

inline Graph build(GraphDef def, const fs::path& cache) {
  GraphOptions o;
  o.cache_root = cache;
  return Graph::build(std::move(def), registry(), o);
}

/// FNV-1a of a buffer's bytes, as 16 hex digits.
inline std::string digest(const void* data, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return fmt::format("{:016x}", h);
}

inline std::string image_digest(const Graph& g) {
  auto img = g.image("img");
  const CellBuffer all = img->read(img->grid().bounds());
  return digest(all.data(), all.num_bytes());
}

/// (a) adds node "img" of seed `seed` to the cache; returns its data's digest.
inline std::string add_node(const fs::path& cache, int64_t seed) {
  const Graph g = build(pattern_graph(seed), cache);
  materialize(g);
  return image_digest(g);
}

/// (b) every writer computes the same node (cells take `sleep_ms` each).
inline std::string compute_shared_node(const fs::path& cache, int64_t seed, int64_t sleep_ms) {
  const Graph g = build(pattern_graph(seed, sleep_ms), cache);
  RunOptions options;
  options.threads = 2;
  materialize(g, {}, options);
  return image_digest(g);
}

/// (c) writer `writer` of `writers` computes the table cells c with
/// c % writers == writer, then reads the whole table (which computes
/// whatever other writers have not committed yet). Returns the table's CSV.
inline std::string append_rows(const fs::path& cache, int64_t seed, int writer, int writers) {
  const Graph g = build(rows_graph(seed), cache);
  auto img = g.image("rows");
  const CellGrid& grid = img->grid();
  for (int64_t c = writer; c < grid.num_cells(); c += writers) img->ensure(grid.cell_at(c));
  return g.table("rows").to_csv();
}

/// (d) opens node "img" (creating its folder and .zattrs if it is the first),
/// then makes `updates` read-modify-write updates of its .zattrs: sets
/// "writer_<writer>" to the update count and increments "counter"; after
/// every update it reads the file back unlocked and checks it parses and
/// still holds the node's definition. Returns the .zattrs path.
inline fs::path update_metadata(const fs::path& cache, int64_t seed, int writer, int updates) {
  const Graph g = build(pattern_graph(seed), cache);
  (void)g.image("img");  // creates the node folder
  const fs::path zattrs = cache / g.node("img").hash / ".zattrs";
  for (int k = 1; k <= updates; ++k) {
    update_json_atomic(zattrs, [&](Value& v) {
      const Value* counter = v.find("counter");
      v.set("counter", counter != nullptr ? counter->as_int() + 1 : int64_t{1});
      v.set(fmt::format("writer_{}", writer), k);
    });
    // A reader without the lock sees a whole file, never a half-written one.
    const Value now = parse_json(*read_file(zattrs), zattrs.string());
    if (now.find("cellflow") == nullptr || now.find("multiscales") == nullptr)
      throw CorruptionError(fmt::format("{}: lost the node's definition", zattrs.string()));
    const std::optional<Value> locked = read_json_locked(zattrs);
    if (!locked || locked->find("counter") == nullptr)
      throw CorruptionError(fmt::format("{}: lost the counter", zattrs.string()));
  }
  return zattrs;
}

}  // namespace cellflow::concurrency

// Many writers, one cache: the matrix sequential x threads x processes (10
// writers each) for (a) adding different nodes, (b) computing the cells of one
// node, (c) appending the rows of different regions of one table, and (d)
// updating one node's .zattrs. At the end every addition is present, nothing
// is duplicated or corrupt, no temporary file is left, and every cell was
// computed exactly once across all writers. The writers are in
// concurrency_ops.hpp; the process case runs cellflow_concurrency_worker.
// The thread cases run under TSan with scripts/tsan.sh (which also builds a
// TSan-instrumented oneTBB: with Debian's uninstrumented libtbb, TSan reports
// every hand-off of data to a TBB task as a race).
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <latch>
#include <set>
#include <sstream>
#include <thread>

#include "cache/concurrency_ops.hpp"
#include "cellflow/cache/table_store.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "test_util.hpp"

extern char** environ;

namespace cellflow {
namespace {

namespace cc = concurrency;
namespace fs = std::filesystem;

constexpr int kWriters = 10;

enum class Mode { kSequential, kThreads, kProcesses };

std::string mode_name(Mode m) {
  switch (m) {
    case Mode::kSequential:
      return "Sequential";
    case Mode::kThreads:
      return "Threads";
    case Mode::kProcesses:
      return "Processes";
  }
  return "?";
}

// Spawns one worker process; its stderr goes to `err`.
pid_t spawn_worker(const std::vector<std::string>& args, const fs::path& log, const fs::path& err) {
  std::vector<char*> argv;
  std::string program = CELLFLOW_CONCURRENCY_WORKER;
  argv.push_back(program.data());
  std::vector<std::string> copy = args;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "CELLFLOW_TEST_COMPUTE_LOG=", 26) != 0) env_strings.emplace_back(*e);
  env_strings.push_back("CELLFLOW_TEST_COMPUTE_LOG=" + log.string());
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw IoError(std::string("posix_spawn: ") + std::strerror(rc));
  return pid;
}

struct WriterResults {
  std::vector<std::string> results;     // per writer
  std::vector<std::string> errors;      // per writer; empty = success
  std::map<std::string, int> computed;  // "op seed box" -> computations, all writers
};

// Runs `kWriters` writers in `mode`. In-process writers call `writer(i)`;
// process writers run the worker with `worker_mode` and seed `seed_of(i)`.
WriterResults run_writers(Mode mode, const fs::path& cache, const fs::path& scratch,
                          const std::string& worker_mode,
                          const std::function<int64_t(int)>& seed_of,
                          const std::function<std::string(int)>& writer) {
  WriterResults out;
  out.results.resize(kWriters);
  out.errors.resize(kWriters);
  const auto before = cc::compute_counts().snapshot();
  if (mode == Mode::kSequential || mode == Mode::kThreads) {
    const auto call = [&](int i) {
      try {
        out.results[static_cast<size_t>(i)] = writer(i);
      } catch (const std::exception& e) {
        out.errors[static_cast<size_t>(i)] = e.what();
      }
    };
    if (mode == Mode::kSequential) {
      for (int i = 0; i < kWriters; ++i) call(i);
    } else {
      std::latch go(1);
      std::vector<std::thread> threads;
      for (int i = 0; i < kWriters; ++i)
        threads.emplace_back([&, i] {
          go.wait();
          call(i);
        });
      go.count_down();  // all start together
      for (auto& t : threads) t.join();
    }
    for (const auto& [key, n] : cc::compute_counts().snapshot()) {
      const auto it = before.find(key);
      const int added = n - (it == before.end() ? 0 : it->second);
      if (added > 0) out.computed[key] = added;
    }
    return out;
  }
  const fs::path go = scratch / "go";
  std::vector<pid_t> pids;
  for (int i = 0; i < kWriters; ++i) {
    const std::string n = std::to_string(i);
    pids.push_back(
        spawn_worker({worker_mode, cache.string(), std::to_string(seed_of(i)), n,
                      std::to_string(kWriters), go.string(), (scratch / ("out-" + n)).string()},
                     scratch / ("log-" + n), scratch / ("err-" + n)));
  }
  test::write_all(go, "go");  // all start together
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(100);
  for (int i = 0; i < kWriters; ++i) {
    int status = 0;
    pid_t r = 0;
    while ((r = ::waitpid(pids[static_cast<size_t>(i)], &status, WNOHANG)) == 0 &&
           std::chrono::steady_clock::now() < give_up)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const std::string n = std::to_string(i);
    if (r == 0) {
      ::kill(pids[static_cast<size_t>(i)], SIGKILL);
      ::waitpid(pids[static_cast<size_t>(i)], &status, 0);
      out.errors[static_cast<size_t>(i)] = "timed out (killed)";
      continue;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      out.errors[static_cast<size_t>(i)] =
          "exit status " + std::to_string(status) + ": " +
          (fs::exists(scratch / ("err-" + n)) ? test::read_all(scratch / ("err-" + n)) : "");
      continue;
    }
    out.results[static_cast<size_t>(i)] = test::read_all(scratch / ("out-" + n));
    if (fs::exists(scratch / ("log-" + n))) {
      std::istringstream lines(test::read_all(scratch / ("log-" + n)));
      for (std::string line; std::getline(lines, line);)
        if (!line.empty()) ++out.computed[line];
    }
  }
  return out;
}

void expect_no_errors(const WriterResults& r) {
  for (int i = 0; i < kWriters; ++i)
    EXPECT_EQ(r.errors[static_cast<size_t>(i)], "") << "writer " << i;
}

// Files that must not survive a run: temporaries of atomic writes.
std::vector<std::string> temp_files(const fs::path& root) {
  std::vector<std::string> out;
  for (const std::string& p : test::listing(root))
    if (p.find(".tmp") != std::string::npos) out.push_back(p);
  return out;
}

// Every committed cell of node "img" decodes (checksum) and equals `reference`.
void expect_cells_verify(const fs::path& node_dir, const CellBuffer& reference) {
  auto array = ZarrArray::open(node_dir / "0");
  const CellGrid& grid = array->grid();
  ASSERT_EQ(grid.num_cells(), cc::kPatternCells);
  for (int64_t c = 0; c < grid.num_cells(); ++c) {
    const CellIndex cell = grid.cell_at(c);
    std::optional<CellBuffer> stored;
    ASSERT_NO_THROW(stored = array->read(cell)) << node_dir << " cell " << cell.str();
    ASSERT_TRUE(stored.has_value()) << node_dir << " cell " << cell.str() << " is missing";
    const Box box = grid.cell_box(cell);
    CellBuffer want = CellBuffer::allocate(reference.dtype(), box.shape());
    copy_region(reference.data(), grid.bounds(), want.mutable_data(), box, box,
                dtype_size(reference.dtype()));
    EXPECT_TRUE(test::same_bytes(*stored, want)) << node_dir << " cell " << cell.str();
  }
}

CellBuffer reference_image(int64_t seed) {
  const Graph g = Graph::build(cc::pattern_graph(seed), cc::registry());  // in memory
  auto img = g.image("img");
  return img->read(img->grid().bounds());
}

class ConcurrencyMatrix : public ::testing::TestWithParam<Mode> {
 protected:
  int64_t mode_index() const { return static_cast<int64_t>(GetParam()); }
  // Every writer computes node "img" of pattern_graph(seed); all read back the reference.
  WriterResults compute_node_by_all_writers(const fs::path& cache, int64_t seed);
  test::TempDir tmp_;
};

// (a) Each writer adds its own node (a different seed) to one cache.
TEST_P(ConcurrencyMatrix, AddDifferentNodes) {
  const fs::path cache = tmp_ / "cache";
  const auto seed_of = [&](int i) { return 1000 + 100 * mode_index() + i; };
  const WriterResults r = run_writers(GetParam(), cache, tmp_.path(), "add-node", seed_of,
                                      [&](int i) { return cc::add_node(cache, seed_of(i)); });
  expect_no_errors(r);
  std::set<std::string> node_dirs;
  for (int i = 0; i < kWriters; ++i) {
    SCOPED_TRACE("writer " + std::to_string(i));
    const int64_t seed = seed_of(i);
    const CellBuffer reference = reference_image(seed);
    EXPECT_EQ(r.results[static_cast<size_t>(i)],
              cc::digest(reference.data(), reference.num_bytes()));
    const Graph g = cc::build(cc::pattern_graph(seed), cache);
    const std::string hash = g.node("img").hash;
    node_dirs.insert(hash);
    const fs::path dir = cache / hash;
    const std::optional<Value> attrs = read_json_locked(dir / ".zattrs");
    ASSERT_TRUE(attrs.has_value());
    ASSERT_NE(attrs->find("cellflow"), nullptr);
    EXPECT_EQ(attrs->find("cellflow")->find("hash")->as_string(), hash);
    EXPECT_TRUE(fs::exists(dir / ".cellflow-complete"));
    expect_cells_verify(dir, reference);
    for (int64_t c = 0; c < cc::kPatternCells; ++c) {
      const CellGrid grid(Shape{24, 20, 16}, Shape{8, 8, 8});
      const Box box = grid.cell_box(grid.cell_at(c));
      EXPECT_EQ(r.computed.count(fmt::format("pattern {} {}", seed, box.str())), 1u) << box.str();
    }
  }
  std::set<std::string> found;
  for (const auto& e : fs::directory_iterator(cache))
    if (e.is_directory()) found.insert(e.path().filename().string());
  EXPECT_EQ(found, node_dirs);
  EXPECT_EQ(temp_files(cache), std::vector<std::string>{});
  size_t total = 0;
  for (const auto& [key, n] : r.computed) {
    EXPECT_EQ(n, 1) << key;
    total += static_cast<size_t>(n);
  }
  EXPECT_EQ(total, static_cast<size_t>(kWriters * cc::kPatternCells));
}

void expect_each_cell_computed_once(const WriterResults& r) {
  EXPECT_EQ(r.computed.size(), static_cast<size_t>(cc::kPatternCells));
  int total = 0;
  for (const auto& [key, n] : r.computed) {
    EXPECT_EQ(n, 1) << key << " was computed " << n << " times";
    total += n;
  }
  EXPECT_EQ(total, cc::kPatternCells) << "each cell once in total, not once per writer";
}

// (b) All writers compute the same node: each cell is computed once in total.
WriterResults ConcurrencyMatrix::compute_node_by_all_writers(const fs::path& cache, int64_t seed) {
  WriterResults r = run_writers(
      GetParam(), cache, tmp_.path(), "compute-node", [&](int) { return seed; },
      [&](int) { return cc::compute_shared_node(cache, seed, 2); });
  expect_no_errors(r);
  const CellBuffer reference = reference_image(seed);
  const std::string want = cc::digest(reference.data(), reference.num_bytes());
  for (int i = 0; i < kWriters; ++i)
    EXPECT_EQ(r.results[static_cast<size_t>(i)], want) << "writer " << i;
  return r;
}

TEST_P(ConcurrencyMatrix, ComputeCellsOfOneNode) {
  const fs::path cache = tmp_ / "cache";
  const int64_t seed = 2000 + mode_index();
  const WriterResults r = compute_node_by_all_writers(cache, seed);
  const CellBuffer reference = reference_image(seed);
  const Graph g = cc::build(cc::pattern_graph(seed, 2), cache);
  const fs::path dir = cache / g.node("img").hash;
  EXPECT_TRUE(fs::exists(dir / ".cellflow-complete"));
  expect_cells_verify(dir, reference);
  expect_each_cell_computed_once(r);
  EXPECT_EQ(temp_files(cache), std::vector<std::string>{});
}

// (b') The same in a sharded cache: the writers that find the node complete
// pack it; each cell is still computed once in total, and the packed node
// (Zarr v3 shards, no single cell files left) holds every cell intact.
TEST_P(ConcurrencyMatrix, ComputeCellsOfOneShardedNode) {
  const fs::path cache = tmp_ / "cache";
  const int64_t seed = 2500 + mode_index();
  constexpr int64_t kShardCells = 4;  // 18 cells in 6 shards
  ::setenv("CELLFLOW_SHARD_CELLS", std::to_string(kShardCells).c_str(), 1);
  const WriterResults r = compute_node_by_all_writers(cache, seed);
  ::unsetenv("CELLFLOW_SHARD_CELLS");
  const CellBuffer reference = reference_image(seed);
  const Graph g = cc::build(cc::pattern_graph(seed, 2), cache);
  const std::string hash = g.node("img").hash;
  const fs::path dir = cache / hash;
  EXPECT_TRUE(fs::exists(dir / ".cellflow-complete"));
  EXPECT_TRUE(fs::exists(dir / "0" / "zarr.json"));
  EXPECT_FALSE(fs::exists(dir / "0" / ".zarray"));
  auto array = ZarrArray::open(posix_env(cache), hash + "/0", hash, kShardCells);
  EXPECT_TRUE(array->is_packed());
  const CellGrid& grid = array->grid();
  ASSERT_EQ(grid.num_cells(), cc::kPatternCells);
  for (int64_t c = 0; c < grid.num_cells(); ++c) {
    const CellIndex cell = grid.cell_at(c);
    EXPECT_FALSE(fs::exists(array->cell_path(cell))) << "single file left: " << cell.str();
    std::optional<CellBuffer> stored;
    ASSERT_NO_THROW(stored = array->read(cell)) << cell.str();
    ASSERT_TRUE(stored.has_value()) << cell.str() << " is missing";
    const Box box = grid.cell_box(cell);
    CellBuffer expected = CellBuffer::allocate(reference.dtype(), box.shape());
    copy_region(reference.data(), grid.bounds(), expected.mutable_data(), box, box,
                dtype_size(reference.dtype()));
    EXPECT_TRUE(test::same_bytes(*stored, expected)) << cell.str();
  }
  expect_each_cell_computed_once(r);
  EXPECT_EQ(temp_files(cache), std::vector<std::string>{});
}

// (c) Writers append the rows of different regions (cells) of one table, then
// read the whole table: all rows present, none duplicated.
TEST_P(ConcurrencyMatrix, AppendTableRows) {
  const fs::path cache = tmp_ / "cache";
  const int64_t seed = 3000 + mode_index();
  const WriterResults r = run_writers(
      GetParam(), cache, tmp_.path(), "table-rows", [&](int) { return seed; },
      [&](int i) { return cc::append_rows(cache, seed, i, kWriters); });
  expect_no_errors(r);
  const Graph mem = Graph::build(cc::rows_graph(seed), cc::registry());
  const Table reference = mem.table("rows");
  ASSERT_EQ(reference.num_rows(), static_cast<size_t>(cc::kRowsCells * cc::kRowsPerCell));
  for (int i = 0; i < kWriters; ++i)
    EXPECT_EQ(r.results[static_cast<size_t>(i)], reference.to_csv()) << "writer " << i;
  // What is on disk, read file by file.
  const Graph g = cc::build(cc::rows_graph(seed), cache);
  TableStore store(cache / g.node("rows").hash / "table");
  const CellGrid grid(Shape{40, 30}, Shape{4, 3});
  std::set<std::pair<int64_t, int64_t>> seen;
  size_t rows = 0;
  for (int64_t c = 0; c < grid.num_cells(); ++c) {
    const CellIndex cell = grid.cell_at(c);
    std::optional<CellBuffer> b;
    ASSERT_NO_THROW(b = store.read(cell)) << cell.str();
    ASSERT_TRUE(b.has_value()) << "table cell " << cell.str() << " is missing";
    const Table t = Table::deserialize(
        std::string_view(reinterpret_cast<const char*>(b->data()), b->num_bytes()),
        "cell " + cell.str());
    EXPECT_EQ(t.num_rows(), static_cast<size_t>(cc::kRowsPerCell));
    for (size_t k = 0; k < t.num_rows(); ++k) {
      EXPECT_EQ(static_cast<int64_t>(t.at(k, 0)), c);
      EXPECT_TRUE(
          seen.emplace(static_cast<int64_t>(t.at(k, 0)), static_cast<int64_t>(t.at(k, 1))).second)
          << "duplicated row " << t.at(k, 0) << "," << t.at(k, 1);
      ++rows;
    }
    const Box box = grid.cell_box(cell);
    EXPECT_EQ(r.computed.count(fmt::format("rows {} {}", seed, box.str())), 1u) << box.str();
  }
  EXPECT_EQ(rows, static_cast<size_t>(cc::kRowsCells * cc::kRowsPerCell));
  for (const auto& [key, n] : r.computed)
    EXPECT_EQ(n, 1) << key << " was computed " << n << " times";
  EXPECT_EQ(g.table("rows"), reference);
  EXPECT_EQ(temp_files(cache), std::vector<std::string>{});
}

// (d) Writers open one node (the first creates it) and update its .zattrs
// 20 times each under the metadata lock: no update is lost.
TEST_P(ConcurrencyMatrix, UpdateMetadata) {
  const fs::path cache = tmp_ / "cache";
  const int64_t seed = 4000 + mode_index();
  constexpr int kUpdates = 20;
  const WriterResults r = run_writers(
      GetParam(), cache, tmp_.path(), "metadata", [&](int) { return seed; },
      [&](int i) { return cc::update_metadata(cache, seed, i, kUpdates).string(); });
  expect_no_errors(r);
  const Graph g = cc::build(cc::pattern_graph(seed), cache);
  const fs::path dir = cache / g.node("img").hash;
  const std::optional<Value> attrs = read_json_locked(dir / ".zattrs");
  ASSERT_TRUE(attrs.has_value());
  EXPECT_EQ(attrs->find("counter")->as_int(), kWriters * kUpdates) << to_json(*attrs);
  for (int i = 0; i < kWriters; ++i) {
    const Value* w = attrs->find("writer_" + std::to_string(i));
    ASSERT_NE(w, nullptr) << "writer " << i << "'s key is missing";
    EXPECT_EQ(w->as_int(), kUpdates);
  }
  // The node's own metadata survived every update.
  const Value original =
      parse_json(node_zattrs_json(g.node("img").hash, 3, to_json_compact(g.node("img").definition)),
                 "expected");
  EXPECT_EQ(*attrs->find("cellflow"), *original.find("cellflow"));
  EXPECT_EQ(*attrs->find("multiscales"), *original.find("multiscales"));
  EXPECT_EQ(temp_files(cache), std::vector<std::string>{});
}

INSTANTIATE_TEST_SUITE_P(Writers, ConcurrencyMatrix,
                         ::testing::Values(Mode::kSequential, Mode::kThreads, Mode::kProcesses),
                         [](const ::testing::TestParamInfo<Mode>& info) {
                           return mode_name(info.param);
                         });

// The metadata lock itself: re-entrant per thread, exclusive between threads,
// shared between readers, and an upgrade is refused instead of deadlocking.
TEST(MetadataLock, ReentrantWithinAThreadExclusiveBetweenThreads) {
  test::TempDir tmp;
  std::atomic<bool> other_got_it{false};
  std::thread other;
  {
    const MetadataLock outer(tmp.path(), MetadataLock::Mode::kExclusive);
    {
      const MetadataLock inner(tmp.path(), MetadataLock::Mode::kExclusive);
      const MetadataLock reader(tmp.path() / ".", MetadataLock::Mode::kShared);  // same folder
      EXPECT_EQ(reader.mode(), MetadataLock::Mode::kExclusive);
    }
    // Still held by this thread: a nested update works, another thread waits.
    update_json_atomic(tmp / "a.json", [](Value& v) { v.set("x", 1); });
    // Another thread is refused (a try), then waits and gets it once released.
    std::thread([&] {
      EXPECT_THROW(
          MetadataLock(tmp.path(), MetadataLock::Mode::kShared, std::chrono::milliseconds(0)),
          LockTimeout);
    }).join();
    other = std::thread([&] {
      const MetadataLock l(tmp.path(), MetadataLock::Mode::kExclusive);
      other_got_it = true;
    });
  }
  other.join();
  EXPECT_TRUE(other_got_it.load());
  EXPECT_TRUE(fs::exists(MetadataLock::lock_path(tmp.path())));
}

TEST(MetadataLock, AWriterNeverOverlapsReadersUnderLoad) {
  test::TempDir tmp;
  std::atomic<int> readers_inside{0};
  std::atomic<bool> writer_saw_reader{false};
  std::latch go(1);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      go.wait();
      for (int k = 0; k < 50; ++k) {
        const MetadataLock l(tmp.path(), MetadataLock::Mode::kShared);
        readers_inside.fetch_add(1);
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        readers_inside.fetch_sub(1);
      }
    });
  threads.emplace_back([&] {
    go.wait();
    for (int k = 0; k < 50; ++k) {
      const MetadataLock l(tmp.path(), MetadataLock::Mode::kExclusive);
      if (readers_inside.load() != 0) writer_saw_reader = true;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      if (readers_inside.load() != 0) writer_saw_reader = true;
    }
  });
  go.count_down();
  for (auto& t : threads) t.join();
  EXPECT_FALSE(writer_saw_reader.load());
  // That readers share is proven in env_lock_test.cpp (MetadataLockProof):
  // how many overlapped here depends on scheduling, so it is not asserted.
}

TEST(MetadataLock, UpgradeIsRefused) {
  test::TempDir tmp;
  const MetadataLock reader(tmp.path(), MetadataLock::Mode::kShared);
  EXPECT_THROW(MetadataLock(tmp.path(), MetadataLock::Mode::kExclusive), InvalidArgument);
  EXPECT_THROW(update_json_atomic(tmp / "x.json", [](Value&) {}), InvalidArgument);
}

TEST(MetadataLock, FailedUpdateWritesNothing) {
  test::TempDir tmp;
  update_json_atomic(tmp / "m.json", [](Value& v) { v.set("a", 1); });
  const std::string before = test::read_all(tmp / "m.json");
  EXPECT_THROW(update_json_atomic(tmp / "m.json",
                                  [](Value& v) {
                                    v.set("a", 2);
                                    throw std::runtime_error("changed my mind");
                                  }),
               std::runtime_error);
  EXPECT_EQ(test::read_all(tmp / "m.json"), before);
  EXPECT_EQ(temp_files(tmp.path()), std::vector<std::string>{});
  EXPECT_FALSE(read_json_locked(tmp / "absent.json").has_value());
}

}  // namespace
}  // namespace cellflow

// `cellflow blockwise TASK.json`: a task whose op (fault.blocks, from the
// fault plugin) crashes in one block and hangs in another runs in worker
// processes to the end; those two blocks fail after their retries, every other
// block is done with the right values, and a re-run skips the done blocks
// without recomputing them. Also: the same task in threads, and task files
// with mistakes rejected by field.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/graph/value.hpp"
#include "cli_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

constexpr int64_t kH = 24, kW = 32;

float input_value(int64_t y, int64_t x) { return static_cast<float>((y * 37 + x * 11) % 101); }

/// The op's result at (y, x) computed here, independently: the sum of the
/// 3x3 neighbourhood, zero outside the image.
float expected_sum(int64_t y, int64_t x) {
  float sum = 0;
  for (int64_t dy = -1; dy <= 1; ++dy)
    for (int64_t dx = -1; dx <= 1; ++dx) {
      const int64_t yy = y + dy, xx = x + dx;
      if (yy >= 0 && yy < kH && xx >= 0 && xx < kW) sum += input_value(yy, xx);
    }
  return sum;
}

struct BlockwiseRun {
  TempDir tmp;
  fs::path task = tmp / "task.json";
  fs::path out = tmp / "out.zarr";
  fs::path report = tmp / "report.json";

  explicit BlockwiseRun(const std::string& params) {
    // The input: f32, 24 x 32 in 8 x 8 chunks.
    const CellGrid grid(Shape{kH, kW}, Shape{8, 8});
    const auto in = ZarrArray::create(tmp / "in.zarr", DType::kF32, grid);
    for (int64_t i = 0; i < grid.num_cells(); ++i) {
      const CellIndex cell = grid.cell_at(i);
      const Box box = grid.cell_box(cell);
      CellBuffer buf = CellBuffer::allocate(DType::kF32, box.shape());
      float* p = buf.mutable_as<float>();
      for_each_index(box, [&](const Dims& q) { *p++ = input_value(q[0], q[1]); });
      in->write(cell, buf);
    }
    // Context 1 on every side, write blocks 8 x 8; with "shrink" the total
    // write ROI [1,23) x [1,31) gives 3 x 4 blocks, the last row and column
    // clipped.
    write_all(task, R"({
      "name": "neighbour_sum",
      "inputs": {"raw": {"zarr": "in.zarr"}},
      "read_roi": {"offset": [0, 0], "shape": [10, 10]},
      "write_roi": {"offset": [1, 1], "shape": [8, 8]},
      "fit": "shrink",
      "read_write_conflict": false,
      "num_workers": 2,
      "max_retries": 1,
      "timeout": 1.5,
      "process": {"op": "fault.blocks", "params": )" +
                        params + R"(},
      "output": {"zarr": "out.zarr"},
      "check": "output"
    })");
  }

  CommandResult run(std::vector<std::string> extra) const {
    std::vector<std::string> args{"blockwise",           task.string(),   "--plugin",
                                  CELLFLOW_FAULT_PLUGIN, "--report-json", report.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_cli(args, tmp.path());
  }

  Value read_report() const { return parse_json(read_all(report), report.string()); }

  /// Checks every chunk of the output that exists against expected_sum();
  /// returns the linear indexes of the chunks present.
  std::set<int64_t> check_output() const {
    const auto arr = ZarrArray::open(out);
    const CellGrid& grid = arr->grid();
    EXPECT_EQ(grid.shape(), (Shape{kH - 2, kW - 2}));
    std::set<int64_t> present;
    for (int64_t i = 0; i < grid.num_cells(); ++i) {
      const CellIndex cell = grid.cell_at(i);
      if (!arr->contains(cell)) continue;
      present.insert(i);
      const std::optional<CellBuffer> buf = arr->read(cell);
      EXPECT_TRUE(buf.has_value());
      if (!buf) continue;
      const float* p = buf->as<float>();
      int64_t bad = 0;
      // Output voxel (y, x) is image voxel (y + 1, x + 1): the total write ROI's origin.
      for_each_index(grid.cell_box(cell), [&](const Dims& q) {
        const float v = *p++;
        if (v != expected_sum(q[0] + 1, q[1] + 1)) ++bad;
      });
      EXPECT_EQ(bad, 0) << "block " << i;
    }
    return present;
  }
};

std::set<int64_t> ids(const Value& list) {
  std::set<int64_t> out;
  for (const Value& v : list.as_array())
    out.insert(v.is_object() ? v.find("block")->as_int() : v.as_int());
  return out;
}

// Block (0,1) writes from (1, 9): id 1. Block (1,2) writes from (9, 17): id 6.
constexpr const char* kFaults = R"({"segfault_at": [1, 9], "hang_at": [9, 17]})";

TEST(CliBlockwise, CrashingAndHangingBlocksFailInWorkersTheRestIsDoneAndARerunSkipsIt) {
#if defined(__SANITIZE_ADDRESS__)
  ::setenv("ASAN_OPTIONS", "handle_segv=0:detect_leaks=0", 1);
#endif
  BlockwiseRun f(kFaults);
  const auto start = std::chrono::steady_clock::now();
  const CommandResult r = f.run({"--workers", "2", "--progress"});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_LT(seconds, 60) << "the hanging block must be killed at its timeout";
  // --progress: a line per finished block, and per failed attempt.
  EXPECT_NE(r.err.find("[12/12] block "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("block 1 (0,1): attempt failed: worker killed by signal 11"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("block 1 (0,1): failed: worker killed by signal 11"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("block 6 (1,2): attempt failed: timed out after 1.5 s (worker killed)"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("block 6 (1,2): failed: timed out after 1.5 s (worker killed)"),
            std::string::npos)
      << r.err;

  const Value rep = f.read_report();
  EXPECT_EQ(rep.find("blocks")->as_int(), 12);
  EXPECT_EQ(rep.find("done")->as_int(), 10);
  EXPECT_EQ(rep.find("skipped")->as_int(), 0);
  EXPECT_EQ(rep.find("failed")->as_int(), 2);
  EXPECT_EQ(rep.find("orphaned")->as_int(), 0);
  EXPECT_EQ(rep.find("retries")->as_int(), 2);
  EXPECT_EQ(ids(*rep.find("failed_blocks")), (std::set<int64_t>{1, 6}));
  std::set<int64_t> others;
  for (int64_t i = 0; i < 12; ++i)
    if (i != 1 && i != 6) others.insert(i);
  EXPECT_EQ(ids(*rep.find("done_blocks")), others);
  for (const Value& failure : rep.find("failed_blocks")->as_array()) {
    EXPECT_EQ(failure.find("attempts")->as_int(), 2);
    const std::string& error = failure.find("error")->as_string();
    if (failure.find("block")->as_int() == 1) {
      EXPECT_NE(error.find("signal 11"), std::string::npos) << error;
    } else {
      EXPECT_NE(error.find("timed out"), std::string::npos) << error;
    }
  }
  EXPECT_EQ(f.check_output(), others);

  // The re-run skips every done block (their chunks are not rewritten) and
  // tries the failing ones again.
  std::map<int64_t, fs::file_time_type> written;
  const auto arr = ZarrArray::open(f.out);
  for (int64_t i : others) written[i] = fs::last_write_time(arr->cell_path(arr->grid().cell_at(i)));
  const CommandResult again = f.run({"--workers", "2"});
  ASSERT_EQ(again.exit_code, 1) << describe(again);
  const Value rep2 = f.read_report();
  EXPECT_EQ(rep2.find("done")->as_int(), 0);
  EXPECT_EQ(rep2.find("skipped")->as_int(), 10);
  EXPECT_EQ(rep2.find("failed")->as_int(), 2);
  EXPECT_EQ(ids(*rep2.find("skipped_blocks")), others);
  EXPECT_TRUE(rep2.find("done_blocks")->as_array().empty());
  for (int64_t i : others)
    EXPECT_EQ(fs::last_write_time(arr->cell_path(arr->grid().cell_at(i))), written[i])
        << "block " << i << " was recomputed";
  EXPECT_EQ(f.check_output(), others);
}

/// `task` with `from` replaced by `to` (which must be there).
void edit_task(const fs::path& task, const std::string& from, const std::string& to) {
  std::string text = read_all(task);
  const size_t at = text.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  text.replace(at, from.size(), to);
  write_all(task, text);
}

/// Processes whose command line mentions `text`.
int processes_mentioning(const std::string& text) {
  int n = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    std::ifstream in(entry.path() / "cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find("blockwise-worker") != std::string::npos &&
        cmdline.find(text) != std::string::npos)
      ++n;
  }
  return n;
}

TEST(CliBlockwise, KillingTheRunKillsItsWorkersAndTheNextRunFinishesTheRest) {
  BlockwiseRun f(R"({"hang_at": [9, 17]})");
  edit_task(f.task, R"("timeout": 1.5)", R"("timeout": 0)");
  const std::string cmd = shell_quote(CELLFLOW_CLI) + " blockwise " + shell_quote(f.task.string()) +
                          " --plugin " + shell_quote(CELLFLOW_FAULT_PLUGIN) +
                          " --workers 2 >/dev/null 2>&1 & echo $!";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  long pid = 0;
  ASSERT_EQ(std::fscanf(p, "%ld", &pid), 1);
  ::pclose(p);
  // Wait until the 11 other blocks are written; block 6 hangs (no timeout).
  int written = 0;
  for (int i = 0; i < 600 && written < 11; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    written = 0;
    if (fs::exists(f.out / ".zarray")) {
      const auto arr = ZarrArray::open(f.out);
      for (int64_t c = 0; c < 12; ++c) written += arr->contains(arr->grid().cell_at(c)) ? 1 : 0;
    }
  }
  ASSERT_EQ(written, 11);
  EXPECT_GE(processes_mentioning(f.task.string()), 1) << "the hanging block's worker";
  ASSERT_EQ(::kill(static_cast<pid_t>(pid), SIGKILL), 0);
  int left = 1;
  for (int i = 0; i < 100 && left > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    left = processes_mentioning(f.task.string());
  }
  EXPECT_EQ(left, 0) << "a worker outlived its run";

  edit_task(f.task, R"("hang_at": [9, 17])", R"("hang_at": [])");
  const CommandResult r = f.run({"--workers", "2"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const Value rep = f.read_report();
  EXPECT_EQ(rep.find("skipped")->as_int(), 11);
  EXPECT_EQ(ids(*rep.find("done_blocks")), (std::set<int64_t>{6}));
  EXPECT_EQ(f.check_output().size(), 12u);
}

TEST(CliBlockwise, ACleanTaskInThreadsWritesEveryBlock) {
  BlockwiseRun f("{}");
  const CommandResult r = f.run({"--threads", "2", "-q"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const Value rep = f.read_report();
  EXPECT_EQ(rep.find("done")->as_int(), 12);
  EXPECT_EQ(f.check_output().size(), 12u);
}

TEST(CliBlockwise, WithReadWriteConflictTheBlocksWaitingForAFailedOneAreOrphaned) {
#if defined(__SANITIZE_ADDRESS__)
  ::setenv("ASAN_OPTIONS", "handle_segv=0:detect_leaks=0", 1);
#endif
  // Block (2,2) writes from (17, 17): id 10. It runs before the neighbours
  // it conflicts with (daisy's levels put it first), which wait for it.
  BlockwiseRun f(R"({"segfault_at": [17, 17]})");
  edit_task(f.task, R"("read_write_conflict": false)", R"("read_write_conflict": true)");
  const CommandResult r = f.run({"--workers", "2", "--max-retries", "0"});
  ASSERT_EQ(r.exit_code, 1) << describe(r);
  const Value rep = f.read_report();
  EXPECT_EQ(ids(*rep.find("failed_blocks")), (std::set<int64_t>{10}));
  const std::set<int64_t> orphaned = ids(*rep.find("orphaned_blocks"));
  const std::set<int64_t> done = ids(*rep.find("done_blocks"));
  EXPECT_EQ(rep.find("orphaned")->as_int(), static_cast<int64_t>(orphaned.size()));
  // Its five neighbours wait for it; further blocks may wait for those.
  for (int64_t id : {5, 6, 7, 9, 11}) EXPECT_TRUE(orphaned.contains(id)) << id;
  EXPECT_EQ(done.size() + orphaned.size(), 11u);
  // Each orphaned block conflicts with (is a neighbour of) the failed block
  // or another orphaned one.
  for (int64_t id : orphaned) {
    bool waits = false;
    for (int64_t other : orphaned)
      waits = waits || (other != id && std::abs(other / 4 - id / 4) <= 1 &&
                        std::abs(other % 4 - id % 4) <= 1);
    waits = waits || (std::abs(2 - id / 4) <= 1 && std::abs(2 - id % 4) <= 1);
    EXPECT_TRUE(waits) << id;
  }
  EXPECT_EQ(f.check_output(), done);
}

TEST(CliBlockwise, ACheckCommandDecidesPerBlockWhatIsDone) {
  BlockwiseRun f("{}");
  fs::create_directories(f.tmp / "done");
  write_all(f.tmp / "done" / "0", "");
  write_all(f.tmp / "done" / "5", "");
  // Done: marked in done/, or its chunk exists; every call logs what it was told.
  edit_task(f.task, R"("check": "output")", R"JSON("check": {"command": ["sh", "-c",
      "cd \"$CELLFLOW_TASK_DIR\" && echo \"$CELLFLOW_BLOCK_ID $CELLFLOW_BLOCK_INDEX $CELLFLOW_BLOCK_READ_OFFSET $CELLFLOW_BLOCK_READ_SHAPE $CELLFLOW_BLOCK_WRITE_OFFSET $CELLFLOW_BLOCK_WRITE_SHAPE\" >> calls.log && { test -e done/$CELLFLOW_BLOCK_ID || test -e out.zarr/$(echo $CELLFLOW_BLOCK_INDEX | tr , /); }"]})JSON");
  const CommandResult r = f.run({"--threads", "2"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const Value rep = f.read_report();
  EXPECT_EQ(ids(*rep.find("skipped_blocks")), (std::set<int64_t>{0, 5}));
  EXPECT_EQ(rep.find("done")->as_int(), 10);
  std::set<int64_t> written;
  for (int64_t i = 0; i < 12; ++i)
    if (i != 0 && i != 5) written.insert(i);
  EXPECT_EQ(f.check_output(), written);
  // The last block, clipped by "shrink": its ROIs as the command saw them.
  const std::string log = read_all(f.tmp / "calls.log");
  EXPECT_NE(log.find("11 2,3 16,24 8,8 17,25 6,6\n"), std::string::npos) << log;

  // A check command that fails (neither 0 nor 1) fails the block, naming it.
  edit_task(f.task, "cd \\\"$CELLFLOW_TASK_DIR\\\"", "exit 3; cd \\\"$CELLFLOW_TASK_DIR\\\"");
  const CommandResult bad = f.run({"--threads", "2", "--max-retries", "0"});
  ASSERT_EQ(bad.exit_code, 1) << describe(bad);
  const Value rep2 = f.read_report();
  EXPECT_EQ(rep2.find("failed")->as_int(), 12);
  const std::string& error =
      rep2.find("failed_blocks")->as_array().at(0).find("error")->as_string();
  EXPECT_NE(error.find("check command sh: failed (exit code 3)"), std::string::npos) << error;
}

TEST(CliBlockwise, APostCheckConfirmsBlocksAndInitRunsOncePerWorker) {
  BlockwiseRun f("{}");
  // The pre-check is the output; the post-check logs each block it is asked
  // about and refuses block 7; init logs each worker's start.
  edit_task(f.task, R"("check": "output")", R"JSON("check": "output",
      "init": {"command": ["sh", "-c", "echo init >> \"$CELLFLOW_TASK_DIR/init.log\""]},
      "post_check": {"command": ["sh", "-c",
        "echo $CELLFLOW_BLOCK_ID >> \"$CELLFLOW_TASK_DIR/post.log\"; test $CELLFLOW_BLOCK_ID != 7"]})JSON");
  const CommandResult r = f.run({"--threads", "2", "--max-retries", "0"});
  ASSERT_EQ(r.exit_code, 1) << describe(r);
  const Value rep = f.read_report();
  EXPECT_EQ(ids(*rep.find("failed_blocks")), (std::set<int64_t>{7}));
  EXPECT_EQ(rep.find("done")->as_int(), 11);
  const std::string error = rep.find("failed_blocks")->as_array().at(0).find("error")->as_string();
  EXPECT_NE(error.find("post_check() says the block is not done"), std::string::npos) << error;
  std::multiset<int64_t> asked;
  std::istringstream post(read_all(f.tmp / "post.log"));
  for (int64_t id; post >> id;) asked.insert(id);
  std::multiset<int64_t> every;
  for (int64_t i = 0; i < 12; ++i) every.insert(i);
  EXPECT_EQ(asked, every);  // once per processed block, never before one
  const std::string init = read_all(f.tmp / "init.log");
  const auto inits = std::count(init.begin(), init.end(), '\n');
  EXPECT_GE(inits, 1);
  EXPECT_LE(inits, 2);  // one per worker thread that processed a block

  // Re-run: the pre-check (the output) finds every block's chunk, block 7's
  // too (its process wrote it before the post-check refused it): all are
  // skipped and the post-check is asked about none.
  fs::remove(f.tmp / "post.log");
  const CommandResult again = f.run({"--threads", "2", "--max-retries", "0"});
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_EQ(f.read_report().find("skipped")->as_int(), 12);
  EXPECT_FALSE(fs::exists(f.tmp / "post.log"));

  // A failing init fails the attempts of the blocks it precedes, naming it.
  edit_task(f.task, "echo init >>", "exit 4; echo init >>");
  fs::remove_all(f.out);
  const CommandResult bad = f.run({"--threads", "1", "--max-retries", "0"});
  ASSERT_EQ(bad.exit_code, 1) << describe(bad);
  const std::string why =
      f.read_report().find("failed_blocks")->as_array().at(0).find("error")->as_string();
  EXPECT_NE(why.find("init command sh: failed (exit code 4)"), std::string::npos) << why;
}

TEST(CliBlockwise, WorkersRunAsManyAtOnceAsAskedWhateverTheCoreCount) {
  // The pre-check of each block holds a slot for 0.4 s and records how many
  // slots are busy (a folder per running block). With --workers 4 four run
  // at once even on a machine with fewer cores (daisy's num_workers).
  BlockwiseRun f("{}");
  fs::create_directories(f.tmp / "running");
  edit_task(f.task, R"("check": "output")", R"JSON("check": {"command": ["sh", "-c",
      "cd \"$CELLFLOW_TASK_DIR\" && mkdir running/$CELLFLOW_BLOCK_ID && ls running | wc -l >> busy.log && sleep 0.4 && rmdir running/$CELLFLOW_BLOCK_ID; test -e out.zarr/$(echo $CELLFLOW_BLOCK_INDEX | tr , /)"]})JSON");
  const CommandResult r = f.run({"--workers", "4", "-q"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(f.read_report().find("done")->as_int(), 12);
  std::istringstream busy(read_all(f.tmp / "busy.log"));
  int most = 0;
  for (int n; busy >> n;) most = std::max(most, n);
  EXPECT_EQ(most, 4);
}

TEST(CliBlockwise, ABuiltinOpOnAGraphNodeMatchesTheGraphsOwnResult) {
  TempDir tmp;
  const std::string graph = R"({"cellflow": 1, "name": "bw", "nodes": [
    {"id": "raw", "op": "synthetic.blobs", "params": {"shape": [24, 32, 40],
     "cell_shape": [16, 16, 16], "dtype": "f32", "seed": 3, "count": 12}},
    {"id": "smooth", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": 1.0}}],
    "outputs": ["smooth"]})";
  write_all(tmp / "g.json", graph);
  // gaussian(sigma 1) needs 5 voxels of context.
  write_all(tmp / "task.json", R"({
    "inputs": {"raw": {"graph": "g.json", "node": "raw"}},
    "read_roi": {"shape": [18, 18, 18]},
    "write_roi": {"offset": [5, 5, 5], "shape": [8, 8, 8]},
    "fit": "shrink",
    "process": {"op": "gaussian", "params": {"sigma": 1.0}},
    "output": {"zarr": "smooth.zarr"}})");
  const CommandResult r =
      run_cli({"blockwise", (tmp / "task.json").string(), "--workers", "2", "--cache",
               (tmp / "cache").string(), "--report-json", (tmp / "report.json").string()},
              tmp.path());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const Value rep = parse_json(read_all(tmp / "report.json"));
  EXPECT_EQ(rep.find("blocks")->as_int(), 2 * 3 * 4);
  EXPECT_EQ(rep.find("done")->as_int(), 2 * 3 * 4);

  // The reference: the graph's own smooth node, computed here in memory.
  const Graph g = build_graph(graph, std::nullopt);
  const CellBuffer ref = read_whole(g, "smooth");
  const Shape shape{24, 32, 40};
  const auto arr = ZarrArray::open(tmp / "smooth.zarr");
  ASSERT_EQ(arr->grid().shape(), (Shape{14, 22, 30}));
  int64_t compared = 0, bad = 0;
  for (int64_t i = 0; i < arr->grid().num_cells(); ++i) {
    const CellIndex cell = arr->grid().cell_at(i);
    const std::optional<CellBuffer> buf = arr->read(cell);
    ASSERT_TRUE(buf.has_value()) << cell.str();
    const float* p = buf->as<float>();
    for_each_index(arr->grid().cell_box(cell), [&](const Dims& q) {
      const int64_t z = q[0] + 5, y = q[1] + 5, x = q[2] + 5;
      const float want = ref.as<float>()[(z * shape[1] + y) * shape[2] + x];
      if (std::abs(*p++ - want) > 1e-5f) ++bad;
      ++compared;
    });
  }
  EXPECT_EQ(compared, 14 * 22 * 30);
  EXPECT_EQ(bad, 0);
}

TEST(CliBlockwise, MistakesInTheTaskAreUsageErrorsNamingTheField) {
  BlockwiseRun f("{}");
  const std::string good = read_all(f.task);
  const auto expect_field = [&](const std::string& from, const std::string& to,
                                const std::string& field) {
    std::string text = good;
    const size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    write_all(f.task, text);
    const CommandResult r = f.run({});
    EXPECT_EQ(r.exit_code, 2) << describe(r);
    EXPECT_NE(r.err.find("field \"" + field + "\""), std::string::npos) << describe(r);
    EXPECT_NE(r.err.find("task.json"), std::string::npos) << describe(r);
  };
  expect_field(R"("fit": "shrink")", R"("fit": "sideways")", "fit");
  expect_field(R"("timeout": 1.5)", R"("timeout": -1)", "timeout");
  expect_field(R"("op": "fault.blocks")", R"("op": "fault.blokcs")", "process.op");
  expect_field(R"("shape": [8, 8])", R"("shape": [12, 8])", "write_roi");
  expect_field(R"("check": "output")", R"("check": "maybe")", "check");
  expect_field(R"("max_retries": 1)", R"("max_retires": 1)", "max_retires");
  expect_field(R"({"zarr": "in.zarr"})", R"({"zarr": "missing.zarr"})", "inputs.raw");
}

}  // namespace
}  // namespace cellflow::test

// --timeout bounds lock waits too: a cell lock or a node's in-use lease held
// by another process (a real one, holding the same lock file's byte) ends the
// run non-zero within the timeout and some slack, naming the lock file, what
// it guards and the node; once the holder is gone the same run succeeds.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "tools/cli_common.hpp"

namespace cellflow::test {
namespace {

using Clock = std::chrono::steady_clock;

std::string cli_program() {
  const char* other = std::getenv("CELLFLOW_TEST_CLI");
  return other != nullptr && *other != 0 ? other : CELLFLOW_CLI;
}

/// Another process that holds byte `offset` of `file` exclusively (a POSIX
/// record lock, which conflicts with the cache's OFD locks) until destroyed
/// (at most two minutes).
class LockHolder {
 public:
  LockHolder(const fs::path& file, int64_t offset, const fs::path& scratch) {
    const fs::path ready = scratch / "holder.ready";
    const fs::path pid = scratch / "holder.pid";
    fs::remove(ready);
    const std::string script =
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(sys.argv[2]), 0)\n"
        "open(sys.argv[3], 'w').write('locked')\n"
        "time.sleep(120)\n";
    const std::string cmd = shell_quote(CELLFLOW_PYTHON) + " -c " + shell_quote(script) + " " +
                            shell_quote(file.string()) + " " + std::to_string(offset) + " " +
                            shell_quote(ready.string()) + " >/dev/null 2>&1 & echo $! > " +
                            shell_quote(pid.string());
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    pid_ = std::stoi(read_all(pid));
    const auto give_up = Clock::now() + std::chrono::seconds(20);
    while (!fs::exists(ready) && Clock::now() < give_up)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_TRUE(fs::exists(ready)) << "the holder did not take the lock of " << file;
  }
  ~LockHolder() { release(); }
  LockHolder(const LockHolder&) = delete;
  LockHolder& operator=(const LockHolder&) = delete;

  void release() {
    if (pid_ > 0) ::kill(pid_, SIGKILL);
    pid_ = 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the kernel drops its locks
  }

 private:
  int pid_ = 0;
};

class CliLockWaitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    graph_ = write_graph(tmp_, "graph.json", example_graph_json());
    cache_ = tmp_ / "cache";
    const CommandResult run = run_cli(args(), tmp_.path());
    ASSERT_EQ(run.exit_code, 0) << describe(run);
    mask_ = build_graph(example_graph_json(), std::nullopt).node("mask").hash;
    // One cell of mask to recompute: the run needs its lock.
    ASSERT_TRUE(fs::remove(cell_file(cache_, mask_, {0, 0, 0})));
    fs::remove(cache_ / mask_ / ".cellflow-complete");
  }

  std::vector<std::string> args(const std::string& timeout = "0") const {
    return {"run",      graph_.string(), "--cache",   cache_.string(), "-q",
            "--output", "mask",          "--timeout", timeout};
  }

  /// Runs with --timeout 2 while `file` byte `offset` is held elsewhere.
  void expect_bounded_wait(const fs::path& file, int64_t offset, const std::string& guarded,
                           const std::vector<std::string>& extra = {}) {
    LockHolder holder(file, offset, tmp_.path());
    const auto start = Clock::now();
    // Under `timeout 30`: a run that would wait forever fails here, not in ctest.
    std::vector<std::string> argv{"timeout", "30", cli_program()};
    for (const std::string& a : args("2")) argv.push_back(a);
    argv.insert(argv.end(), extra.begin(), extra.end());
    const CommandResult r = run_command(argv, tmp_.path());
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    EXPECT_LT(seconds, 2.0 + 8.0) << "the run waited past its --timeout";
    EXPECT_GE(seconds, 1.9) << "it gave up before the timeout: " << describe(r);
    EXPECT_NE(r.err.find(file.string()), std::string::npos) << "names the lock file: " << r.err;
    EXPECT_NE(r.err.find(guarded), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("node \"mask\""), std::string::npos) << r.err;
    holder.release();
    const CommandResult again = run_cli(args("2"), tmp_.path());
    EXPECT_EQ(again.exit_code, 0) << "the holder gone, the run completes: " << describe(again);
  }

  TempDir tmp_;
  fs::path graph_;
  fs::path cache_;
  std::string mask_;
};

TEST_F(CliLockWaitTest, ACellLockHeldElsewhereEndsTheRunWithinTheTimeout) {
  // Cell (0,0,0) is byte 0 of the array's lock file.
  expect_bounded_wait(cache_ / mask_ / "0" / ".cellflow-lock", 0, "cell (0,0,0) of " + mask_);
}

TEST_F(CliLockWaitTest, ACellLockHeldElsewhereEndsAnIsolatedRunWithinTheTimeout) {
  // Worker processes or not, the cell another process holds is waited for
  // under the timeout, and the message says which lock.
  expect_bounded_wait(cache_ / mask_ / "0" / ".cellflow-lock", 0, "cell (0,0,0) of " + mask_,
                      {"--isolate"});
}

TEST_F(CliLockWaitTest, ANodeLeaseHeldElsewhereEndsTheRunWithinTheTimeout) {
  // Byte 0 of the use file, taken exclusively as `cache gc` does.
  expect_bounded_wait(cache_ / mask_ / ".cellflow-use", 0, "the in-use lease of node " + mask_);
}

}  // namespace
}  // namespace cellflow::test

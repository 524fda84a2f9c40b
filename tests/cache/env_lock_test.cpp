// The one lock primitive, Env::lock (store/env.hpp, POSIX and in memory), and
// every lock built on it (wait_lock, MetadataLock, NodeUseLock, MemoKeyLock,
// CacheTree, Memo's key lock): tests that fail if a lock is broken. Sharing is
// proven by two holders that each see the other inside at the same time;
// exclusion by a try (timeout 0) refused while the other side holds, across
// threads and across processes; timeouts by the elapsed time and the message;
// release on death by a SIGKILLed holder whose lock is free at once. Nothing
// here uses a sleep as proof: waits are bounded only so that a broken lock
// fails instead of hanging.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "cellflow/cache/cache_tree.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/memo_key_lock.hpp"
#include "cellflow/cache/memoize.hpp"
#include "cellflow/cache/metadata_lock.hpp"
#include "cellflow/cache/node_use_lock.hpp"
#include "cellflow/store/layout.hpp"
#include "cellflow/store/memory_env.hpp"
#include "cellflow/store/wait_lock.hpp"
#include "helper_process.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr const char* kHelperEnv = "CELLFLOW_LOCK_TEST_HELPER";
constexpr const char* kLockFile = "node/.lock";
constexpr int64_t kByte = 7;
// Bounds only: a correct lock never comes near them.
constexpr auto kPatience = std::chrono::seconds(10);

LockMode parse_mode(const std::string& s) {
  return s == "shared" ? LockMode::kShared : LockMode::kExclusive;
}

// Helper mode "<action> <mode> <dir>", run before main():
//   hold: takes the lock of <dir>/node/.lock in <mode>, creates <dir>/held,
//         and keeps it until <dir>/release exists (or it is killed);
//   try:  tries the lock once (timeout 0): exit 0 if granted, 1 if refused;
//   lease: "lease <hash> <dir>" holds node <hash>'s lease like hold.
int run_helper(const std::string& spec) {
  const auto a = spec.find(' ');
  const auto b = spec.find(' ', a + 1);
  const std::string action = spec.substr(0, a);
  const std::string arg = spec.substr(a + 1, b - a - 1);
  const LockMode mode = parse_mode(arg);
  const fs::path dir = spec.substr(b + 1);
  try {
    const std::shared_ptr<Env> env = posix_env(dir);
    if (action == "try") return env->lock(kLockFile, kByte, mode, milliseconds(0)) ? 0 : 1;
    if (action == "hold" || action == "lease") {
      std::unique_ptr<EnvLock> lock;
      NodeUseLock lease;
      if (action == "hold") {
        lock = env->lock(kLockFile, kByte, mode, milliseconds(0));
        if (!lock) return 2;
      } else {
        lease = NodeUseLock::acquire(env, arg, milliseconds(0));
        if (!lease.held()) return 2;
      }
      std::ofstream(dir / "held") << "held";
      const auto deadline = Clock::now() + std::chrono::seconds(60);
      while (!fs::exists(dir / "release") && Clock::now() < deadline)
        std::this_thread::sleep_for(milliseconds(1));
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "helper: %s\n", e.what());
    return 3;
  }
  return 4;
}

[[maybe_unused]] const int kHelperMode = [] {
  if (const char* spec = std::getenv(kHelperEnv)) std::_Exit(run_helper(spec));
  return 0;
}();

const char* mode_word(LockMode mode) { return mode == LockMode::kShared ? "shared" : "exclusive"; }

// A child process that tries the lock once: true if it was granted.
bool child_gets(const fs::path& dir, LockMode mode) {
  const pid_t pid =
      test::spawn_self(kHelperEnv, std::string("try ") + mode_word(mode) + " " + dir.string());
  const int code = test::wait_exit_code(pid);
  EXPECT_TRUE(code == 0 || code == 1) << "helper exit code " << code;
  return code == 0;
}

// A child process holding the lock until released or killed.
class Holder {
 public:
  Holder(const fs::path& dir, LockMode mode)
      : Holder(dir, std::string("hold ") + mode_word(mode) + " " + dir.string()) {}
  Holder(const fs::path& dir, const std::string& spec) : dir_(dir) {
    pid_ = test::spawn_self(kHelperEnv, spec);
    const auto deadline = Clock::now() + kPatience;
    while (!fs::exists(dir_ / "held") && Clock::now() < deadline)
      std::this_thread::sleep_for(milliseconds(1));
  }
  bool holding() const { return fs::exists(dir_ / "held"); }
  int kill() {
    ::kill(pid_, SIGKILL);
    code_ = test::wait_exit_code(pid_);
    pid_ = -1;
    return code_;
  }
  int release() {
    std::ofstream(dir_ / "release") << "go";
    code_ = test::wait_exit_code(pid_);
    pid_ = -1;
    return code_;
  }
  ~Holder() {
    if (pid_ > 0) kill();
  }

 private:
  fs::path dir_;
  pid_t pid_ = -1;
  int code_ = -1;
};

// Two parties that must both be inside at once: each arrives, then waits
// (bounded) for the other. True only if both were inside together.
class Rendezvous {
 public:
  bool arrive_and_wait() {
    std::unique_lock lock(mu_);
    ++inside_;
    cv_.notify_all();
    return cv_.wait_for(lock, kPatience, [&] { return inside_ >= 2; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int inside_ = 0;
};

// ---- Env::lock, in both environments, between threads.

class EnvLockTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (std::string(GetParam()) == "posix")
      env_ = posix_env(tmp_.path());
    else
      env_ = std::make_shared<MemoryEnv>();
  }
  std::unique_ptr<EnvLock> lock(LockMode mode, std::optional<milliseconds> timeout) {
    return env_->lock(kLockFile, kByte, mode, timeout);
  }
  test::TempDir tmp_;
  std::shared_ptr<Env> env_;
};

TEST_P(EnvLockTest, TwoSharedHoldersAreInsideAtOnce) {
  Rendezvous both;
  std::atomic<int> saw_other{0};
  const auto reader = [&] {
    const auto l = lock(LockMode::kShared, kPatience);
    if (l && both.arrive_and_wait()) ++saw_other;
  };
  std::thread a(reader);
  std::thread b(reader);
  a.join();
  b.join();
  EXPECT_EQ(saw_other.load(), 2) << "the second shared holder was kept out by the first";
}

TEST_P(EnvLockTest, ExclusiveExcludesBothModesSharedExcludesExclusive) {
  {
    const auto held = lock(LockMode::kExclusive, std::nullopt);
    ASSERT_NE(held, nullptr);
    std::thread([&] {
      EXPECT_EQ(lock(LockMode::kExclusive, milliseconds(0)), nullptr);
      EXPECT_EQ(lock(LockMode::kShared, milliseconds(0)), nullptr);
      EXPECT_TRUE(env_->locked_elsewhere(kLockFile, kByte, LockMode::kShared));
    }).join();
    // Another byte of the same file is another lock.
    EXPECT_NE(env_->lock(kLockFile, kByte + 1, LockMode::kExclusive, milliseconds(0)), nullptr);
  }
  {
    const auto held = lock(LockMode::kShared, std::nullopt);
    ASSERT_NE(held, nullptr);
    std::thread([&] {
      EXPECT_EQ(lock(LockMode::kExclusive, milliseconds(0)), nullptr);
      EXPECT_NE(lock(LockMode::kShared, milliseconds(0)), nullptr);
      EXPECT_TRUE(env_->locked_elsewhere(kLockFile, kByte, LockMode::kExclusive));
      EXPECT_FALSE(env_->locked_elsewhere(kLockFile, kByte, LockMode::kShared));
    }).join();
  }
  // Released: anyone gets it.
  EXPECT_NE(lock(LockMode::kExclusive, milliseconds(0)), nullptr);
}

TEST_P(EnvLockTest, AWaiterGetsTheLockWhenItIsReleased) {
  auto held = lock(LockMode::kExclusive, std::nullopt);
  std::atomic<bool> granted{false};
  std::thread waiter([&] {
    const auto l = lock(LockMode::kExclusive, kPatience);
    granted = l != nullptr;
  });
  // The waiter cannot have it while this thread holds it: check by trying.
  EXPECT_EQ(lock(LockMode::kShared, milliseconds(0)), nullptr);
  held.reset();
  waiter.join();
  EXPECT_TRUE(granted.load());
}

TEST_P(EnvLockTest, ATimedWaitGivesUpAfterItsTimeout) {
  const auto held = lock(LockMode::kExclusive, std::nullopt);
  std::thread([&] {
    const auto start = Clock::now();
    EXPECT_EQ(lock(LockMode::kShared, milliseconds(150)), nullptr);
    const auto waited = Clock::now() - start;
    EXPECT_GE(waited, milliseconds(150));
    EXPECT_LT(waited, std::chrono::seconds(5));
    try {
      wait_lock(*env_, kLockFile, kByte, LockMode::kExclusive, milliseconds(50), "the test's node");
      ADD_FAILURE() << "wait_lock returned while another thread held the lock";
    } catch (const LockTimeout& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(env_->describe(kLockFile)), std::string::npos) << what;
      EXPECT_NE(what.find("the test's node"), std::string::npos) << what;
      EXPECT_NE(what.find("exclusive"), std::string::npos) << what;
    }
  }).join();
}

INSTANTIATE_TEST_SUITE_P(Envs, EnvLockTest, ::testing::Values("posix", "memory"));

// ---- Env::lock between processes (POSIX).

// locked_elsewhere() resolves its lock file beneath the root without following
// a link: a folder link to a lock file held outside is reported as damage, not
// asked, and a missing folder or file is "not locked".
TEST(EnvLockPosix, LockedElsewhereFollowsNoLinkAndTakesMissingAsFree) {
  test::TempDir tmp;
  const std::shared_ptr<Env> outside = posix_env(tmp / "outside");
  const auto held = outside->lock(kLockFile, kByte, LockMode::kExclusive, milliseconds(0));
  ASSERT_NE(held, nullptr);
  const std::shared_ptr<Env> env = posix_env(tmp / "root");
  fs::create_symlink(tmp / "outside" / "node", tmp / "root" / "linked");
  std::thread([&] {
    // Through the real path another lock sees it; through the link nothing.
    EXPECT_TRUE(outside->locked_elsewhere(kLockFile, kByte, LockMode::kExclusive));
    EXPECT_THROW(env->locked_elsewhere("linked/.lock", kByte, LockMode::kExclusive),
                 CorruptionError);
    EXPECT_FALSE(env->locked_elsewhere("missing/.lock", kByte, LockMode::kExclusive));
    EXPECT_FALSE(env->locked_elsewhere(kLockFile, kByte, LockMode::kExclusive));
  }).join();
}

TEST(EnvLockProcesses, SharedIsSharedExclusiveExcludesAcrossProcesses) {
  test::TempDir tmp;
  const auto env = posix_env(tmp.path());
  {
    const auto held = env->lock(kLockFile, kByte, LockMode::kShared, std::nullopt);
    EXPECT_TRUE(child_gets(tmp.path(), LockMode::kShared));
    EXPECT_FALSE(child_gets(tmp.path(), LockMode::kExclusive));
  }
  {
    const auto held = env->lock(kLockFile, kByte, LockMode::kExclusive, std::nullopt);
    EXPECT_FALSE(child_gets(tmp.path(), LockMode::kShared));
    EXPECT_FALSE(child_gets(tmp.path(), LockMode::kExclusive));
  }
  EXPECT_TRUE(child_gets(tmp.path(), LockMode::kExclusive));
}

TEST(EnvLockProcesses, AnotherProcessHoldingExcludesThisOneUntilItReleases) {
  test::TempDir tmp;
  const auto env = posix_env(tmp.path());
  {
    Holder child(tmp.path(), LockMode::kShared);
    ASSERT_TRUE(child.holding());
    EXPECT_NE(env->lock(kLockFile, kByte, LockMode::kShared, milliseconds(0)), nullptr);
    EXPECT_EQ(env->lock(kLockFile, kByte, LockMode::kExclusive, milliseconds(0)), nullptr);
    EXPECT_EQ(child.release(), 0);
  }
  fs::remove(tmp / "held");
  fs::remove(tmp / "release");
  Holder child(tmp.path(), LockMode::kExclusive);
  ASSERT_TRUE(child.holding());
  EXPECT_EQ(env->lock(kLockFile, kByte, LockMode::kShared, milliseconds(0)), nullptr);
  EXPECT_EQ(env->lock(kLockFile, kByte, LockMode::kExclusive, milliseconds(0)), nullptr);
  const auto start = Clock::now();
  EXPECT_EQ(env->lock(kLockFile, kByte, LockMode::kShared, milliseconds(100)), nullptr);
  EXPECT_GE(Clock::now() - start, milliseconds(100));
  EXPECT_EQ(child.release(), 0);
  EXPECT_NE(env->lock(kLockFile, kByte, LockMode::kExclusive, milliseconds(0)), nullptr);
}

TEST(EnvLockProcesses, AKilledHoldersLockIsReleasedAtOnce) {
  test::TempDir tmp;
  const auto env = posix_env(tmp.path());
  Holder child(tmp.path(), LockMode::kExclusive);
  ASSERT_TRUE(child.holding());
  ASSERT_EQ(env->lock(kLockFile, kByte, LockMode::kShared, milliseconds(0)), nullptr);
  child.kill();  // reaped: the kernel has closed its files
  EXPECT_NE(env->lock(kLockFile, kByte, LockMode::kExclusive, milliseconds(0)), nullptr)
      << "the dead holder's lock was not released";
}

// ---- The locks built on Env::lock.

TEST(MetadataLockProof, ReadersAreInsideTogetherAndAWriterIsKeptOut) {
  test::TempDir tmp;
  Rendezvous both;
  std::atomic<int> saw_other{0};
  std::atomic<int> writer_refused{0};
  const auto reader = [&] {
    std::optional<MetadataLock> l;
    try {
      l.emplace(tmp.path(), MetadataLock::Mode::kShared, kPatience);
    } catch (const LockTimeout&) {
      return;  // kept out by the other reader for the whole patience
    }
    if (both.arrive_and_wait()) ++saw_other;
    // Both readers are inside: a writer in a third thread must be refused.
    std::thread([&] {
      try {
        const MetadataLock w(tmp.path(), MetadataLock::Mode::kExclusive, milliseconds(0));
      } catch (const LockTimeout&) {
        ++writer_refused;
      }
    }).join();
  };
  std::thread a(reader);
  std::thread b(reader);
  a.join();
  b.join();
  EXPECT_EQ(saw_other.load(), 2) << "a reader was kept out by the other";
  EXPECT_EQ(writer_refused.load(), 2) << "a writer got in while readers held the lock";
}

TEST(MetadataLockProof, AWriterExcludesAndATimedOutWaitNamesTheLockFile) {
  test::TempDir tmp;
  const MetadataLock w(tmp.path(), MetadataLock::Mode::kExclusive);
  const MetadataLock again(tmp.path(), MetadataLock::Mode::kShared);  // re-entrant in this thread
  std::thread([&] {
    for (const auto mode : {MetadataLock::Mode::kShared, MetadataLock::Mode::kExclusive}) {
      try {
        const MetadataLock l(tmp.path(), mode, milliseconds(20));
        ADD_FAILURE() << "another thread got the metadata lock while a writer held it";
      } catch (const LockTimeout& e) {
        EXPECT_NE(std::string(e.what()).find(MetadataLock::lock_path(tmp.path()).string()),
                  std::string::npos)
            << e.what();
      }
    }
  }).join();
}

// The node's lease against maintenance (gc, verify --repair).
TEST(NodeUseLockProof, LeasesShareAndKeepRemovalOutUntilTheLastIsGone) {
  test::TempDir tmp;
  const std::string hash(32, 'a');
  std::optional<NodeUseLock> first;
  std::optional<NodeUseLock> second;
  const auto take = [&](std::optional<NodeUseLock>& lease) {
    std::thread([&] {
      try {
        lease = NodeUseLock::acquire(tmp.path(), hash, milliseconds(0));
      } catch (const LockTimeout&) {
      }
    }).join();
  };
  take(first);
  take(second);
  ASSERT_TRUE(first && first->held());
  ASSERT_TRUE(second && second->held()) << "a second user was kept out by the first";
  EXPECT_TRUE(node_in_use(tmp.path(), hash));
  EXPECT_FALSE(remove_node_folder(tmp.path(), hash));
  first.reset();
  EXPECT_FALSE(remove_node_folder(tmp.path(), hash)) << "the second lease still holds it";
  second.reset();
  EXPECT_FALSE(node_in_use(tmp.path(), hash));
  EXPECT_TRUE(remove_node_folder(tmp.path(), hash));
  EXPECT_FALSE(fs::exists(tmp / hash));
}

TEST(NodeUseLockProof, AUserWaitsForMaintenanceAtMostItsTimeout) {
  test::TempDir tmp;
  const std::string hash(32, 'b');
  const auto env = posix_env(tmp.path());
  // Maintenance holds the lease's byte exclusively (as remove_node_folder does).
  const auto maintenance = env->lock(layout::use_file(hash), 0, LockMode::kExclusive, std::nullopt);
  std::thread([&] {
    const auto start = Clock::now();
    try {
      NodeUseLock::acquire(env, hash, milliseconds(100));
      ADD_FAILURE() << "a lease was granted while maintenance held the node";
    } catch (const LockTimeout& e) {
      EXPECT_GE(Clock::now() - start, milliseconds(100));
      EXPECT_NE(std::string(e.what()).find(env->describe(layout::use_file(hash))),
                std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find(hash), std::string::npos) << e.what();
    }
  }).join();
}

TEST(NodeUseLockProof, AKilledUsersLeaseIsReleasedAtOnce) {
  test::TempDir tmp;
  const std::string hash(32, 'c');
  const auto env = posix_env(tmp.path());
  Holder user(tmp.path(), "lease " + hash + " " + tmp.path().string());
  ASSERT_TRUE(user.holding());
  EXPECT_TRUE(node_in_use(*env, hash));
  EXPECT_FALSE(remove_node_folder(*env, hash));
  EXPECT_EQ(user.kill(), 128 + SIGKILL);  // reaped: the kernel has closed its files
  EXPECT_FALSE(node_in_use(*env, hash));
  EXPECT_TRUE(remove_node_folder(*env, hash)) << "the dead user's lease was not released";
}

TEST(MemoKeyLockProof, ALoadingCallKeepsRemovalOutAComputingOneToo) {
  test::TempDir tmp;
  const std::string key(32, 'd');
  const auto env = posix_env(tmp.path());
  env->make_folders(layout::memo_entry(key));
  {
    const auto loading = env->lock(layout::memo_lock(key), 0, LockMode::kShared, std::nullopt);
    EXPECT_TRUE(memo_entry_in_use(*env, key));
    EXPECT_EQ(remove_memo_entry(*env, key), MemoRemoval::kInUse);
    EXPECT_EQ(MemoKeyLock(*env, key, false).state(), MemoKeyLock::State::kBusy);
  }
  {
    const auto computing = env->lock(layout::memo_lock(key), 0, LockMode::kExclusive, std::nullopt);
    EXPECT_EQ(remove_memo_entry(*env, key), MemoRemoval::kInUse);
  }
  EXPECT_FALSE(memo_entry_in_use(*env, key));
  {
    const MemoKeyLock held(*env, key, false);
    EXPECT_EQ(held.state(), MemoKeyLock::State::kHeld);
    std::thread([&] {
      EXPECT_EQ(MemoKeyLock(*env, key, false).state(), MemoKeyLock::State::kBusy);
    }).join();
  }
  EXPECT_EQ(remove_memo_entry(*env, key), MemoRemoval::kRemoved);
  EXPECT_EQ(env->stat(layout::memo_entry(key)).kind, EntryKind::kMissing);
  EXPECT_EQ(remove_memo_entry(*env, key), MemoRemoval::kAbsent);
}

int add_one(int x) { return x + 1; }

TEST(MemoKeyLockProof, AMemoCallWaitsForTheKeysLockAtMostItsTimeout) {
  test::TempDir tmp;
  const auto env = posix_env(tmp.path());
  Memo memo(env);
  const MemoOutcome first = memo.call_with_outcome("add_one", 1, add_one, 41).outcome;
  ASSERT_FALSE(first.cached);
  // Maintenance holds the key (as gc does while it removes the entry).
  const MemoKeyLock maintenance(*env, first.key, false);
  ASSERT_EQ(maintenance.state(), MemoKeyLock::State::kHeld);
  memo.set_lock_timeout(milliseconds(100));
  std::thread([&] {
    const auto start = Clock::now();
    try {
      memo.call("add_one", 1, add_one, 41);
      ADD_FAILURE() << "a call loaded the entry while maintenance held its key";
    } catch (const LockTimeout& e) {
      EXPECT_GE(Clock::now() - start, milliseconds(100));
      EXPECT_NE(std::string(e.what()).find(env->describe(layout::memo_lock(first.key))),
                std::string::npos)
          << e.what();
    }
  }).join();
}

TEST(CacheTreeProof, AnOpenTreeExcludesOtherHoldersAndATimedOutWaitSaysWhich) {
  test::TempDir tmp;
  CacheTree mine(tmp / "tree");
  std::thread([&] {
    const auto start = Clock::now();
    try {
      CacheTree other(tmp / "tree", milliseconds(100));
      ADD_FAILURE() << "two handles held one uncommitted tree";
    } catch (const LockTimeout& e) {
      EXPECT_GE(Clock::now() - start, milliseconds(100));
      EXPECT_NE(
          std::string(e.what()).find((tmp / "tree" / std::string(layout::kTreeLock)).string()),
          std::string::npos)
          << e.what();
    }
  }).join();
  EXPECT_TRUE(mine.commit());
  std::thread([&] {
    CacheTree other(tmp / "tree", milliseconds(0));  // committed: opened without waiting
    EXPECT_TRUE(other.is_committed());
  }).join();
}

// A lock held across a MemoryEnv restart() (a "dead process's" lock) is
// gone after it, and releasing it later does not corrupt the new locks.
TEST(MemoryEnvLock, ALockOutlivingARestartReleasesNothingOfTheNewProcess) {
  MemoryEnv env;
  auto old = env.lock("l", 0, LockMode::kShared, std::nullopt);
  ASSERT_TRUE(old);
  env.restart(false);
  auto fresh = env.lock("l", 0, LockMode::kShared, std::chrono::milliseconds(0));
  ASSERT_TRUE(fresh);
  old.reset();  // must not count as a release of `fresh`
  EXPECT_EQ(env.lock("l", 0, LockMode::kExclusive, std::chrono::milliseconds(0)), nullptr)
      << "the new shared holder still holds";
  fresh.reset();
  EXPECT_NE(env.lock("l", 0, LockMode::kExclusive, std::chrono::milliseconds(0)), nullptr);
}

}  // namespace
}  // namespace cellflow

#include "subprocess.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <tbb/global_control.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/graph/cancel.hpp"
#include "commands.hpp"

extern char** environ;

namespace cellflow::cli {

struct WorkerSlots::Control {
  explicit Control(int slots)
      : raised(tbb::global_control::max_allowed_parallelism, static_cast<size_t>(slots)) {}
  tbb::global_control raised;
};

WorkerSlots::WorkerSlots(int slots) {
  const auto now = static_cast<int>(
      tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism));
  if (slots > now) control_ = std::make_unique<Control>(slots);
}

WorkerSlots::~WorkerSlots() = default;
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kParentEnv = "CELLFLOW_WORKER_PARENT";
constexpr const char* kErrorPrefix = "cellflow: error: ";
constexpr const char* kWarningPrefix = "cellflow: warning: ";
constexpr size_t kMaxOutput = 64 * 1024;  // the tail of a worker's output that is kept

class Spawned {
 public:
  Spawned(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      throw IoError(fmt::format("cannot create a pipe for a worker: {}", std::strerror(errno)));
    read_fd_ = fds[0];
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    std::vector<char*> envp;
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const int rc =
        ::posix_spawnp(&pid_, argv[0].c_str(), &actions, nullptr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    if (rc != 0) {
      ::close(read_fd_);
      read_fd_ = -1;
      pid_ = -1;
      throw IoError(fmt::format("cannot start a worker ({}): {}", argv[0], std::strerror(rc)));
    }
  }
  ~Spawned() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      reap();
    }
    if (read_fd_ >= 0) ::close(read_fd_);
  }
  Spawned(const Spawned&) = delete;
  Spawned& operator=(const Spawned&) = delete;

  /// Reads output until EOF or `wait_ms`; returns false at EOF.
  bool pump(int wait_ms) {
    if (read_fd_ < 0) return false;
    pollfd p{read_fd_, POLLIN, 0};
    const int rc = ::poll(&p, 1, wait_ms);
    if (rc <= 0) return true;
    char buf[4096];
    const ssize_t n = ::read(read_fd_, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
    if (n <= 0) {
      ::close(read_fd_);
      read_fd_ = -1;
      return false;
    }
    output_.append(buf, static_cast<size_t>(n));
    if (output_.size() > 2 * kMaxOutput) output_.erase(0, output_.size() - kMaxOutput);
    return true;
  }
  /// True once the process has exited (status then valid).
  bool exited() {
    if (pid_ <= 0) return true;
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      status_ = status;
      pid_ = -1;
      return true;
    }
    return false;
  }
  void kill_now() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    reap();
  }
  int status() const { return status_; }
  const std::string& output() const { return output_; }

 private:
  void reap() {
    int status = 0;
    pid_t r;
    do {
      r = ::waitpid(pid_, &status, 0);
    } while (r < 0 && errno == EINTR);
    status_ = status;
    pid_ = -1;
  }
  pid_t pid_ = -1;
  int read_fd_ = -1;
  int status_ = 0;
  std::string output_;
};

}  // namespace

std::string WorkerExit::describe(double timeout_seconds) const {
  switch (how) {
    case How::kTimedOut:
      return fmt::format("timed out after {:g} s (worker killed)", timeout_seconds);
    case How::kCancelled:
      return "cancelled: the run is stopping (worker killed)";
    case How::kSignaled: {
      const char* name = ::strsignal(signal);
      return fmt::format("worker killed by signal {} ({})", signal, name != nullptr ? name : "?");
    }
    case How::kExited:
      break;
  }
  return code == 0 ? std::string() : fmt::format("worker failed (exit code {})", code);
}

std::string self_exe() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  if (ec)
    throw IoError(
        fmt::format("cannot find the cellflow program (/proc/self/exe): {}", ec.message()));
  return p.string();
}

WorkerExit run_worker_process(const std::vector<std::string>& args, double timeout_seconds) {
  std::vector<std::string> argv{self_exe()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv, {fmt::format("{}={}", kParentEnv, ::getpid())}, timeout_seconds);
}

WorkerExit run_program(const std::vector<std::string>& argv,
                       const std::vector<std::string>& extra_env, double timeout_seconds) {
  if (argv.empty()) throw InvalidArgument("run_program: no program given");
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const bool replaced = std::any_of(extra_env.begin(), extra_env.end(), [&](const auto& x) {
      return entry.starts_with(x.substr(0, x.find('=') + 1));
    });
    if (!replaced && !entry.starts_with(std::string(kParentEnv) + "=")) env.emplace_back(*e);
  }
  env.insert(env.end(), extra_env.begin(), extra_env.end());

  const auto start = Clock::now();
  const auto deadline = timeout_seconds > 0
                            ? start + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(timeout_seconds))
                            : Clock::time_point::max();
  Spawned worker(argv, env);
  WorkerExit result;
  bool open = true;
  while (true) {
    if (open) {
      open = worker.pump(50);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!open && worker.exited()) break;
    const bool late = Clock::now() > deadline;
    if (late || cancellation_requested()) {
      worker.kill_now();
      // The caller's token may carry the same deadline and see it first.
      result.how = late || cancellation_timed_out() ? WorkerExit::How::kTimedOut
                                                    : WorkerExit::How::kCancelled;
      result.output = worker.output();
      return result;
    }
  }
  const int status = worker.status();
  result.output = worker.output();
  if (WIFSIGNALED(status)) {
    result.how = WorkerExit::How::kSignaled;
    result.signal = WTERMSIG(status);
  } else {
    result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  return result;
}

void watch_parent() {
  // Die with the run: a worker orphaned by a killed parent stops at once
  // (what it already committed stays committed; an unfinished write is never seen).
  const char* parent = std::getenv(kParentEnv);
  if (parent == nullptr) return;
  const pid_t expected = static_cast<pid_t>(std::atol(parent));
  if (::getppid() != expected) std::_Exit(kExitFailed);
  std::thread([expected] {
    while (true) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (::getppid() != expected) std::_Exit(kExitFailed);
    }
  }).detach();
}

std::string worker_error(const std::string& output, const std::vector<std::string>& frames) {
  std::string last;
  size_t pos = 0;
  while (pos < output.size()) {
    const size_t nl = std::min(output.find('\n', pos), output.size());
    const std::string line = output.substr(pos, nl - pos);
    if (line.starts_with(kErrorPrefix)) last = line.substr(std::strlen(kErrorPrefix));
    pos = nl + 1;
  }
  if (last.empty()) {
    // No error line: the tail of whatever it printed.
    last = output.size() > 300 ? "..." + output.substr(output.size() - 300) : output;
    while (!last.empty() && (last.back() == '\n' || last.back() == ' ')) last.pop_back();
    std::replace(last.begin(), last.end(), '\n', ' ');
  }
  for (const std::string& frame : frames) {
    if (last.starts_with(frame + ": ")) last.erase(0, frame.size() + 2);
  }
  return last;
}

void forward_warnings(const std::string& output, const std::string& where) {
  size_t pos = 0;
  while (pos < output.size()) {
    const size_t nl = std::min(output.find('\n', pos), output.size());
    const std::string line = output.substr(pos, nl - pos);
    if (line.starts_with(kWarningPrefix)) {
      log_warning(fmt::format("{} (worker): {}", where, line.substr(std::strlen(kWarningPrefix))));
    }
    pos = nl + 1;
  }
}

}  // namespace cellflow::cli

// Shared by the fault, cache-maintenance and crash tests of the CLI: graphs
// using the fault plugin's fault.inject op, the --progress-json reader, a
// child process that can be killed, mounts for disk faults, and comparisons
// of the committed cells of two caches.
#pragma once

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/graph/value.hpp"
#include "test_util.hpp"

extern char** environ;

namespace cellflow::test {

/// raw (synthetic.blobs, 32^3 in 16^3 cells: 8 cells) -> boom (fault.inject
/// with `params`, a copy of raw except where it misbehaves).
inline std::string fault_graph_json(const std::string& params) {
  return R"({
  "cellflow": 1,
  "name": "faults",
  "nodes": [
    {"id": "raw", "op": "synthetic.blobs",
     "params": {"shape": [32, 32, 32], "cell_shape": [16, 16, 16], "dtype": "f32", "seed": 3}},
    {"id": "boom", "op": "fault.inject", "inputs": ["raw"], "params": )" +
         params + R"(}
  ],
  "outputs": ["boom"]
}
)";
}

/// The events of a --progress-json file, one Value per line.
inline std::vector<Value> read_events(const fs::path& file) {
  std::vector<Value> out;
  std::istringstream in(read_all(file));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    out.push_back(parse_json(line, file.string()));
  }
  return out;
}

inline std::string str_field(const Value& v, const char* key) {
  const Value* f = v.find(key);
  return f != nullptr && f->is_string() ? f->as_string() : std::string();
}

/// The cell events of `node` with `status` ("done", "retry", "failed").
inline std::vector<Value> cell_events(const std::vector<Value>& events, const std::string& node,
                                      const std::string& status) {
  std::vector<Value> out;
  for (const Value& e : events) {
    if (str_field(e, "event") == "cell" && str_field(e, "node") == node &&
        str_field(e, "status") == status)
      out.push_back(e);
  }
  return out;
}

/// Two arrays hold the same cells: every cell of `a` reads back (checksum and
/// identity checked) with the bytes of the same cell of `b`. Cell files of two
/// nodes never have the same bytes: each is bound to its node.
inline ::testing::AssertionResult same_cells(const fs::path& a_dir, const fs::path& b_dir) {
  const auto a = ZarrArray::open(a_dir);
  const auto b = ZarrArray::open(b_dir);
  if (!(a->grid() == b->grid()) || a->dtype() != b->dtype())
    return ::testing::AssertionFailure() << "different grids or dtypes";
  for (int64_t c = 0; c < a->grid().num_cells(); ++c) {
    const CellIndex cell = a->grid().cell_at(c);
    const auto x = a->read(cell);
    const auto y = b->read(cell);
    if (x.has_value() != y.has_value())
      return ::testing::AssertionFailure() << "cell " << cell.str() << " is in only one";
    if (x && !test::same_bytes(*x, *y))
      return ::testing::AssertionFailure() << "cell " << cell.str() << " differs";
  }
  return ::testing::AssertionSuccess();
}

/// The node folder's committed files that carry data or metadata, by path
/// relative to the node: cells, .zarray, .zattrs, .zgroup, the completion
/// marker. Locks, use marks and temporary files are left out.
inline std::map<std::string, std::string> node_files(const fs::path& node_dir) {
  std::map<std::string, std::string> out;
  if (!fs::exists(node_dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(node_dir)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    if (name == ".cellflow-lock" || name == ".cellflow-use" ||
        name.find(".tmp.") != std::string::npos)
      continue;
    out[fs::relative(e.path(), node_dir).string()] = read_all(e.path());
  }
  return out;
}

/// Files whose name marks them as temporary (".<name>.tmp.<pid>...").
inline std::vector<std::string> temp_files(const fs::path& root) {
  std::vector<std::string> out;
  if (!fs::exists(root)) return out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.path().filename().string().find(".tmp.") != std::string::npos)
      out.push_back(e.path().string());
  }
  return out;
}

/// A child process running argv with stdout and stderr in files.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const fs::path& out, const fs::path& err) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int rc = posix_spawn(&pid_, argv[0].c_str(), &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) pid_ = -1;
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool started() const { return pid_ > 0 || exited_; }
  /// Waits up to `seconds`; true if the process exited.
  bool wait_for(double seconds) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (true) {
      if (poll()) return true;
      if (std::chrono::steady_clock::now() >= end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  void kill9() {
    if (pid_ > 0) ::kill(pid_, SIGKILL);
  }
  /// Waits for the end; returns the exit code (128 + signal if killed).
  int wait() {
    while (pid_ > 0) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, 0);
      if (r == pid_) {
        record(status);
      } else if (r < 0 && errno != EINTR) {
        pid_ = -1;
      }
    }
    return code_;
  }
  int code() const { return code_; }

 private:
  bool poll() {
    if (pid_ <= 0) return true;
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      record(status);
      return true;
    }
    return false;
  }
  void record(int status) {
    code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    exited_ = true;
    pid_ = -1;
  }
  pid_t pid_ = -1;
  bool exited_ = false;
  int code_ = -1;
};

/// A mount for the duration of a test (root only); unmounted on destruction.
class ScopedMount {
 public:
  /// Runs `mount <args> <target>`; ok() tells whether it worked.
  ScopedMount(const std::string& args, const fs::path& target) : target_(target) {
    fs::create_directories(target);
    const std::string cmd = "mount " + args + " " + shell_quote(target.string()) + " 2>/dev/null";
    ok_ = std::system(cmd.c_str()) == 0;
  }
  ~ScopedMount() {
    if (ok_) std::system(("umount -l " + shell_quote(target_.string()) + " 2>/dev/null").c_str());
  }
  ScopedMount(const ScopedMount&) = delete;
  ScopedMount& operator=(const ScopedMount&) = delete;

  bool ok() const { return ok_; }
  /// `mount -o remount,<options>`.
  bool remount(const std::string& options) {
    const std::string cmd =
        "mount -o remount," + options + " " + shell_quote(target_.string()) + " 2>/dev/null";
    return std::system(cmd.c_str()) == 0;
  }

 private:
  fs::path target_;
  bool ok_ = false;
};

}  // namespace cellflow::test

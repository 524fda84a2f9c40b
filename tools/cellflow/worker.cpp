#include "worker.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/cache/memory_cache.hpp"
#include "cellflow/graph/cancel.hpp"
#include "commands.hpp"

extern char** environ;

namespace cellflow::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kParentEnv = "CELLFLOW_WORKER_PARENT";
constexpr const char* kDoneComputed = "cellflow-worker: computed";
constexpr const char* kDonePresent = "cellflow-worker: present";
constexpr const char* kErrorPrefix = "cellflow: error: ";
constexpr const char* kWarningPrefix = "cellflow: warning: ";
constexpr size_t kMaxOutput = 64 * 1024;  // the tail of a worker's output that is kept

thread_local bool t_last_computed = false;

CellIndex parse_cell(const std::string& text, const CellGrid& grid) {
  std::vector<int64_t> v;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string part = text.substr(pos, comma - pos);
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(part.c_str(), &end, 10);
    if (part.empty() || end != part.c_str() + part.size() || errno != 0 || x < 0)
      throw UsageError(
          fmt::format("worker: --cell \"{}\" is not a list of indexes like 1,0,2", text));
    v.push_back(x);
    pos = comma + 1;
  }
  if (static_cast<int>(v.size()) != grid.rank())
    throw UsageError(fmt::format("worker: --cell \"{}\" has {} indexes, the node's grid {}", text,
                                 v.size(), grid.rank()));
  const CellIndex cell = CellIndex::from(v);
  for (int d = 0; d < grid.rank(); ++d) {
    if (cell[d] >= grid.grid_shape()[d])
      throw UsageError(fmt::format("worker: --cell {} is outside the node's grid {}", cell.str(),
                                   grid.grid_shape().str()));
  }
  return cell;
}

std::string cell_arg(const CellIndex& cell) { return fmt::format("{}", fmt::join(cell, ",")); }

std::string self_exe() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  if (ec)
    throw IoError(
        fmt::format("cannot find the cellflow program (/proc/self/exe): {}", ec.message()));
  return p.string();
}

// The worker's own error line, without the frames the parent adds itself.
std::string worker_error(const std::string& output, const std::string& node_frame,
                         const std::string& cell_frame) {
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
  for (const std::string& frame : {node_frame + ": ", cell_frame + ": "}) {
    if (last.starts_with(frame)) last.erase(0, frame.size());
  }
  return last;
}

// Lines the worker logged as warnings, passed on to this process's log.
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
        ::posix_spawn(&pid_, argv[0].c_str(), &actions, nullptr, args.data(), envp.data());
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

int worker_command(const WorkerArgs& args) {
  // Die with the run: a worker orphaned by a killed parent stops at once
  // (a cell it already committed stays committed; an unfinished one is never seen).
  if (const char* parent = std::getenv(kParentEnv)) {
    const pid_t expected = static_cast<pid_t>(std::atol(parent));
    if (::getppid() != expected) return kExitFailed;
    std::thread([expected] {
      while (true) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (::getppid() != expected) std::_Exit(kExitFailed);
      }
    }).detach();
  }
  if (!args.cache) throw UsageError("worker: --cache is required");
  if (args.memory) MemoryCache::global().set_budget(parse_size(*args.memory, "--memory"));
  const Graph graph = load_cli_graph(args.graph_path, cache_root_of(args.cache));
  const size_t node = graph.index(args.node_id);
  const std::shared_ptr<CachedCellImage> image = graph.image(node);
  const CellIndex cell = parse_cell(args.cell, image->grid());
  const bool computed = image->ensure(cell);
  fmt::print("{}\n", computed ? kDoneComputed : kDonePresent);
  std::fflush(stdout);
  return kExitOk;
}

IsolatedCellRunner::IsolatedCellRunner(const Graph& graph, WorkerContext context)
    : graph_(graph),
      context_(std::move(context)),
      exe_(self_exe()),
      computed_(new std::atomic<int64_t>[graph.nodes().size()]) {
  for (size_t i = 0; i < graph.nodes().size(); ++i) computed_[i] = 0;
}

int64_t IsolatedCellRunner::computed(size_t node) const {
  return node < graph_.nodes().size() ? computed_[node].load() : 0;
}

bool IsolatedCellRunner::take_last_computed() {
  const bool v = t_last_computed;
  t_last_computed = false;
  return v;
}

void IsolatedCellRunner::operator()(size_t node, const CellIndex& cell,
                                    double timeout_seconds) const {
  t_last_computed = false;
  const GraphNode& n = graph_.nodes().at(node);
  const std::string node_frame = fmt::format("node \"{}\"", n.def.id);
  const std::string cell_frame = "cell " + cell.str();
  const auto fail = [&](auto error) {
    error.add_context(cell_frame);
    error.add_context(node_frame);
    throw error;
  };

  std::vector<std::string> argv{exe_,           "worker",  context_.graph_path,
                                "--node",       n.def.id,  "--cell",
                                cell_arg(cell), "--cache", context_.cache_root.string()};
  if (context_.memory) {
    argv.push_back("--memory");
    argv.push_back(*context_.memory);
  }
  for (const std::string& p : context_.plugins) {
    argv.push_back("--plugin");
    argv.push_back(p);
  }
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (!std::string_view(*e).starts_with(std::string(kParentEnv) + "=")) env.emplace_back(*e);
  }
  env.push_back(fmt::format("{}={}", kParentEnv, ::getpid()));

  const auto start = Clock::now();
  const auto deadline = timeout_seconds > 0
                            ? start + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(timeout_seconds))
                            : Clock::time_point::max();
  Spawned worker(argv, env);
  bool open = true;
  while (true) {
    if (open) {
      open = worker.pump(50);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!open && worker.exited()) break;
    if (Clock::now() > deadline) {
      worker.kill_now();
      fail(Cancelled(fmt::format("timed out after {:g} s (worker killed)", timeout_seconds)));
    }
    if (cancellation_requested()) {
      worker.kill_now();
      fail(Cancelled("cancelled: the run is stopping (worker killed)"));
    }
  }
  const int status = worker.status();
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    fail(NodeError(
        fmt::format("worker killed by signal {} ({})", sig, name != nullptr ? name : "?")));
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  const std::string& out = worker.output();
  forward_warnings(out, node_frame + ": " + cell_frame);
  if (code != 0) {
    fail(NodeError(fmt::format("worker failed (exit code {}): {}", code,
                               worker_error(out, node_frame, cell_frame))));
  }
  const bool computed = out.find(kDoneComputed) != std::string::npos;
  if (!computed && out.find(kDonePresent) == std::string::npos) {
    fail(NodeError("worker exited 0 without committing the cell"));
  }
  if (computed) computed_[node].fetch_add(1);
  t_last_computed = computed;
}

}  // namespace cellflow::cli

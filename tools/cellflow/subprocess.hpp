// Worker processes of the cellflow program itself, shared by `run --isolate`
// (worker.cpp) and `blockwise --workers` (blockwise_command.cpp), and other
// programs (a blockwise task's check command): start "<this program>
// ARGS..." with stdout and stderr captured, wait for it under
// a time limit (SIGKILL when exceeded or when the calling thread's cancel
// token asks to stop), and describe how it ended. A worker started this way
// sees its parent's pid in $CELLFLOW_WORKER_PARENT and exits by itself when
// the parent dies (watch_parent()). Thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace cellflow::cli {

/// While it lives, TBB may run up to `slots` threads even on a machine with
/// fewer cores. Each worker process needs a thread of this process that waits
/// for it, so `--workers N` (blockwise) and `run --isolate --threads N` run N
/// workers at once whatever the core count (daisy's num_workers).
class WorkerSlots {
 public:
  explicit WorkerSlots(int slots);
  ~WorkerSlots();
  WorkerSlots(const WorkerSlots&) = delete;
  WorkerSlots& operator=(const WorkerSlots&) = delete;

 private:
  struct Control;
  std::unique_ptr<Control> control_;
};

struct WorkerExit {
  enum class How { kExited, kSignaled, kTimedOut, kCancelled };
  How how = How::kExited;
  int code = 0;        // kExited: the exit status
  int signal = 0;      // kSignaled: the signal
  std::string output;  // the tail of its stdout and stderr (64 KiB at most)

  /// "worker killed by signal 11 (Segmentation fault)", "timed out after 2 s
  /// (worker killed)", ...; empty for exit code 0.
  std::string describe(double timeout_seconds) const;
};

/// The absolute path of the running program. Throws IoError.
std::string self_exe();

/// Runs self_exe() with `args` (without argv[0]) and the parent's environment
/// plus $CELLFLOW_WORKER_PARENT; `timeout_seconds` > 0 kills it when exceeded.
/// Throws IoError if it cannot start.
WorkerExit run_worker_process(const std::vector<std::string>& args, double timeout_seconds);

/// Runs `argv` (argv[0] looked up in $PATH unless it has a "/") the same way,
/// with this process's environment plus (replacing) the "NAME=value" entries
/// of `extra_env`, without $CELLFLOW_WORKER_PARENT unless given there.
WorkerExit run_program(const std::vector<std::string>& argv,
                       const std::vector<std::string>& extra_env, double timeout_seconds);

/// In a worker: exits (status 1) at once if started by a parent that is gone,
/// and later as soon as the parent dies. Does nothing outside a worker.
void watch_parent();

/// The last "cellflow: error: " line of a worker's output without the leading
/// `frames` ("node \"a\": "), else the tail of the output on one line.
std::string worker_error(const std::string& output, const std::vector<std::string>& frames);

/// Logs the "cellflow: warning: " lines of a worker's output, prefixed by `where`.
void forward_warnings(const std::string& output, const std::string& where);

}  // namespace cellflow::cli

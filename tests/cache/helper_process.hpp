// Test-only: the pieces of the cache tests' cross-process races. A test binary
// starts copies of itself in "helper mode" (an environment variable that a
// static initializer of the test file reads before main()), then waits for them.
#pragma once

#include <fcntl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cellflow/cache/error.hpp"

namespace cellflow::test {

/// Appends `line` and a newline to `file` in one write(2) on an O_APPEND
/// descriptor, so lines of concurrent processes never interleave. Throws
/// IoError (no gtest assertions: helpers run outside any test).
inline void append_line(const std::filesystem::path& file, const std::string& line) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) throw IoError("cannot open " + file.string());
  const std::string l = line + "\n";
  const bool ok = ::write(fd, l.data(), l.size()) == static_cast<ssize_t>(l.size());
  ::close(fd);
  if (!ok) throw IoError("cannot append to " + file.string());
}

/// Starts this test binary again with `env_var`=`value` in its environment
/// (replacing any value inherited); returns its pid. The child exits 127 when
/// it cannot exec.
inline pid_t spawn_self(const std::string& env_var, const std::string& value) {
  const std::string prefix = env_var + "=";
  std::vector<std::string> envs{prefix + value};
  for (char** e = environ; *e != nullptr; ++e) {
    if (!std::string(*e).starts_with(prefix)) envs.emplace_back(*e);
  }
  // Built before fork(): the child only calls async-signal-safe functions.
  std::vector<char*> envp;
  envp.reserve(envs.size() + 1);
  for (auto& s : envs) envp.push_back(s.data());
  envp.push_back(nullptr);
  char exe[] = "/proc/self/exe";
  char* argv[] = {exe, nullptr};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execve(exe, argv, envp.data());
    ::_exit(127);
  }
  return pid;
}

/// Waits for `pid`: its exit code, 128 + the signal that killed it, or -1 when
/// waitpid fails.
inline int wait_exit_code(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace cellflow::test

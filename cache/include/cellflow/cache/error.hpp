// The exception hierarchy of cellflow, rooted at cellflow::Error.
// Errors gain context frames ("node smooth", "cell (2,5,1)", "file x") as they
// propagate; what() shows the frames outermost first, then the cause.
// Thread-safety: an Error is a value; do not share one mutable Error across threads.
#pragma once

#include <exception>
#include <string>
#include <vector>

namespace cellflow {

class Error : public std::exception {
 public:
  explicit Error(std::string message);

  const char* what() const noexcept override { return what_.c_str(); }
  /// The cause alone, without context frames.
  const std::string& message() const { return message_; }
  const std::vector<std::string>& context() const { return context_; }

  /// Adds an outer context frame such as "node smooth"; returns *this for rethrow.
  Error& add_context(std::string frame);

 private:
  void rebuild();
  std::string message_;
  std::vector<std::string> context_;  // innermost first
  std::string what_;
};

/// A parameter, argument or definition was invalid (CLI exit code 2).
class InvalidArgument : public Error {
  using Error::Error;
};
/// A graph is malformed: cycle, missing input, duplicate id, bad JSON (exit code 2).
class GraphError : public Error {
  using Error::Error;
};
/// A file could not be read or written.
class IoError : public Error {
  using Error::Error;
};
/// A lock was not granted within the time the caller allowed; the message
/// names the lock file and what the lock guards.
class LockTimeout : public IoError {
  using IoError::IoError;
};
/// Stored data failed its checksum or could not be decoded.
class CorruptionError : public Error {
  using Error::Error;
};
/// A plugin could not be loaded or registered.
class PluginError : public Error {
  using Error::Error;
};
/// An op's computation failed.
class NodeError : public Error {
  using Error::Error;
};
/// Work was cancelled (timeout, or another task failed).
class Cancelled : public Error {
  using Error::Error;
};

/// Runs fn(); if it throws a cellflow::Error, adds `frame` and rethrows. A
/// foreign std::exception is wrapped into a NodeError carrying the frame.
template <class Fn>
decltype(auto) with_context(const std::string& frame, Fn&& fn) {
  try {
    return fn();
  } catch (Error& e) {
    e.add_context(frame);
    throw;
  } catch (const std::exception& e) {
    NodeError wrapped(e.what());
    wrapped.add_context(frame);
    throw wrapped;
  }
}

}  // namespace cellflow

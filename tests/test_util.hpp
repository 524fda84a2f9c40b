// Helpers shared by the test suites: a fresh temporary directory per test,
// whole-file I/O, directory snapshots, running the `cellflow` CLI, and small
// graph builders. Header-only; each test executable includes it.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cellflow/cache/cell_buffer.hpp"
#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/graph/value.hpp"

namespace cellflow::test {

namespace fs = std::filesystem;

/// Every element of `b` as a double, in order.
inline std::vector<double> to_doubles(const CellBuffer& b) {
  return dispatch_dtype(b.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    std::vector<double> out(static_cast<size_t>(b.num_elements()));
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<double>(b.as<T>()[i]);
    return out;
  });
}

/// A fresh, empty directory named after the running test and this process,
/// removed (with its content) when the object dies.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "") {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info != nullptr ? std::string(info->test_suite_name()) + "." + info->name()
                                       : std::string("global");
    if (!tag.empty()) name += "-" + tag;
    for (char& c : name)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') c = '_';
    path_ =
        fs::temp_directory_path() / ("cellflow-test-" + std::to_string(::getpid()) + "-" + name);
    std::error_code ec;
    fs::remove_all(path_, ec);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& rel) const { return path_ / rel; }

 private:
  fs::path path_;
};

inline std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << p;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_all(const fs::path& p, const std::string& data) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
  out.close();
  ASSERT_TRUE(out.good()) << "cannot write " << p;
}

/// Relative path -> bytes of every regular file under `root` (empty map if
/// `root` does not exist).
inline std::map<std::string, std::string> snapshot(const fs::path& root) {
  std::map<std::string, std::string> out;
  if (!fs::exists(root)) return out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_regular_file()) out[fs::relative(e.path(), root).string()] = read_all(e.path());
  }
  return out;
}

/// Relative paths of every entry (files and folders) under `root`.
inline std::vector<std::string> listing(const fs::path& root) {
  std::vector<std::string> out;
  if (!fs::exists(root)) return out;
  for (const auto& e : fs::recursive_directory_iterator(root))
    out.push_back(fs::relative(e.path(), root).string() + (e.is_directory() ? "/" : ""));
  std::sort(out.begin(), out.end());
  return out;
}

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

/// Runs `argv` (argv[0] is the program) through the shell with stdout and
/// stderr captured into files under `scratch`.
inline CommandResult run_command(const std::vector<std::string>& argv, const fs::path& scratch) {
  static int counter = 0;
  const std::string n = std::to_string(counter++);
  const fs::path out = scratch / ("cmd-" + n + ".out");
  const fs::path err = scratch / ("cmd-" + n + ".err");
  std::string cmd;
  for (const auto& a : argv) cmd += shell_quote(a) + " ";
  cmd += "</dev/null >" + shell_quote(out.string()) + " 2>" + shell_quote(err.string());
  const int status = std::system(cmd.c_str());
  CommandResult r;
  if (status != -1 && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (fs::exists(out)) r.out = read_all(out);
  if (fs::exists(err)) r.err = read_all(err);
  std::error_code ec;
  fs::remove(out, ec);
  fs::remove(err, ec);
  return r;
}

/// Runs the `cellflow` CLI with `args`.
/// $CELLFLOW_TEST_CLI, when set, replaces the built program (to check that a
/// test fails against an older build).
inline CommandResult run_cli(const std::vector<std::string>& args, const fs::path& scratch) {
  const char* other = std::getenv("CELLFLOW_TEST_CLI");
  std::vector<std::string> argv{other != nullptr && *other != 0 ? other : CELLFLOW_CLI};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, scratch);
}

inline std::string describe(const CommandResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\n--- stdout ---\n" + r.out +
         "\n--- stderr ---\n" + r.err;
}

/// A JSON list of ints.
inline Value ints(std::initializer_list<int64_t> v) {
  Value::Array a;
  for (int64_t x : v) a.emplace_back(x);
  return Value(std::move(a));
}

inline Value floats(std::initializer_list<double> v) {
  Value::Array a;
  for (double x : v) a.emplace_back(x);
  return Value(std::move(a));
}

/// Bit-exact equality of two buffers, with a readable failure.
inline ::testing::AssertionResult same_bytes(const CellBuffer& a, const CellBuffer& b) {
  if (!a || !b) return ::testing::AssertionFailure() << "a buffer is empty";
  if (a.dtype() != b.dtype()) return ::testing::AssertionFailure() << "dtypes differ";
  if (!(a.shape() == b.shape()))
    return ::testing::AssertionFailure()
           << "shapes differ: " << a.shape().str() << " vs " << b.shape().str();
  if (!a.equals(b)) {
    size_t first = 0;
    while (first < a.num_bytes() && a.data()[first] == b.data()[first]) ++first;
    return ::testing::AssertionFailure()
           << "contents differ (first differing byte " << first << " of " << a.num_bytes() << ")";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace cellflow::test

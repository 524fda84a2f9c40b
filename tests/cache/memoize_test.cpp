// Tests of Memo (cache/src/memoize.cpp): hits, misses, versions, ignored
// arguments, round trips of structs, maps and images, entry.json, artifacts,
// damaged entries, and concurrency: threads and processes compute once, and a
// process killed while writing an entry leaves none.
//
// Process tests re-execute this test binary in "helper" mode (see the static
// initializer below), so each helper is a fresh process.
#include "cellflow/cache/memoize.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cache/helper_process.hpp"
#include "cellflow/cache/artifacts.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

constexpr const char* kHelperEnv = "CELLFLOW_MEMO_TEST_HELPER";

struct Sample {
  std::string name;
  int count = 0;
  std::map<std::string, std::vector<double>> series;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(CEREAL_NVP(name), CEREAL_NVP(count), CEREAL_NVP(series));
  }
  friend bool operator==(const Sample&, const Sample&) = default;
};

// A result whose serialization (while result.bin is written) can be made to
// stop: it announces itself through a file and waits to be killed.
struct Stalling {
  int value = 0;
  static inline const char* stall_marker = nullptr;
  template <class Archive>
  void save(Archive& ar) const {
    ar(value);
    if (stall_marker != nullptr && std::is_same_v<Archive, cereal::PortableBinaryOutputArchive>) {
      std::ofstream(stall_marker) << "writing";
      while (true) ::pause();
    }
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(value);
  }
};

int count_lines(const fs::path& file) {
  if (!fs::exists(file)) return 0;
  const std::string text = test::read_all(file);
  return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

// The slow, logged function the process tests share.
std::vector<int64_t> squares_logged(int64_t n, const std::string& log) {
  test::append_line(log, std::to_string(::getpid()));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(i * i);
  return out;
}

// Helper mode: "<mode> <dir>". Runs before main() and exits.
int run_helper(const std::string& spec) {
  const auto space = spec.find(' ');
  const std::string mode = spec.substr(0, space);
  const fs::path dir = spec.substr(space + 1);
  try {
    Memo memo(dir / "cache");
    if (mode == "race") {
      const auto r = memo.call_with_outcome("squares", 1, squares_logged, int64_t{1000},
                                            Memo::ignore((dir / "computed.log").string()));
      if (r.value.size() != 1000 || r.value[999] != 999 * 999) return 3;
      test::append_line(dir / "outcomes.log", r.outcome.cached ? "cached" : "computed");
      return 0;
    }
    if (mode == "stall") {
      const std::string marker = (dir / "stalled").string();
      Stalling::stall_marker = marker.c_str();
      memo.call(
          "stall", 1, [](int v) { return Stalling{v}; }, 7);
      return 4;  // never reached: the parent kills us while writing
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "helper: %s\n", e.what());
    return 5;
  }
  return 6;
}

[[maybe_unused]] const int kHelperMode = [] {
  if (const char* spec = std::getenv(kHelperEnv)) std::_Exit(run_helper(spec));
  return 0;
}();

/// Starts this test binary again in helper mode; returns its pid.
pid_t spawn_helper(const std::string& mode, const fs::path& dir) {
  return test::spawn_self(kHelperEnv, mode + " " + dir.string());
}

TEST(MemoTest, HitMissAndVersion) {
  TempDir tmp;
  Memo memo(tmp.path());
  int calls = 0;
  const auto add = [&](int a, int b) {
    ++calls;
    return a + b;
  };
  const auto first = memo.call_with_outcome("add", 1, add, 2, 3);
  EXPECT_EQ(first.value, 5);
  EXPECT_FALSE(first.outcome.cached);
  EXPECT_TRUE(fs::exists(first.outcome.entry / "entry.json"));
  EXPECT_TRUE(fs::exists(first.outcome.entry / "result.bin"));
  const auto again = memo.call_with_outcome("add", 1, add, 2, 3);
  EXPECT_EQ(again.value, 5);
  EXPECT_TRUE(again.outcome.cached);
  EXPECT_EQ(again.outcome.key, first.outcome.key);
  EXPECT_EQ(calls, 1);

  EXPECT_EQ(memo.call("add", 2, add, 2, 3), 5);  // new version: computed anew
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(memo.call("add", 1, add, 3, 2), 5);  // other arguments
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(memo.call("plus", 1, add, 2, 3), 5);  // other function id
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(memo.call("add", 1, add, 2, 3), 5);
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(memo.stats().hits, 2);
  EXPECT_EQ(memo.stats().misses, 4);

  // A second Memo on the same folder (another run) finds the entries.
  Memo other(tmp.path());
  EXPECT_TRUE(other.call_with_outcome("add", 1, add, 2, 3).outcome.cached);
  EXPECT_EQ(calls, 4);
}

// joblib's check_call_in_cache, func.clear() and clear().
TEST(MemoTest, ContainsAndClearPerFunctionOrAll) {
  test::TempDir tmp;
  Memo memo(tmp / "cache");
  int calls = 0;
  const auto square = [&](int64_t x) {
    ++calls;
    return x * x;
  };
  const auto cube = [&](int64_t x) {
    ++calls;
    return x * x * x;
  };
  EXPECT_FALSE(memo.contains("square", 1, square, int64_t{3}));
  EXPECT_EQ(calls, 0) << "contains computes nothing";
  EXPECT_EQ(memo.call("square", 1, square, int64_t{3}), 9);
  EXPECT_EQ(memo.call("square", 1, square, int64_t{4}), 16);
  EXPECT_EQ(memo.call("cube", 1, cube, int64_t{2}), 8);
  EXPECT_TRUE(memo.contains("square", 1, square, int64_t{3}));
  EXPECT_FALSE(memo.contains("square", 2, square, int64_t{3})) << "another version";
  EXPECT_FALSE(memo.contains("square", 1, square, int64_t{5})) << "other arguments";
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(memo.clear("square"), 2u);
  EXPECT_FALSE(memo.contains("square", 1, square, int64_t{3}));
  EXPECT_TRUE(memo.contains("cube", 1, cube, int64_t{2}));
  EXPECT_EQ(memo.clear(), 1u);
  EXPECT_FALSE(memo.contains("cube", 1, cube, int64_t{2}));
  EXPECT_EQ(memo.call("square", 1, square, int64_t{3}), 9);
  EXPECT_EQ(calls, 4) << "computed again after clear";
}

TEST(MemoTest, ArgumentTypesEnterTheKey) {
  TempDir tmp;
  Memo memo(tmp.path());
  int calls = 0;
  const auto twice = [&](auto x) {
    ++calls;
    return static_cast<double>(x) * 2;
  };
  memo.call("twice", 1, twice, 1);     // int
  memo.call("twice", 1, twice, 1.0f);  // float of the same size
  memo.call("twice", 1, twice, int64_t{1});
  EXPECT_EQ(calls, 3);
}

TEST(MemoTest, IgnoredArgumentsStayOutOfTheKey) {
  TempDir tmp;
  Memo memo(tmp.path());
  int calls = 0;
  const auto scaled = [&](const std::vector<double>& v, double factor, bool verbose) {
    ++calls;
    if (verbose) log(LogLevel::kInfo, "scaling");
    std::vector<double> out;
    for (double x : v) out.push_back(x * factor);
    return out;
  };
  const std::vector<double> v{1, 2, 3};
  EXPECT_EQ(memo.call("scaled", 1, scaled, v, 2.0, Memo::ignore(true)),
            (std::vector<double>{2, 4, 6}));
  EXPECT_EQ(memo.call("scaled", 1, scaled, v, 2.0, Memo::ignore(false)),
            (std::vector<double>{2, 4, 6}));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(memo.call("scaled", 1, scaled, v, 3.0, Memo::ignore(false)),
            (std::vector<double>{3, 6, 9}));
  EXPECT_EQ(calls, 2);

  // wrap(): positions listed in `ignore` are passed but not keyed.
  const auto wrapped = memo.wrap("scaled_wrapped", 1, scaled, {2});
  EXPECT_EQ(wrapped(v, 2.0, true), (std::vector<double>{2, 4, 6}));
  EXPECT_EQ(wrapped(v, 2.0, false), (std::vector<double>{2, 4, 6}));
  EXPECT_EQ(calls, 3);

  // An ignored argument passed by reference reaches the function itself.
  int seen = 0;
  const auto touch = [](int x, int& counter) {
    ++counter;
    return x;
  };
  memo.call("touch", 1, touch, 4, Memo::ignore(seen));
  EXPECT_EQ(seen, 1);

  const auto entry = parse_json(test::read_all(
      memo.call_with_outcome("scaled", 1, scaled, v, 2.0, Memo::ignore(true)).outcome.entry /
      "entry.json"));
  const auto& args = entry.find("arguments")->as_array();
  ASSERT_EQ(args.size(), 3u);
  EXPECT_TRUE(args[2].find("ignored")->as_bool());
  EXPECT_EQ(args[2].find("value"), nullptr);
}

TEST(MemoTest, StructsMapsAndStringsRoundTrip) {
  TempDir tmp;
  Memo memo(tmp.path());
  int calls = 0;
  const auto make = [&](const std::string& name, const std::map<std::string, int>& counts) {
    ++calls;
    Sample s;
    s.name = name;
    for (const auto& [k, n] : counts) {
      s.count += n;
      for (int i = 0; i < n; ++i) s.series[k].push_back(0.5 * i);
    }
    return s;
  };
  const std::map<std::string, int> counts{{"a", 2}, {"b", 3}};
  const Sample computed = memo.call("make", 1, make, std::string("cells"), counts);
  const auto loaded = memo.call_with_outcome("make", 1, make, std::string("cells"), counts);
  EXPECT_TRUE(loaded.outcome.cached);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(loaded.value, computed);
  EXPECT_EQ(loaded.value.count, 5);
  EXPECT_EQ(loaded.value.series.at("b"), (std::vector<double>{0, 0.5, 1.0}));

  // A struct as an argument: its content is the key.
  const auto count_of = [&](const Sample& s) {
    ++calls;
    return s.count;
  };
  EXPECT_EQ(memo.call("count_of", 1, count_of, computed), 5);
  EXPECT_EQ(memo.call("count_of", 1, count_of, computed), 5);
  Sample changed = computed;
  changed.series["a"][1] = 7;
  EXPECT_EQ(memo.call("count_of", 1, count_of, changed), 5);
  EXPECT_EQ(calls, 3);

  // String literals are keyed like strings; Tables round-trip.
  const auto table = [&](const char* column, int rows) {
    ++calls;
    Table t({column, "twice"});
    for (int r = 0; r < rows; ++r) t.add_row(std::vector<double>{1.0 * r, 2.0 * r});
    return t;
  };
  const Table t1 = memo.call("table", 1, table, "x", 3);
  const Table t2 = memo.call("table", 1, table, std::string("x").c_str(), 3);
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(t1, t2);
  EXPECT_EQ(t2.num_rows(), 3u);
  EXPECT_EQ(t2.at(2, 1), 4.0);

  // entry.json is readable: function, version, argument values, result, time.
  const Value entry = parse_json(test::read_all(loaded.outcome.entry / "entry.json"));
  EXPECT_EQ(entry.find("function")->as_string(), "make");
  EXPECT_EQ(entry.find("version")->as_int(), 1);
  EXPECT_EQ(entry.find("key")->as_string(), loaded.outcome.key);
  ASSERT_NE(entry.find("created"), nullptr);
  ASSERT_NE(entry.find("seconds"), nullptr);
  const auto& args = entry.find("arguments")->as_array();
  ASSERT_EQ(args.size(), 2u);
  EXPECT_EQ(args[0].find("value")->as_string(), "cells");
  EXPECT_EQ(to_json_compact(*args[1].find("value")),
            R"([{"key":"a","value":2},{"key":"b","value":3}])");
  const Value* result = entry.find("result");
  EXPECT_EQ(result->find("format")->as_string(), "cereal-portable-binary");
  EXPECT_EQ(result->find("value")->find("name")->as_string(), "cells");
}

TEST(MemoTest, ImagesAreStoredAsZarrAndKeyedByContent) {
  TempDir tmp;
  Memo memo(tmp.path());
  int calls = 0;
  const auto ramp = [&](int64_t rows, int64_t cols) {
    ++calls;
    CellBuffer b = CellBuffer::allocate(DType::kU16, Shape{rows, cols});
    for (int64_t i = 0; i < rows * cols; ++i)
      b.mutable_as<uint16_t>()[i] = static_cast<uint16_t>(i * 7);
    return b;
  };
  // 1500 x 2000 u16 = 6 MB: several slab chunks, the last one partial.
  const auto computed = memo.call_with_outcome("ramp", 1, ramp, int64_t{1500}, int64_t{2000});
  const fs::path zarr = computed.outcome.entry / "result";
  ASSERT_TRUE(fs::exists(zarr / ".zarray"));
  EXPECT_FALSE(fs::exists(computed.outcome.entry / "result.bin"));
  const Value zarray = parse_json(test::read_all(zarr / ".zarray"));
  EXPECT_EQ(to_json_compact(*zarray.find("shape")), "[1500,2000]");
  const auto loaded = memo.call_with_outcome("ramp", 1, ramp, int64_t{1500}, int64_t{2000});
  EXPECT_TRUE(loaded.outcome.cached);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(test::same_bytes(loaded.value, computed.value));

  // Images as arguments: keyed by dtype, shape and every byte.
  const auto total = [&](const CellBuffer& b) {
    ++calls;
    double s = 0;
    for (int64_t i = 0; i < b.num_elements(); ++i) s += b.as<uint16_t>()[i];
    return s;
  };
  const double t = memo.call("total", 1, total, loaded.value);
  EXPECT_EQ(memo.call("total", 1, total, computed.value), t);
  EXPECT_EQ(calls, 2);
  CellBuffer changed = CellBuffer::allocate(DType::kU16, loaded.value.shape());
  std::memcpy(changed.mutable_data(), loaded.value.data(), loaded.value.num_bytes());
  changed.mutable_as<uint16_t>()[123456] += 1;
  EXPECT_EQ(memo.call("total", 1, total, changed), t + 1);
  EXPECT_EQ(calls, 3);

  // A small 3-D image, and an image with a zero-length axis.
  const auto cube = [](int n) {
    CellBuffer b = CellBuffer::allocate(DType::kF32, Shape{n, n + 1, n + 2});
    for (int64_t i = 0; i < b.num_elements(); ++i)
      b.mutable_as<float>()[i] = 0.25f * static_cast<float>(i);
    return b;
  };
  const CellBuffer c1 = memo.call("cube", 1, cube, 5);
  const CellBuffer c2 = memo.call("cube", 1, cube, 5);
  EXPECT_TRUE(test::same_bytes(c1, c2));
  const auto empty = [] { return CellBuffer::zeros(DType::kU8, Shape{0, 4}); };
  EXPECT_EQ(memo.call("empty", 1, empty).shape(), (Shape{0, 4}));
  EXPECT_EQ(memo.call("empty", 1, empty).shape(), (Shape{0, 4}));
}

TEST(MemoTest, FunctionsWriteArtifactsAndWarningsBesideTheirEntry) {
  TempDir tmp;
  Memo memo(tmp.path());
  const LogSink previous = set_log_sink([](LogLevel, const std::string&) {});
  const auto outcome =
      memo.call_with_outcome(
              "plotted", 1,
              [](int n) {
                const ArtifactWriter* artifacts = current_artifacts();
                if (artifacts == nullptr) throw Error("no current artifacts");
                artifacts->write_text("notes.txt", "n = " + std::to_string(n) + "\n");
                CellBuffer img = CellBuffer::zeros(DType::kU8, Shape{4, 5});
                artifacts->write_png("plot", img);
                log_warning("n is small");
                return n * 2;
              },
              3)
          .outcome;
  set_log_sink(previous);
  EXPECT_EQ(current_artifacts(), nullptr);
  const fs::path dir = outcome.entry / "artifacts";
  EXPECT_EQ(test::read_all(dir / "notes.txt"), "n = 3\n");
  EXPECT_TRUE(fs::exists(dir / "plot.png"));
  const std::string warnings = test::read_all(dir / "warnings.log");
  EXPECT_NE(warnings.find("warning: n is small"), std::string::npos) << warnings;
}

TEST(MemoTest, ExceptionsStoreNothing) {
  TempDir tmp;
  Memo memo(tmp.path());
  int calls = 0;
  const auto flaky = [&](int x) {
    if (++calls == 1) throw std::runtime_error("first try fails");
    return x;
  };
  EXPECT_THROW(memo.call("flaky", 1, flaky, 1), std::runtime_error);
  EXPECT_EQ(memo.call("flaky", 1, flaky, 1), 1);
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(test::listing(memo.root() / ".tmp").empty())
      << "a failed call left its temporary entry";
}

TEST(MemoTest, DamagedEntryIsComputedAgain) {
  TempDir tmp;
  Memo memo(tmp.path());
  int calls = 0;
  const auto f = [&](int x) {
    ++calls;
    return std::vector<int>(1000, x);
  };
  const auto first = memo.call_with_outcome("f", 1, f, 9);
  // Flip a byte of the stored result: the checksum catches it.
  const fs::path bin = first.outcome.entry / "result.bin";
  std::string bytes = test::read_all(bin);
  bytes[bytes.size() / 2] ^= 0x40;
  test::write_all(bin, bytes);
  std::vector<std::string> warnings;
  const LogSink previous =
      set_log_sink([&](LogLevel, const std::string& m) { warnings.push_back(m); });
  const auto again = memo.call_with_outcome("f", 1, f, 9);
  set_log_sink(previous);
  EXPECT_FALSE(again.outcome.cached);
  EXPECT_EQ(again.value, std::vector<int>(1000, 9));
  EXPECT_EQ(calls, 2);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("checksum"), std::string::npos) << warnings[0];
  EXPECT_TRUE(memo.call_with_outcome("f", 1, f, 9).outcome.cached);
}

TEST(MemoTest, ConcurrentThreadsComputeOnce) {
  TempDir tmp;
  Memo memo(tmp.path());
  std::atomic<int> calls{0};
  const auto slow = [&](int n) {
    calls.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return std::vector<int>(static_cast<size_t>(n), n);
  };
  constexpr int kThreads = 8;
  std::vector<std::vector<int>> results(kThreads);
  std::vector<int> cached(kThreads, -1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto r = memo.call_with_outcome("slow", 1, slow, 100);
      results[static_cast<size_t>(t)] = std::move(r.value);
      cached[static_cast<size_t>(t)] = r.outcome.cached ? 1 : 0;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(std::count(cached.begin(), cached.end(), 0), 1);
  for (const auto& r : results) EXPECT_EQ(r, std::vector<int>(100, 100));
}

TEST(MemoTest, ConcurrentProcessesComputeOnce) {
  TempDir tmp;
  constexpr int kProcesses = 5;
  std::vector<pid_t> pids;
  for (int i = 0; i < kProcesses; ++i) pids.push_back(spawn_helper("race", tmp.path()));
  for (pid_t pid : pids) EXPECT_EQ(test::wait_exit_code(pid), 0);
  EXPECT_EQ(count_lines(tmp / "computed.log"), 1) << test::read_all(tmp / "computed.log");
  const std::string outcomes = test::read_all(tmp / "outcomes.log");
  int computed = 0;
  for (size_t p = outcomes.find("computed"); p != std::string::npos;
       p = outcomes.find("computed", p + 1))
    ++computed;
  EXPECT_EQ(computed, 1) << outcomes;
  EXPECT_EQ(count_lines(tmp / "outcomes.log"), kProcesses);
  // And this process loads the same entry.
  Memo memo(tmp / "cache");
  const auto r = memo.call_with_outcome("squares", 1, squares_logged, int64_t{1000},
                                        Memo::ignore((tmp / "computed.log").string()));
  EXPECT_TRUE(r.outcome.cached);
}

TEST(MemoTest, ProcessKilledWhileWritingLeavesNoEntry) {
  TempDir tmp;
  const pid_t pid = spawn_helper("stall", tmp.path());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(tmp / "stalled") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(fs::exists(tmp / "stalled")) << "the helper never started writing";
  ::kill(pid, SIGKILL);
  EXPECT_EQ(test::wait_exit_code(pid), 128 + SIGKILL);

  Memo memo(tmp / "cache");
  const auto make = [](int v) { return Stalling{v}; };
  // The half-written entry stayed in the temporary folder; no entry exists.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(memo.root()))
    if (e.is_directory() && e.path().filename() != ".tmp") ++entries;
  EXPECT_EQ(entries, 0);
  EXPECT_FALSE(test::listing(memo.root() / ".tmp").empty());
  // The next call computes, commits, and removes the dead writer's leftovers.
  const auto r = memo.call_with_outcome("stall", 1, make, 7);
  EXPECT_FALSE(r.outcome.cached);
  EXPECT_EQ(r.value.value, 7);
  EXPECT_TRUE(test::listing(memo.root() / ".tmp").empty());
  EXPECT_TRUE(memo.call_with_outcome("stall", 1, make, 7).outcome.cached);
}

}  // namespace
}  // namespace cellflow

namespace cellflow {
namespace {

// joblib's verbose: one line per call, naming function, version and key,
// with the compute time on a miss; silent by default.
TEST(MemoLogTest, HitsAndMissesAreLoggedAtTheChosenLevel) {
  test::TempDir tmp;
  Memo memo(tmp / "cache");
  std::vector<std::pair<LogLevel, std::string>> lines;
  std::mutex mu;
  const LogSink previous = set_log_sink([&](LogLevel level, const std::string& message) {
    std::lock_guard lock(mu);
    lines.emplace_back(level, message);
  });
  const auto square = [](int64_t x) { return x * x; };
  memo.call("square", 1, square, int64_t{2});
  EXPECT_TRUE(lines.empty()) << "silent unless asked";
  memo.set_log_level(LogLevel::kInfo);
  const auto miss = memo.call_with_outcome("square", 1, square, int64_t{3});
  const auto hit = memo.call_with_outcome("square", 1, square, int64_t{3});
  set_log_sink(previous);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].first, LogLevel::kInfo);
  EXPECT_NE(lines[0].second.find("memo \"square\" (version 1, key " + miss.outcome.key +
                                 "): miss, "
                                 "computed in "),
            std::string::npos)
      << lines[0].second;
  EXPECT_NE(lines[1].second.find("key " + hit.outcome.key + "): hit, loaded in "),
            std::string::npos)
      << lines[1].second;
  EXPECT_EQ(memo.log_level(), LogLevel::kInfo);
}

// joblib's call_and_shelve: a handle that computes or loads on first get().
TEST(MemoHandleTest, GetComputesOnceOnFirstUseThenLoads) {
  test::TempDir tmp;
  Memo memo(tmp / "cache");
  std::atomic<int> calls{0};
  const auto slow_sum = [&](const std::vector<int64_t>& v, int64_t add) {
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    int64_t s = add;
    for (int64_t x : v) s += x;
    return s;
  };
  std::vector<int64_t> values{1, 2, 3};
  const auto handle = memo.shelve("sum", 1, slow_sum, values, int64_t{10});
  values.clear();  // the handle holds its own copy
  EXPECT_EQ(calls.load(), 0) << "nothing computed before get()";
  EXPECT_FALSE(handle.contains());
  EXPECT_FALSE(handle.outcome().has_value());
  EXPECT_EQ(handle.key().size(), 32u);

  std::vector<std::thread> threads;
  std::vector<int64_t> got(4);
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { got[i] = handle.get(); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(calls.load(), 1);
  for (int64_t g : got) EXPECT_EQ(g, 16);
  EXPECT_TRUE(handle.contains());
  ASSERT_TRUE(handle.outcome().has_value());
  EXPECT_FALSE(handle.outcome()->cached);
  EXPECT_EQ(handle.outcome()->key, handle.key());
  EXPECT_EQ(&handle.get(), &handle.get()) << "later gets return the same value";

  // The same call, shelved again, loads the entry; call() agrees on the key.
  const auto again = memo.shelve("sum", 1, slow_sum, std::vector<int64_t>{1, 2, 3}, int64_t{10});
  EXPECT_EQ(again.key(), handle.key());
  EXPECT_EQ(again.get(), 16);
  EXPECT_TRUE(again.outcome()->cached);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_TRUE(memo.call_with_outcome("sum", 1, slow_sum, std::vector<int64_t>{1, 2, 3}, int64_t{10})
                  .outcome.cached);

  // clear() removes the entry; the value already got stays valid.
  EXPECT_TRUE(handle.clear());
  EXPECT_FALSE(handle.contains());
  EXPECT_FALSE(handle.clear()) << "nothing left to remove";
  EXPECT_EQ(handle.get(), 16);
  EXPECT_EQ(memo.shelve("sum", 1, slow_sum, std::vector<int64_t>{1, 2, 3}, int64_t{10}).get(), 16);
  EXPECT_EQ(calls.load(), 2) << "computed again after clear";
}

TEST(MemoHandleTest, FailedGetIsRetried) {
  test::TempDir tmp;
  Memo memo(tmp / "cache");
  int calls = 0;
  const auto flaky = [&](int64_t x) {
    if (++calls == 1) throw std::runtime_error("first call fails");
    return x + 1;
  };
  const auto handle = memo.shelve("flaky", 1, flaky, int64_t{1});
  EXPECT_THROW(handle.get(), std::runtime_error);
  EXPECT_FALSE(handle.contains());
  EXPECT_EQ(handle.get(), 2);
  EXPECT_EQ(calls, 2);
}

// joblib's cache_validation_callback: sees age and compute time on a hit;
// false recomputes and replaces the entry.
TEST(MemoValidatorTest, RejectedEntriesAreComputedAgain) {
  test::TempDir tmp;
  Memo memo(tmp / "cache");
  int calls = 0;
  const auto slow = [&](int64_t x) {
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    return x * 10;
  };
  const auto first = memo.call_with_outcome("slow", 1, slow, int64_t{1});
  std::vector<MemoEntryInfo> seen;
  bool accept = true;
  memo.set_validator([&](const MemoEntryInfo& info) {
    seen.push_back(info);
    return accept;
  });
  EXPECT_TRUE(memo.call_with_outcome("slow", 1, slow, int64_t{1}).outcome.cached);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].function, "slow");
  EXPECT_EQ(seen[0].version, 1);
  EXPECT_EQ(seen[0].key, first.outcome.key);
  EXPECT_EQ(seen[0].entry, first.outcome.entry);
  EXPECT_GE(seen[0].compute_seconds, 0.025) << "the function's own run time";
  EXPECT_LT(seen[0].compute_seconds, first.outcome.seconds + 0.001);
  EXPECT_GE(seen[0].age_seconds, 0);
  EXPECT_LT(seen[0].age_seconds, 600);
  const auto now = std::chrono::system_clock::now();
  EXPECT_LE(seen[0].created, now);
  EXPECT_GT(seen[0].created, now - std::chrono::minutes(10));

  accept = false;
  const auto rejected = memo.call_with_outcome("slow", 1, slow, int64_t{1});
  EXPECT_FALSE(rejected.outcome.cached);
  EXPECT_EQ(rejected.value, 10);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(seen.size(), 2u) << "asked once per call";
  EXPECT_EQ(calls, 2);

  // Not asked on a miss; the replaced entry serves the next accepted hit.
  accept = true;
  memo.call("slow", 1, slow, int64_t{2});
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_TRUE(memo.call_with_outcome("slow", 1, slow, int64_t{1}).outcome.cached);
  EXPECT_EQ(calls, 3);

  // An age limit, the common use.
  memo.set_validator([](const MemoEntryInfo& info) { return info.age_seconds < 3600; });
  EXPECT_TRUE(memo.call_with_outcome("slow", 1, slow, int64_t{1}).outcome.cached);
  memo.set_validator({});
  EXPECT_TRUE(memo.call_with_outcome("slow", 1, slow, int64_t{1}).outcome.cached);
  EXPECT_EQ(calls, 3);
}

}  // namespace
}  // namespace cellflow

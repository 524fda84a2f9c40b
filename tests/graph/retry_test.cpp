// materialize()'s failure policy: a failing cell is retried (run policy, or
// the op's own), then reported with node, cell and cause; per-attempt
// timeouts are cooperative (check_cancelled); every attempt produces a cell
// event; a cell runner replaces the computation and is retried the same way.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/cancel.hpp"
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "test_ops.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;

/// Attempts per cell box, shared by the kernels of one test.
struct Attempts {
  std::mutex mu;
  std::map<std::string, int> count;
  int next(const Box& box) {
    std::lock_guard lock(mu);
    return ++count[box.begin().str()];
  }
  int total() {
    std::lock_guard lock(mu);
    int n = 0;
    for (const auto& [k, v] : count) n += v;
    return n;
  }
};

// test.flaky: copies its input; the cell containing `at` (every cell when
// `at` is absent) fails its first `failures` attempts. mode "throw" throws,
// mode "slow" loops checking for cancellation for `seconds`.
class FlakyKernel final : public NodeKernel {
 public:
  FlakyKernel(ImageInfo info, Attempts* attempts, int failures, std::optional<Box> at, bool slow,
              double seconds)
      : NodeKernel(std::move(info)),
        attempts_(attempts),
        failures_(failures),
        at_(at),
        slow_(slow),
        seconds_(seconds) {}
  void compute(const Box& box, std::span<const InputRegion> in, CellBuffer& out) const override {
    if (!at_ || !box.intersect(*at_).empty()) {
      if (attempts_->next(box) <= failures_) {
        if (!slow_) throw std::runtime_error("injected failure");
        const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds_);
        while (std::chrono::steady_clock::now() < end) {
          check_cancelled();
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
      }
    }
    std::memcpy(out.mutable_data(), in[0].data.data(), out.num_bytes());
  }

 private:
  Attempts* attempts_;
  int failures_;
  std::optional<Box> at_;
  bool slow_;
  double seconds_;
};

class FlakyOp final : public Op {
 public:
  FlakyOp(Attempts* attempts, int op_retries = -1, double op_timeout = -1)
      : attempts_(attempts), op_retries_(op_retries), op_timeout_(op_timeout) {}
  std::string_view name() const override { return "test.flaky"; }
  int version() const override { return 1; }
  std::string_view doc() const override { return "fails its first attempts"; }
  std::vector<ParamSpec> params() const override {
    return {{"failures", ParamType::kInt, Value(1), "failing attempts per cell"},
            {"at", ParamType::kIntList, Value(), "a voxel of the failing cell (default: all)"},
            {"slow", ParamType::kBool, Value(false), "be slow instead of throwing"},
            {"seconds", ParamType::kFloat, Value(30.0), "how slow"}};
  }
  int min_inputs() const override { return 1; }
  int max_retries() const override { return op_retries_; }
  double timeout_seconds() const override { return op_timeout_; }
  std::unique_ptr<NodeKernel> bind(const Params& p, std::span<const ImageInfo> in) const override {
    std::optional<Box> at;
    if (const Value* v = p.value().find("at"); v != nullptr && v->is_array()) {
      const Dims a = Dims::from(p.get_ints("at"));
      Dims end = a;
      for (int d = 0; d < end.rank(); ++d) end[d] += 1;
      at = Box(a, end);
    }
    return std::make_unique<FlakyKernel>(in[0], attempts_, static_cast<int>(p.get_int("failures")),
                                         at, p.get_bool("slow"), p.get_float("seconds"));
  }

 private:
  Attempts* attempts_;
  int op_retries_;
  double op_timeout_;
};

struct Fixture {
  test::TempDir tmp;
  Attempts attempts;
  std::unique_ptr<Registry> registry;
  std::mutex mu;
  std::vector<CellEvent> events;

  explicit Fixture(int op_retries = -1, double op_timeout = -1) {
    registry = test::make_test_registry();
    registry->add(std::make_shared<FlakyOp>(&attempts, op_retries, op_timeout));
  }

  Graph build(const Value& flaky_params) {
    GraphDef def;
    def.add("src", "test.const", {},
            Value(Value::Object{{"shape", test::ints({8, 8, 8})},
                                {"cell_shape", test::ints({4, 4, 4})},
                                {"ramp", 1.0}}));
    def.add("flaky", "test.flaky", {"src"}, flaky_params);
    def.outputs = {"flaky"};
    GraphOptions o;
    o.cache_root = tmp / "cache";
    return Graph::build(def, *registry, o);
  }

  RunOptions options(int retries, double timeout = 0) {
    RunOptions o;
    o.threads = 2;
    o.max_retries = retries;
    o.timeout_seconds = timeout;
    o.on_cell = [this](const CellEvent& e) {
      std::lock_guard lock(mu);
      events.push_back(e);
    };
    return o;
  }

  std::vector<CellEvent> of(const Graph& g, CellEvent::Kind kind) {
    std::lock_guard lock(mu);
    std::vector<CellEvent> out;
    for (const CellEvent& e : events)
      if (e.kind == kind && g.nodes()[e.node].def.id == "flaky") out.push_back(e);
    return out;
  }
};

void expect_copy(const Graph& g) {
  const auto src = g.image("src");
  const auto flaky = g.image("flaky");
  EXPECT_TRUE(
      test::same_bytes(flaky->read(flaky->grid().bounds()), src->read(src->grid().bounds())));
}

TEST(Retries, AFailingCellIsRetriedThenSucceeds) {
  Fixture f;
  const Graph g = f.build(Value(Value::Object{{"failures", 2}, {"at", test::ints({5, 1, 6})}}));
  const RunReport r = materialize(g, {}, f.options(/*retries=*/2));
  const auto retries = f.of(g, CellEvent::Kind::kRetry);
  ASSERT_EQ(retries.size(), 2u);
  for (size_t k = 0; k < retries.size(); ++k) {
    EXPECT_EQ(retries[k].cell, (CellIndex{1, 0, 1}));
    EXPECT_EQ(retries[k].attempt, static_cast<int>(k) + 1);
    EXPECT_NE(retries[k].error.find("injected failure"), std::string::npos) << retries[k].error;
  }
  EXPECT_TRUE(f.of(g, CellEvent::Kind::kFailed).empty());
  const auto done = f.of(g, CellEvent::Kind::kDone);
  ASSERT_EQ(done.size(), 8u) << "one done event per cell";
  for (const CellEvent& e : done) {
    EXPECT_TRUE(e.computed);
    EXPECT_EQ(e.attempt, e.cell == (CellIndex{1, 0, 1}) ? 3 : 1);
  }
  EXPECT_EQ(f.attempts.total(), 3);
  EXPECT_EQ(r.nodes[g.index("flaky")].cells_computed, 8);
  EXPECT_TRUE(r.nodes[g.index("flaky")].complete);
  expect_copy(g);
}

TEST(Retries, ExhaustedRetriesFailTheRunNamingNodeCellAndCause) {
  Fixture f;
  const Graph g = f.build(Value(Value::Object{{"failures", 5}, {"at", test::ints({5, 1, 6})}}));
  try {
    materialize(g, {}, f.options(/*retries=*/1));
    FAIL() << "the run succeeded";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("node \"flaky\""), std::string::npos) << what;
    EXPECT_NE(what.find("cell (1,0,1)"), std::string::npos) << what;
    EXPECT_NE(what.find("injected failure"), std::string::npos) << what;
  }
  EXPECT_EQ(f.of(g, CellEvent::Kind::kRetry).size(), 1u);
  const auto failed = f.of(g, CellEvent::Kind::kFailed);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].attempt, 2);
  EXPECT_EQ(failed[0].cell, (CellIndex{1, 0, 1}));
  EXPECT_EQ(f.attempts.total(), 2) << "1 try + 1 retry, then no more";
  // Nothing of the failed cell was committed.
  EXPECT_FALSE(fs::exists(f.tmp / "cache" / g.node("flaky").hash / "0" / "1" / "0" / "1"));
  EXPECT_FALSE(fs::exists(f.tmp / "cache" / g.node("flaky").hash / ".cellflow-complete"));
}

TEST(Retries, NoRetriesByDefault) {
  Fixture f;
  const Graph g = f.build(Value(Value::Object{{"failures", 1}, {"at", test::ints({0, 0, 0})}}));
  EXPECT_THROW(materialize(g, {}, f.options(/*retries=*/0)), Error);
  EXPECT_EQ(f.attempts.total(), 1);
  // The next run picks up where this one stopped and succeeds (the cell's
  // one failure is spent).
  f.events.clear();
  const RunReport r = materialize(g, {}, f.options(0));
  EXPECT_TRUE(r.nodes[g.index("flaky")].complete);
  expect_copy(g);
}

TEST(Retries, TheOpsOwnPolicyWinsOverTheRuns) {
  Fixture f(/*op_retries=*/3);
  const Graph g = f.build(Value(Value::Object{{"failures", 3}, {"at", test::ints({0, 0, 0})}}));
  const RunReport r = materialize(g, {}, f.options(/*retries=*/0));
  EXPECT_EQ(f.of(g, CellEvent::Kind::kRetry).size(), 3u);
  EXPECT_TRUE(r.nodes[g.index("flaky")].complete);
  expect_copy(g);
}

TEST(Timeouts, ASlowCellIsCancelledAtItsDeadlineAndRetried) {
  Fixture f;
  // The first attempt of every cell would take 30 s; the timeout stops it.
  const Graph g = f.build(Value(Value::Object{{"failures", 1}, {"slow", true}, {"seconds", 30.0}}));
  const auto t0 = std::chrono::steady_clock::now();
  const RunReport r = materialize(g, {}, f.options(/*retries=*/1, /*timeout=*/0.2));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 20.0);
  const auto retries = f.of(g, CellEvent::Kind::kRetry);
  ASSERT_EQ(retries.size(), 8u);
  for (const CellEvent& e : retries) {
    EXPECT_NE(e.error.find("timed out"), std::string::npos) << e.error;
    EXPECT_GE(e.seconds, 0.19);
  }
  EXPECT_TRUE(r.nodes[g.index("flaky")].complete);
  expect_copy(g);
}

TEST(Timeouts, WithoutRetriesATimeoutFailsTheRun) {
  Fixture f;
  const Graph g = f.build(Value(Value::Object{
      {"failures", 1}, {"slow", true}, {"seconds", 30.0}, {"at", test::ints({4, 4, 4})}}));
  try {
    materialize(g, {}, f.options(0, 0.2));
    FAIL() << "the run succeeded";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cell (1,1,1)"), std::string::npos) << what;
    EXPECT_NE(what.find("timed out"), std::string::npos) << what;
  }
}

TEST(Timeouts, TheOpsOwnTimeoutWinsOverTheRuns) {
  Fixture f(/*op_retries=*/1, /*op_timeout=*/0.2);
  const Graph g = f.build(Value(Value::Object{
      {"failures", 1}, {"slow", true}, {"seconds", 30.0}, {"at", test::ints({0, 0, 0})}}));
  const RunReport r = materialize(g, {}, f.options(0, /*timeout=*/0));  // the run has no timeout
  EXPECT_EQ(f.of(g, CellEvent::Kind::kRetry).size(), 1u);
  EXPECT_TRUE(r.nodes[g.index("flaky")].complete);
}

TEST(CellRunner, ReplacesTheComputationAndIsRetried) {
  Fixture f;
  const Graph g = f.build(Value(Value::Object{{"failures", 0}}));
  std::atomic<int> calls{0};
  std::atomic<int> failed_once{0};
  RunOptions o = f.options(/*retries=*/1, /*timeout=*/5);
  o.cell_runner = [&](size_t node, const CellIndex& cell, double timeout) {
    ++calls;
    EXPECT_DOUBLE_EQ(timeout, 5);
    // The first call for cell (0,0,0) of "flaky" fails as a crashed worker would.
    if (g.nodes()[node].def.id == "flaky" && cell == CellIndex{0, 0, 0} && failed_once++ == 0) {
      NodeError e("worker killed by signal 11 (Segmentation fault)");
      throw e;
    }
    g.image(node)->ensure(cell);
  };
  const RunReport r = materialize(g, {}, o);
  EXPECT_EQ(calls.load(), 8 + 8 + 1) << "every cell of src and flaky, plus one retry";
  const auto retries = f.of(g, CellEvent::Kind::kRetry);
  ASSERT_EQ(retries.size(), 1u);
  EXPECT_NE(retries[0].error.find("signal 11"), std::string::npos);
  EXPECT_TRUE(r.nodes[g.index("flaky")].complete);
  expect_copy(g);
}

}  // namespace
}  // namespace cellflow

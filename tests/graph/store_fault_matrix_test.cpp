// The store under every write fault: a cold run of a small pipeline through a
// MemoryEnv, with ENOSPC, EIO, a silently short write or a crash injected at
// each numbered write step in turn (and, for crashes, a power cut under both
// durability policies). Whatever the fault, the next run must end with every
// node's data bit-identical to a clean run's, every stored cell must pass its
// identity-bound checksum, and the failed run must have raised an error (never
// a silent success with missing data).
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/cache_scan.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/graph/provenance.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/store/layout.hpp"
#include "cellflow/store/memory_env.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

GraphDef small_pipeline() {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {},
          Value(Value::Object{{"shape", test::ints({16, 16, 12})},
                              {"cell_shape", test::ints({8, 8, 8})},
                              {"seed", 5},
                              {"count", 6}}));
  def.add("smooth", "gaussian", {"raw"}, Value(Value::Object{{"sigma", 1.0}}));
  def.add("mask", "threshold", {"smooth"}, Value(Value::Object{{"above", 0.3}}));
  def.outputs = {"mask"};
  return def;
}

int env_counter = 0;

// A fresh in-memory cache: a unique root, so the process-wide node images of
// one case are never shared with another's.
std::shared_ptr<MemoryEnv> fresh_env() {
  return std::make_shared<MemoryEnv>("/memory-cache-" + std::to_string(++env_counter));
}

Graph build(const std::shared_ptr<Env>& env, Durability durability) {
  GraphOptions o;
  o.cache_env = env;
  o.durability = durability;
  return Graph::build(small_pipeline(), nodes::builtin_registry(), o);
}

std::map<std::string, CellBuffer> read_all(const Graph& g) {
  std::map<std::string, CellBuffer> out;
  for (size_t i = 0; i < g.nodes().size(); ++i)
    out[g.nodes()[i].def.id] = g.image(i)->read(g.image(i)->grid().bounds());
  return out;
}

// Every cell file in the store decodes and is bound to its own position.
::testing::AssertionResult stored_cells_sound(const std::shared_ptr<Env>& env, const Graph& g) {
  for (const GraphNode& n : g.nodes()) {
    const auto array = ZarrArray::open(env, layout::array(n.hash), n.hash);
    const CellGrid& grid = array->grid();
    for (int64_t c = 0; c < grid.num_cells(); ++c) {
      const CellIndex cell = grid.cell_at(c);
      try {
        if (!array->read(cell))
          return ::testing::AssertionFailure() << n.def.id << " cell " << cell.str() << " missing";
      } catch (const Error& e) {
        return ::testing::AssertionFailure() << n.def.id << ": " << e.what();
      }
    }
  }
  return ::testing::AssertionSuccess();
}

struct Case {
  MemoryEnv::Fault fault;
  Durability durability;
  bool power_cut;  // crashes only
  const char* name;
};

TEST(StoreFaultMatrix, EveryWriteStepFailedOrCrashedEndsBitIdenticalAfterARerun) {
  // The reference, and how many write steps a clean cold run takes.
  std::map<std::string, CellBuffer> reference;
  int64_t steps = 0;
  {
    auto env = fresh_env();
    const Graph g = build(env, Durability::kProcess);
    materialize(g);
    steps = env->steps();
    reference = read_all(g);
  }
  ASSERT_GT(steps, 20);

  const Case cases[] = {
      {MemoryEnv::Fault::kNoSpace, Durability::kProcess, false, "ENOSPC"},
      {MemoryEnv::Fault::kIoError, Durability::kProcess, false, "EIO"},
      {MemoryEnv::Fault::kShortWrite, Durability::kProcess, false, "short write"},
      {MemoryEnv::Fault::kCrash, Durability::kProcess, false, "crash"},
      {MemoryEnv::Fault::kCrash, Durability::kProcess, true, "power cut, default policy"},
      {MemoryEnv::Fault::kCrash, Durability::kPowerCut, true, "power cut, power-cut policy"},
  };
  int64_t ran = 0;
  for (const Case& c : cases) {
    // The power-cut policy adds sync steps: count its own clean run.
    int64_t case_steps = steps;
    if (c.durability == Durability::kPowerCut) {
      auto env = fresh_env();
      materialize(build(env, c.durability));
      case_steps = env->steps();
    }
    for (int64_t step = 0; step < case_steps; ++step) {
      SCOPED_TRACE(std::string(c.name) + " at write step " + std::to_string(step));
      auto env = fresh_env();
      env->inject(step, c.fault);
      bool failed = false;
      try {
        materialize(build(env, c.durability));
      } catch (const Error&) {
        failed = true;
      }
      if (c.fault == MemoryEnv::Fault::kShortWrite) {
        // A lying disk: the run cannot know. The damage must be caught on read.
      } else {
        EXPECT_TRUE(failed) << "the fault was swallowed: the run reported success";
      }
      if (env->crashed()) env->restart(c.power_cut);
      // `cellflow cache verify --repair` (what a user runs after a failure)
      // leaves a cache that verifies clean; the next run ("a new process")
      // recomputes what is missing, and the result is the clean run's, bit for bit.
      if (env->stat(std::string(layout::kFormatFile)).kind != EntryKind::kMissing) {
        VerifyOptions repair;
        repair.repair = true;
        repair.temp_age = std::chrono::seconds(0);  // the writer is dead: its temporaries are stale
        repair.definition_hash = definition_hash;
        ASSERT_NO_THROW(verify_cache(env, repair));
        VerifyOptions check;
        check.definition_hash = definition_hash;
        const VerifyReport after = verify_cache(env, check);
        ASSERT_TRUE(after.clean())
            << (after.damaged.empty()
                    ? std::string()
                    : after.damaged.front().file.string() + ": " + after.damaged.front().reason);
      }
      std::map<std::string, CellBuffer> data;
      const Graph again = build(env, c.durability);
      ASSERT_NO_THROW(materialize(again));
      ASSERT_NO_THROW(data = read_all(again));
      for (const auto& [id, buf] : reference) ASSERT_TRUE(test::same_bytes(buf, data.at(id))) << id;
      ASSERT_TRUE(stored_cells_sound(env, again));
      // The output is marked complete again (an intermediate whose damaged cell
      // repair removed is refilled when read, as read_all did, not re-marked).
      EXPECT_TRUE(again.cache()->is_complete(again.node("mask").hash));
      ++ran;
    }
  }
  EXPECT_GT(ran, 6 * 20);
}

TEST(StoreFaultMatrix, PlantedEntriesAreDamageNeverFollowed) {
  // A link, a folder, a FIFO where a cell file belongs: each is reported as
  // damage, removed, and the cell recomputed; nothing is read through it.
  std::map<std::string, CellBuffer> reference;
  {
    auto env = fresh_env();
    const Graph g = build(env, Durability::kProcess);
    materialize(g);
    reference = read_all(g);
  }
  for (const EntryKind kind : {EntryKind::kSymlink, EntryKind::kFolder, EntryKind::kOther}) {
    SCOPED_TRACE(entry_kind_name(kind));
    auto env = fresh_env();
    {
      const Graph g = build(env, Durability::kProcess);
      materialize(g);
    }
    const Graph g = build(env, Durability::kProcess);
    const std::string hash = g.node("smooth").hash;
    const std::string cell = layout::cell(layout::array(hash), CellIndex{1, 0, 1});
    env->plant(cell, kind, "/etc/passwd");
    if (kind == EntryKind::kFolder) env->plant(cell + "/inside", EntryKind::kFile, "x");
    EXPECT_THROW(ZarrArray::open(env, layout::array(hash), hash)->read(CellIndex{1, 0, 1}),
                 CorruptionError);
    const auto data = read_all(g);
    for (const auto& [id, buf] : reference) EXPECT_TRUE(test::same_bytes(buf, data.at(id))) << id;
    EXPECT_EQ(env->stat(cell).kind, EntryKind::kFile) << "recomputed into a real file";
  }
}

}  // namespace
}  // namespace cellflow

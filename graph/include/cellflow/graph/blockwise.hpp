// Blockwise tasks in daisy's model and vocabulary: a user function processes a
// volume block by block; each block reads its `read_roi` and writes its
// `write_roi` (the context is their difference); blocks are the first block
// shifted over the total ROI by multiples of the write ROI's shape.
// run_blockwise() runs the blocks of one or more tasks on the scheduler that
// also runs graph cells (scheduler.hpp: one retry, timeout and cancellation
// implementation), with conflict-free scheduling, done-checks, retries,
// cooperative timeouts, per-worker init and upstream tasks, and reports what
// happened to every block.
// Thread-safety: process() and check() are called concurrently on different
// blocks and must be thread-safe; tasks must not change during a run.
// Several run_blockwise() calls may run at once.
//
// Graph nodes follow the same model: a node's cell is a block whose write_roi
// is the cell's box and whose read_roi, per input, is
// NodeKernel::input_region(input, cell box) (the halo is the context, clipped
// at the image border like fit "shrink"); the executor's "a cell waits for the
// input cells its input_region touches" is run_blockwise's "a block waits for
// the upstream blocks whose write_roi meets its read_roi". Cells of one node
// never conflict (a node writes only its own array), so node cells behave like
// a task with read_write_conflict = false.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "cellflow/cache/box.hpp"
#include "cellflow/cache/dims.hpp"

namespace cellflow {

/// daisy's Roi: an offset and a shape in voxels (here: a half-open Box).
using Roi = Box;

/// How blocks are placed where shifting by the write ROI's shape does not tile
/// the total ROI. Here `total_roi` is what all blocks may read; the total write
/// ROI is total_roi shrunk by the context. Blocks are placed at
/// total_roi.begin + k * write_shape (k >= 0 per axis), in daisy's diagrams:
///
///     |---------------------------|     total ROI
///     |rrrr|wwwwww|rrrr|                block 1
///            |rrrr|wwwwww|rrrr|         block 2
///
/// kValid:    only blocks whose read ROI lies inside the total ROI (their
///            write ROI inside the total write ROI); the remainder at the upper
///            end is not processed.
/// kOverhang: also the blocks whose write ROI begins inside the total write
///            ROI, although their ROIs leave the total ROI (the process
///            function must guard its accesses).
/// kShrink:   like kOverhang, but the boundary blocks' write ROI is clipped to
///            the total write ROI and their read ROI to the total ROI, which
///            keeps the context.
///
/// Example (1-D): total [0,30), read [0,14), write [4,10): context 4 and 4,
/// total write ROI [4,26); blocks (read / write):
///   valid:    [0,14)/[4,10)  [6,20)/[10,16)  [12,26)/[16,22)
///   overhang: those and [18,32)/[22,28)
///   shrink:   those three and [18,30)/[22,26)
enum class Fit { kValid, kOverhang, kShrink };

/// "valid", "overhang" or "shrink".
std::string_view fit_name(Fit fit);
/// The inverse of fit_name; throws InvalidArgument naming the accepted values.
Fit parse_fit(std::string_view name);

/// One block of a task.
struct Block {
  /// The linear index of `index` in the task's grid of blocks (last axis
  /// fastest); unique within the task.
  int64_t id = 0;
  Box read_roi;
  Box write_roi;
  /// The block's position in the task's grid of blocks: before shrinking,
  /// write_roi.begin = total write ROI begin + index * write shape.
  Dims index;
};

struct BlockwiseTask {
  /// Unique among the tasks of a run; names the task in reports and errors.
  std::string name;
  /// Everything the blocks may read (daisy's total_roi).
  Box total_roi;
  /// The first block's read and write ROI, placed at total_roi.begin (only
  /// their shapes and relative offset matter). REQUIRES: read_roi contains
  /// write_roi; write_roi not empty.
  Box read_roi;
  Box write_roi;
  /// Processes one block; throws to fail the attempt. May call
  /// check_cancelled() (cellflow/graph/cancel.hpp) to honour the timeout.
  std::function<void(const Block&)> process;
  /// Optional: true if the block is already done. Called before a block runs
  /// (true: the block is skipped) and, unless post_check is set, after
  /// process() returns (false: the attempt failed).
  std::function<bool(const Block&)> check;
  /// Optional: daisy's second check function, asked after process() returns
  /// instead of `check` (false: the attempt failed). Lets a cheap pre-check
  /// ("is there a done marker?") pair with a thorough post-check ("is the
  /// output sound?").
  std::function<bool(const Block&)> post_check;
  /// Optional: called once in each worker thread before the first block of
  /// this task it processes (daisy's per-worker init: open a database
  /// connection, load a model). A throwing init fails that block's attempt and
  /// is called again before the thread's next block.
  std::function<void()> init_worker;
  Fit fit = Fit::kValid;
  /// True: no block runs while another block whose write ROI meets its read
  /// ROI (or whose read ROI meets its write ROI) runs. False: all blocks of the
  /// task may run at once.
  bool read_write_conflict = true;
  /// Attempts after the first failing one; then the block has failed.
  int max_retries = 2;
  /// Time limit per attempt in seconds, 0 = none. Cooperative: process()
  /// sees it through check_cancelled(); an attempt that returns after the
  /// deadline counts as failed.
  double timeout_seconds = 0;
  /// Blocks of this task running at once; 0 = as many as the arena has
  /// threads. The arena has max(num_workers) threads, or all cores when a task
  /// says 0; TBB never runs more threads than the machine has cores.
  int num_workers = 0;
  /// Tasks whose output this task reads: a block waits for every upstream
  /// block whose write ROI meets its read ROI, and is orphaned if one of them
  /// failed or was orphaned. Upstream tasks take part in the run even when
  /// not listed there.
  std::vector<const BlockwiseTask*> upstream;
};

/// A block that failed all its attempts.
struct BlockFailure {
  Block block;
  int attempts = 0;
  std::string error;  // the last attempt's cause
};

struct TaskReport {
  std::string name;
  int64_t blocks = 0;                  // enumerated blocks
  int64_t done = 0;                    // processed by this run (and confirmed by check, if given)
  int64_t skipped = 0;                 // check() said done before they ran
  int64_t failed = 0;                  // failed every attempt
  int64_t orphaned = 0;                // not run: a block they wait for failed or was orphaned
  int64_t retries = 0;                 // failed attempts that were retried
  std::vector<BlockFailure> failures;  // sorted by block id
  bool ok() const { return failed == 0 && orphaned == 0; }
};

struct BlockwiseReport {
  std::vector<TaskReport> tasks;  // upstream tasks before the tasks reading them
  double wall_seconds = 0;
  /// True when no block failed or was orphaned.
  bool ok() const;
  /// The report of task `name`; throws InvalidArgument if there is none.
  const TaskReport& task(std::string_view name) const;
  /// One line per task: "<name>: 10 blocks, 7 done, 1 skipped, 1 failed, 1 orphaned".
  std::string summary() const;
};

/// The blocks of `task` in id order, placed per its fit mode. Throws
/// InvalidArgument (naming the task and field) for inconsistent ROIs.
std::vector<Block> enumerate_blocks(const BlockwiseTask& task);

/// Runs `tasks` and the tasks upstream of them until every block is done,
/// skipped, failed or orphaned; never throws for a failing block (see the
/// report), only InvalidArgument for invalid tasks (before anything runs).
///
/// Scheduling is a dependency graph executed dynamically, not in global waves:
/// a block starts as soon as the blocks it waits for have finished. With
/// read_write_conflict, blocks are coloured like daisy's levels (a
/// checkerboard whose same-colour blocks are at least write shape + context
/// apart, so they never conflict) and of every conflicting pair the block of
/// the lower colour (then the lower id) runs first and the other waits for it;
/// since every conflicting pair is ordered, no two conflicting blocks ever run
/// at the same time. As in daisy, a block waiting for a failed block of its own
/// task is orphaned (what it reads was not written).
BlockwiseReport run_blockwise(const std::vector<const BlockwiseTask*>& tasks);
BlockwiseReport run_blockwise(const BlockwiseTask& task);

}  // namespace cellflow

#include "blockwise_command.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/graph/blockwise.hpp"
#include "cellflow/graph/mpi.hpp"
#include "cellflow/graph/suggest.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/store/env.hpp"
#include "cellflow/store/layout.hpp"
#include "cellflow/store/wait_lock.hpp"
#include "commands.hpp"
#include "subprocess.hpp"

namespace cellflow::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* kWorkerDone = "cellflow-blockwise-worker: done";

/// An input of the process op: a Zarr array or a node of a graph JSON.
struct InputSpec {
  std::string name;
  fs::path zarr;  // or
  fs::path graph;
  std::string node;
};

/// How a block is known to be done: "output" (its chunk of the output
/// exists), "none" (never), "command" (a program asked about the block).
struct CheckSpec {
  std::string kind;  // "" = not given
  std::vector<std::string> command;
};

/// A task file, parsed and checked field by field.
struct TaskSpec {
  std::string file;
  fs::path dir;  // relative paths are taken from here
  std::string name = "blockwise";
  std::vector<InputSpec> inputs;
  std::optional<Box> total_roi;
  Box read_roi, write_roi;  // relative to the block's origin
  Fit fit = Fit::kValid;
  bool read_write_conflict = true;
  int num_workers = 1;
  bool processes = true;
  int max_retries = 2;
  double timeout = 0;
  std::string op;
  Value params = Value::object();
  std::vector<std::string> op_inputs;  // names, in the op's order
  fs::path output;
  CheckSpec check{"output", {}};
  CheckSpec post_check;                   // "": the check is asked after a block too
  std::vector<std::string> init_command;  // run once per worker before its first block
};

[[noreturn]] void field_error(const TaskSpec& s, std::string_view field, std::string_view what) {
  throw UsageError(fmt::format("{}: field \"{}\" {}", s.file, field, what));
}

// {"command": [PROGRAM, ARGS...]}
std::vector<std::string> command_of(const TaskSpec& s, const Value& v, const std::string& field) {
  if (!v.is_object()) field_error(s, field, "must be {\"command\": [PROGRAM, ARGS...]}");
  for (const auto& [key, value] : v.as_object())
    if (key != "command") field_error(s, field + "." + key, "is not a field (only \"command\")");
  const Value* cmd = v.find("command");
  if (cmd == nullptr || !cmd->is_array())
    field_error(s, field + ".command", "is required: a list of strings");
  std::vector<std::string> out;
  for (const Value& x : cmd->as_array()) {
    if (!x.is_string()) field_error(s, field + ".command", "must be a list of strings");
    out.push_back(x.as_string());
  }
  if (out.empty() || out.front().empty()) field_error(s, field + ".command", "must name a program");
  return out;
}

// "output", "none" or {"command": [...]}
CheckSpec check_of(const TaskSpec& s, const Value& v, const std::string& field) {
  if (v.is_object()) return CheckSpec{"command", command_of(s, v, field)};
  if (!v.is_string() || (v.as_string() != "output" && v.as_string() != "none"))
    field_error(s, field,
                fmt::format("must be \"output\", \"none\" or {{\"command\": [...]}} (got {})",
                            to_json_compact(v)));
  return CheckSpec{v.as_string(), {}};
}

void check_keys(const TaskSpec& s, const Value& object, std::string_view where,
                const std::vector<std::string>& known) {
  for (const auto& [key, value] : object.as_object()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      const std::string field = where.empty() ? key : fmt::format("{}.{}", where, key);
      field_error(s, field, fmt::format("is not a task field{}", did_you_mean(key, known)));
    }
  }
}

const Value* member(const TaskSpec& s, const Value& object, std::string_view key, Value::Kind kind,
                    std::string_view field, bool required = false) {
  const Value* v = object.find(key);
  if (v == nullptr || v->is_null()) {
    if (required) field_error(s, field, "is required");
    return nullptr;
  }
  const bool ok = v->kind() == kind || (kind == Value::Kind::kFloat && v->is_number());
  if (!ok) {
    const char* want = kind == Value::Kind::kString   ? "string"
                       : kind == Value::Kind::kObject ? "JSON object"
                       : kind == Value::Kind::kArray  ? "list"
                       : kind == Value::Kind::kBool   ? "true or false"
                       : kind == Value::Kind::kInt    ? "integer"
                                                      : "number";
    field_error(s, field, fmt::format("must be a {} (got a {})", want, v->kind_name()));
  }
  return v;
}

Dims dims_of(const TaskSpec& s, const Value& v, std::string_view field) {
  if (!v.is_array() || v.as_array().empty())
    field_error(s, field, "must be a non-empty list of integers");
  std::vector<int64_t> out;
  for (const Value& x : v.as_array()) {
    if (!x.is_int()) field_error(s, field, "must be a non-empty list of integers");
    out.push_back(x.as_int());
  }
  return Dims::from(out);
}

/// {"offset": [...], "shape": [...]}, as daisy's Roi.
Box roi_of(const TaskSpec& s, const Value& v, std::string_view field) {
  if (!v.is_object())
    field_error(s, field, "must be an object {\"offset\": [...], \"shape\": [...]}");
  check_keys(s, v, field, {"offset", "shape"});
  const Value* shape_v = v.find("shape");
  if (shape_v == nullptr) field_error(s, fmt::format("{}.shape", field), "is required");
  const Dims shape = dims_of(s, *shape_v, fmt::format("{}.shape", field));
  for (int64_t x : shape)
    if (x <= 0) field_error(s, fmt::format("{}.shape", field), "must be positive on every axis");
  Dims offset(shape.rank(), 0);
  if (const Value* o = v.find("offset")) offset = dims_of(s, *o, fmt::format("{}.offset", field));
  if (offset.rank() != shape.rank())
    field_error(s, fmt::format("{}.offset", field), "must have one entry per axis of its shape");
  Dims end = offset;
  for (int d = 0; d < end.rank(); ++d) end[d] += shape[d];
  return Box(offset, end);
}

Value roi_json(const Box& box) {
  Value v = Value::object();
  v.set("offset", Value::list(box.begin().to_vector()));
  v.set("shape", Value::list(box.shape().to_vector()));
  return v;
}

fs::path path_of(const TaskSpec& s, const std::string& text) {
  const fs::path p(text);
  return (p.is_absolute() ? p : s.dir / p).lexically_normal();
}

TaskSpec parse_task(const std::string& path) {
  TaskSpec s;
  s.file = path;
  s.dir = fs::absolute(fs::path(path)).parent_path();
  std::ifstream in(path);
  if (!in) throw UsageError(fmt::format("{}: cannot read the task file", path));
  std::stringstream text;
  text << in.rdbuf();
  Value root;
  try {
    root = parse_json(text.str(), path);
  } catch (const std::exception& e) {
    throw UsageError(e.what());
  }
  if (!root.is_object()) throw UsageError(fmt::format("{}: a task is a JSON object", path));
  using K = Value::Kind;
  check_keys(s, root, "",
             {"name", "inputs", "total_roi", "read_roi", "write_roi", "fit", "read_write_conflict",
              "num_workers", "worker_processes", "max_retries", "timeout", "process", "output",
              "check", "post_check", "init"});
  if (const Value* v = member(s, root, "name", K::kString, "name")) s.name = v->as_string();

  const Value* inputs = member(s, root, "inputs", K::kObject, "inputs", true);
  for (const auto& [name, src] : inputs->as_object()) {
    const std::string field = "inputs." + name;
    if (!src.is_object())
      field_error(s, field, "must be {\"zarr\": PATH} or {\"graph\": PATH, \"node\": ID}");
    check_keys(s, src, field, {"zarr", "graph", "node"});
    InputSpec in_spec{name, {}, {}, {}};
    if (const Value* z = member(s, src, "zarr", K::kString, field + ".zarr")) {
      in_spec.zarr = path_of(s, z->as_string());
      if (src.find("graph") != nullptr || src.find("node") != nullptr)
        field_error(s, field, "takes either \"zarr\" or \"graph\" and \"node\"");
    } else {
      in_spec.graph =
          path_of(s, member(s, src, "graph", K::kString, field + ".graph", true)->as_string());
      in_spec.node = member(s, src, "node", K::kString, field + ".node", true)->as_string();
    }
    s.inputs.push_back(std::move(in_spec));
  }
  if (s.inputs.empty()) field_error(s, "inputs", "must name at least one input");

  if (const Value* v = root.find("total_roi")) s.total_roi = roi_of(s, *v, "total_roi");
  s.read_roi = roi_of(s, *member(s, root, "read_roi", K::kObject, "read_roi", true), "read_roi");
  s.write_roi =
      roi_of(s, *member(s, root, "write_roi", K::kObject, "write_roi", true), "write_roi");
  if (s.write_roi.rank() != s.read_roi.rank())
    field_error(s, "write_roi", "must have the rank of read_roi");
  if (!s.read_roi.contains(s.write_roi))
    field_error(s, "write_roi",
                fmt::format("{} must lie inside read_roi {}", s.write_roi.str(), s.read_roi.str()));
  if (s.total_roi && s.total_roi->rank() != s.read_roi.rank())
    field_error(s, "total_roi", "must have the rank of read_roi");
  if (const Value* v = member(s, root, "fit", K::kString, "fit")) {
    try {
      s.fit = parse_fit(v->as_string());
    } catch (const std::exception& e) {
      field_error(s, "fit", e.what());
    }
  }
  if (const Value* v = member(s, root, "read_write_conflict", K::kBool, "read_write_conflict"))
    s.read_write_conflict = v->as_bool();
  if (const Value* v = member(s, root, "num_workers", K::kInt, "num_workers")) {
    if (v->as_int() < 1 || v->as_int() > 4096) field_error(s, "num_workers", "must be 1..4096");
    s.num_workers = static_cast<int>(v->as_int());
  }
  if (const Value* v = member(s, root, "worker_processes", K::kBool, "worker_processes"))
    s.processes = v->as_bool();
  if (const Value* v = member(s, root, "max_retries", K::kInt, "max_retries")) {
    if (v->as_int() < 0 || v->as_int() > 1000) field_error(s, "max_retries", "must be 0..1000");
    s.max_retries = static_cast<int>(v->as_int());
  }
  if (const Value* v = member(s, root, "timeout", K::kFloat, "timeout")) {
    if (!(v->as_double() >= 0)) field_error(s, "timeout", "must be >= 0 seconds (0 = none)");
    s.timeout = v->as_double();
  }

  const Value* process = member(s, root, "process", K::kObject, "process", true);
  check_keys(s, *process, "process", {"op", "params", "inputs"});
  s.op = member(s, *process, "op", K::kString, "process.op", true)->as_string();
  if (const Value* v = member(s, *process, "params", K::kObject, "process.params")) s.params = *v;
  if (const Value* v = member(s, *process, "inputs", K::kArray, "process.inputs")) {
    for (const Value& x : v->as_array()) {
      if (!x.is_string()) field_error(s, "process.inputs", "must be a list of input names");
      const bool known = std::any_of(s.inputs.begin(), s.inputs.end(),
                                     [&](const InputSpec& i) { return i.name == x.as_string(); });
      if (!known)
        field_error(s, "process.inputs",
                    fmt::format("names \"{}\", which is not in \"inputs\"", x.as_string()));
      s.op_inputs.push_back(x.as_string());
    }
  } else {
    if (s.inputs.size() > 1)
      field_error(s, "process.inputs", "is required with more than one input (the op's order)");
    s.op_inputs.push_back(s.inputs.front().name);
  }

  const Value* output = member(s, root, "output", K::kObject, "output", true);
  check_keys(s, *output, "output", {"zarr"});
  s.output = path_of(s, member(s, *output, "zarr", K::kString, "output.zarr", true)->as_string());
  if (const Value* v = root.find("check")) s.check = check_of(s, *v, "check");
  if (const Value* v = root.find("post_check")) {
    s.post_check = check_of(s, *v, "post_check");
    if (s.post_check.kind == "none") field_error(s, "post_check", "cannot be \"none\"");
  }
  if (const Value* v = root.find("init")) s.init_command = command_of(s, *v, "init");
  return s;
}

// Per block, what became of it, merged over ranks by maximum: a block one rank
// processed is done whatever the others saw.
enum BlockState : int { kUntouched = 0, kSkipped = 1, kFailed = 2, kProcessed = 3 };

/// A task with its inputs opened, its op bound and its output created.
struct LoadedTask {
  TaskSpec spec;
  std::vector<Graph> graphs;
  std::vector<std::shared_ptr<CachedCellImage>> images;  // per op input
  std::vector<ImageInfo> infos;
  std::unique_ptr<NodeKernel> kernel;
  BlockwiseTask task;
  Box total_write;  // what the output array covers
  std::shared_ptr<ZarrArray> out;
};

/// What input `i` of the op needs for `block`; throws UsageError (naming
/// the field) when that is more than the block's read ROI.
Box needed_region(const LoadedTask& t, const Block& block, size_t i) {
  const Box out_box = block.write_roi.intersect(t.total_write);
  const Box need = t.kernel->input_region(i, out_box, t.infos[i]);
  if (!block.read_roi.contains(need))
    field_error(
        t.spec, "read_roi",
        fmt::format("is too small: op \"{}\" needs {} of input \"{}\" for block {}, "
                    "whose read ROI is {} (make the context larger)",
                    t.spec.op, need.str(), t.spec.op_inputs[i], block.id, block.read_roi.str()));
  return need;
}

/// `check_blocks`: check every block's read ROI against the op's needs (the
/// parent does; a worker checks only its block).
std::unique_ptr<LoadedTask> load_task(const std::string& path,
                                      const std::optional<std::string>& cache, bool check_blocks) {
  auto t = std::make_unique<LoadedTask>();
  t->spec = parse_task(path);
  const TaskSpec& s = t->spec;
  for (const std::string& name : s.op_inputs) {
    const InputSpec& in = *std::find_if(s.inputs.begin(), s.inputs.end(),
                                        [&](const InputSpec& i) { return i.name == name; });
    const std::string field = "inputs." + name;
    try {
      if (!in.zarr.empty()) {
        GraphDef def;
        Value params = Value::object();
        params.set("path", in.zarr.string());
        def.add(name, "read.zarr", {}, std::move(params));
        t->graphs.push_back(Graph::build(std::move(def), nodes::builtin_registry()));
        t->images.push_back(t->graphs.back().image(name));
        t->infos.push_back(t->graphs.back().node(name).info);
      } else {
        t->graphs.push_back(load_cli_graph(in.graph.string(), cache_root_of(cache)));
        const Graph& g = t->graphs.back();
        t->images.push_back(g.image(in.node));
        t->infos.push_back(g.node(in.node).info);
      }
    } catch (const UsageError&) {
      throw;
    } catch (const std::exception& e) {
      field_error(s, field, fmt::format("cannot be opened: {}", e.what()));
    }
  }

  const std::shared_ptr<const Op> op = nodes::builtin_registry().find(s.op);
  if (!op) {
    std::vector<std::string> names;
    for (const auto& o : nodes::builtin_registry().list()) names.emplace_back(o->name());
    field_error(s, "process.op",
                fmt::format("names an unknown op \"{}\"{} (see 'cellflow ops'; plugins with "
                            "--plugin)",
                            s.op, did_you_mean(s.op, names)));
  }
  const int n = static_cast<int>(t->infos.size());
  if (n < op->min_inputs() || n > op->max_inputs())
    field_error(s, "process.inputs",
                fmt::format("gives {} inputs; op \"{}\" takes {}..{}", n, s.op, op->min_inputs(),
                            op->max_inputs()));
  try {
    const Params params = validate_params(op->params(), s.params, s.dir);
    t->kernel = op->bind(params, t->infos);
  } catch (const std::exception& e) {
    field_error(s, "process.params", e.what());
  }
  const ImageInfo& out_info = t->kernel->output();
  if (out_info.kind != OutputKind::kImage)
    field_error(s, "process.op", "must produce an image, not a table");
  if (!(out_info.shape == t->infos.front().shape))
    field_error(s, "process.op",
                fmt::format("must keep the shape of its first input {} (it makes {})",
                            t->infos.front().shape.str(), out_info.shape.str()));
  const Box extent = Box::from_shape(out_info.shape);
  const Box total = s.total_roi.value_or(extent);
  if (total.rank() != s.read_roi.rank())
    field_error(s, "read_roi", fmt::format("must have the rank of the inputs ({})", total.rank()));
  if (!extent.contains(total))
    field_error(s, "total_roi",
                fmt::format("{} must lie inside the inputs' extent {}", total.str(), extent.str()));

  BlockwiseTask& task = t->task;
  task.name = s.name;
  task.total_roi = total;
  task.read_roi = s.read_roi.translate(total.begin());
  task.write_roi = s.write_roi.translate(total.begin());
  task.fit = s.fit;
  task.read_write_conflict = s.read_write_conflict;
  task.max_retries = s.max_retries;
  task.timeout_seconds = s.timeout;
  task.num_workers = s.num_workers;
  // The total write ROI: the total ROI less the context.
  Dims begin = total.begin(), end = total.end();
  for (int d = 0; d < total.rank(); ++d) {
    begin[d] += s.write_roi.begin()[d] - s.read_roi.begin()[d];
    end[d] -= s.read_roi.end()[d] - s.write_roi.end()[d];
    if (end[d] <= begin[d])
      field_error(s, "total_roi", "is smaller than one block's context on some axis");
  }
  t->total_write = Box(begin, end);
  // A context too small for the op is found before anything runs.
  if (check_blocks) {
    for (const Block& b : enumerate_blocks(task))
      for (size_t i = 0; i < t->images.size(); ++i) needed_region(*t, b, i);
  }
  try {
    t->out = ZarrArray::create(s.output, out_info.dtype,
                               CellGrid(t->total_write.shape(), s.write_roi.shape()));
  } catch (const std::exception& e) {
    field_error(s, "output.zarr", fmt::format("cannot be created: {}", e.what()));
  }
  return t;
}

/// Computes `block` with the process op and writes its chunk of the output.
void process_block(const LoadedTask& t, const Block& block) {
  const Box out_box = block.write_roi.intersect(t.total_write);
  std::vector<InputRegion> regions;
  for (size_t i = 0; i < t.images.size(); ++i) {
    const Box need = needed_region(t, block, i);
    regions.push_back(InputRegion{need, t.images[i]->read(need)});
  }
  CellBuffer out = CellBuffer::allocate(t.kernel->output().dtype, out_box.shape());
  t.kernel->compute(out_box, regions, out);
  t.out->write(block.index, out);
}

/// A block as the parent hands it to a worker: {"id", "index", "read_roi", "write_roi"}.
std::string block_arg(const Block& b) {
  Value v = Value::object();
  v.set("id", b.id);
  v.set("index", Value::list(b.index.to_vector()));
  v.set("read_roi", roi_json(b.read_roi));
  v.set("write_roi", roi_json(b.write_roi));
  return to_json_compact(v);
}

Block parse_block_arg(const TaskSpec& s, const std::string& text) {
  Block b;
  try {
    const Value v = parse_json(text, "--block");
    const auto get = [&](std::string_view key) -> const Value& {
      const Value* x = v.is_object() ? v.find(key) : nullptr;
      if (x == nullptr) throw InvalidArgument(fmt::format("no \"{}\"", key));
      return *x;
    };
    b.id = get("id").as_int();
    b.index = dims_of(s, get("index"), "--block index");
    b.read_roi = roi_of(s, get("read_roi"), "--block read_roi");
    b.write_roi = roi_of(s, get("write_roi"), "--block write_roi");
  } catch (const std::exception& e) {
    throw UsageError(
        fmt::format("blockwise-worker: --block {} is not a block: {}", text, e.what()));
  }
  return b;
}

Value report_json(const LoadedTask& t, const TaskReport& r, const std::vector<Block>& blocks,
                  const std::vector<int>& state, double wall) {
  Value v = Value::object();
  v.set("task", t.spec.name);
  v.set("blocks", r.blocks);
  v.set("done", r.done);
  v.set("skipped", r.skipped);
  v.set("failed", r.failed);
  v.set("orphaned", r.orphaned);
  v.set("retries", r.retries);
  v.set("wall_seconds", wall);
  Value failures = Value::array();
  for (const BlockFailure& f : r.failures) {
    Value x = Value::object();
    x.set("block", f.block.id);
    x.set("index", Value::list(f.block.index.to_vector()));
    x.set("read_roi", roi_json(f.block.read_roi));
    x.set("write_roi", roi_json(f.block.write_roi));
    x.set("attempts", f.attempts);
    x.set("error", f.error);
    failures.as_array().push_back(std::move(x));
  }
  Value done = Value::array(), skipped = Value::array(), orphaned = Value::array();
  for (const Block& b : blocks) {
    switch (state[static_cast<size_t>(b.id)]) {
      case kSkipped:
        skipped.as_array().emplace_back(b.id);
        break;
      case kProcessed:
        done.as_array().emplace_back(b.id);
        break;
      case kUntouched:  // never reached: a block it waits for failed
        orphaned.as_array().emplace_back(b.id);
        break;
      default:
        break;
    }
  }
  v.set("done_blocks", std::move(done));
  v.set("skipped_blocks", std::move(skipped));
  v.set("failed_blocks", std::move(failures));
  v.set("orphaned_blocks", std::move(orphaned));
  return v;
}

// Blocks shared by several processes (MPI ranks, on one machine or many,
// over one shared file system): each rank runs the whole task, but a block is
// processed only under an exclusive lock on byte <block id> of
// <output>/.cellflow-blocks.lock, and what became of it in this run is a
// marker under <output>/.cellflow-run/: done/<id>, or failed/<id> holding
// the error. A rank that gets the lock after another rank finished the block
// takes the other rank's result instead of processing it again; the lock of
// a rank that died is released by the kernel. Rank 0 clears the markers of
// earlier runs before the ranks start (a barrier).
class BlockClaims {
 public:
  BlockClaims(const fs::path& output, bool clear) : env_(posix_env(output)) {
    if (clear) env_->remove(layout::kBlockwiseRunFolder);
  }

  // Exclusive use of block `b`; waits while another rank has it (bounded by
  // the attempt's time limit).
  std::unique_ptr<EnvLock> claim(const Block& b) {
    return wait_lock(*env_, layout::kBlockwiseLockFile, b.id, LockMode::kExclusive, std::nullopt,
                     fmt::format("block {} (another rank is processing it)", b.id));
  }
  bool done_elsewhere(const Block& b) {
    return env_->stat(marker("done", b)).kind != EntryKind::kMissing;
  }
  std::optional<std::string> failure_elsewhere(const Block& b) {
    return env_->read(marker("failed", b));
  }
  void mark_done(const Block& b) {
    env_->write_atomic(marker("done", b), "", Durability::kProcess);
  }
  // Failed attempts at block `b` by any rank in this run; add_failed_attempt
  // returns the new count. Call under the claim.
  int failed_attempts(const Block& b) {
    const auto text = env_->read(marker("attempts", b));
    return text ? std::atoi(text->c_str()) : 0;
  }
  int add_failed_attempt(const Block& b) {
    const int n = failed_attempts(b) + 1;
    env_->write_atomic(marker("attempts", b), std::to_string(n), Durability::kProcess);
    return n;
  }
  void mark_failed(const Block& b, const std::string& error) {
    env_->write_atomic(marker("failed", b), error, Durability::kProcess);
  }

 private:
  static std::string marker(const char* what, const Block& b) {
    return fmt::format("{}/{}/{}", layout::kBlockwiseRunFolder, what, b.id);
  }
  std::shared_ptr<Env> env_;
};

// MPI: every rank learns what became of each block on any rank; the report
// is rebuilt from the merged states (a failure another rank saw is read from
// its marker).
void merge_over_ranks(BlockClaims& claims, const std::vector<Block>& blocks,
                      std::vector<int>& states, TaskReport& r) {
  mpi::max_over_ranks(states);
  std::vector<BlockFailure> failures;
  r.done = r.skipped = r.failed = r.orphaned = 0;
  for (const Block& b : blocks) {
    switch (states[static_cast<size_t>(b.id)]) {
      case kProcessed:
        ++r.done;
        break;
      case kSkipped:
        ++r.skipped;
        break;
      case kUntouched:
        ++r.orphaned;
        break;
      default: {
        ++r.failed;
        const auto mine = std::find_if(r.failures.begin(), r.failures.end(),
                                       [&](const BlockFailure& f) { return f.block.id == b.id; });
        // The error as the rank that failed it saw it.
        const auto why = claims.failure_elsewhere(b);
        BlockFailure f{b, mine != r.failures.end() ? mine->attempts : 0,
                       why                        ? *why
                       : mine != r.failures.end() ? mine->error
                                                  : "failed"};
        failures.push_back(std::move(f));
      }
    }
  }
  r.failures = std::move(failures);
}

}  // namespace

int blockwise_command(const BlockwiseArgs& args) {
  if (args.threads && args.workers)
    throw UsageError("--threads and --workers exclude each other (threads or worker processes)");
  const std::unique_ptr<LoadedTask> loaded = load_task(args.task_path, args.cache, true);
  LoadedTask& t = *loaded;
  BlockwiseTask& task = t.task;
  bool processes = t.spec.processes;
  if (args.threads) {
    processes = false;
    task.num_workers = *args.threads;
  }
  if (args.workers) {
    processes = true;
    task.num_workers = *args.workers;
  }
  if (args.timeout_seconds) task.timeout_seconds = *args.timeout_seconds;
  if (args.max_retries) task.max_retries = *args.max_retries;
  if (!processes && task.timeout_seconds > 0 && !args.quiet)
    log_warning(
        "blockwise: in threads the timeout is cooperative (the op must check for "
        "cancellation); worker processes are killed");

  // Under MPI the ranks share the blocks (BlockClaims); rank 0 reports.
  std::unique_ptr<BlockClaims> claims;
  bool lead = true;
  if (args.mpi || mpi::launched()) {
    if (!mpi::available()) throw UsageError("--mpi: this cellflow was built without MPI");
    lead = mpi::init().rank == 0;
    claims = std::make_unique<BlockClaims>(t.spec.output, lead);
    mpi::barrier();
  }

  // Worker processes: as many at once as asked, whatever the core count.
  std::unique_ptr<WorkerSlots> slots;
  if (processes) slots = std::make_unique<WorkerSlots>(task.num_workers);

  const std::vector<Block> blocks = enumerate_blocks(task);
  std::vector<std::atomic<int>> state(blocks.size());  // BlockState
  std::vector<std::atomic<int>> failed_attempts(blocks.size());
  std::atomic<int64_t> finished{0};
  std::mutex print_mu;
  // One line per block that finished, and one per failed attempt.
  const auto progress = [&](const Block& b, std::string_view what, bool finishes) {
    if (!args.progress) return;
    const int64_t k = finishes ? finished.fetch_add(1) + 1 : finished.load();
    std::lock_guard lock(print_mu);
    fmt::print(stderr, "[{}/{}] block {} {}: {}\n", k, blocks.size(), b.id, b.index.str(),
               terminal_text(what));
  };

  const std::string task_abs = fs::absolute(args.task_path).string();
  const std::string cache_abs = args.cache ? fs::absolute(*args.cache).string() : std::string();
  const double timeout = task.timeout_seconds;
  const auto process_here = [&](const Block& b) {
    if (!processes) {
      process_block(t, b);
      return;
    }
    std::vector<std::string> argv{"blockwise-worker", task_abs, "--block", block_arg(b)};
    if (!cache_abs.empty()) {
      argv.push_back("--cache");
      argv.push_back(cache_abs);
    }
    for (const std::string& p : args.plugins) {
      argv.push_back("--plugin");
      argv.push_back(fs::absolute(p).string());
    }
    const WorkerExit exit = run_worker_process(argv, timeout);
    forward_warnings(exit.output, fmt::format("block {}", b.id));
    if (exit.how != WorkerExit::How::kExited) throw NodeError(exit.describe(timeout));
    if (exit.code != 0)
      throw NodeError(fmt::format("{}: {}", exit.describe(timeout), worker_error(exit.output, {})));
    if (exit.output.find(kWorkerDone) == std::string::npos)
      throw NodeError("worker exited 0 without writing the block");
  };
  // A program asked about a block (check, post_check, init); exits 0 or 1.
  const auto run_command = [&](const std::vector<std::string>& command, const Block* b,
                               const char* what) {
    const auto list = [](const Dims& d) { return fmt::format("{}", fmt::join(d, ",")); };
    std::vector<std::string> env{fmt::format("CELLFLOW_TASK_DIR={}", t.spec.dir.string())};
    if (b != nullptr) {
      env.push_back(fmt::format("CELLFLOW_BLOCK_ID={}", b->id));
      env.push_back(fmt::format("CELLFLOW_BLOCK_INDEX={}", list(b->index)));
      env.push_back(fmt::format("CELLFLOW_BLOCK_READ_OFFSET={}", list(b->read_roi.begin())));
      env.push_back(fmt::format("CELLFLOW_BLOCK_READ_SHAPE={}", list(b->read_roi.shape())));
      env.push_back(fmt::format("CELLFLOW_BLOCK_WRITE_OFFSET={}", list(b->write_roi.begin())));
      env.push_back(fmt::format("CELLFLOW_BLOCK_WRITE_SHAPE={}", list(b->write_roi.shape())));
    }
    const WorkerExit exit = run_program(command, env, timeout);
    if (exit.how == WorkerExit::How::kExited &&
        (exit.code == 0 || (b != nullptr && exit.code == 1)))
      return exit.code == 0;
    std::string why = exit.describe(timeout);
    if (why.starts_with("worker ")) why.erase(0, 7);
    throw NodeError(fmt::format("{} command {}: {}: {}", what, command.front(), why,
                                worker_error(exit.output, {})));
  };
  const auto is_done = [&](const CheckSpec& c, const Block& b, const char* what) {
    return c.kind == "output" ? t.out->contains(b.index) : run_command(c.command, &b, what);
  };
  if (t.spec.check.kind != "none") {
    task.check = [&](const Block& b) {
      const bool present = is_done(t.spec.check, b, "check");
      if (present && state[static_cast<size_t>(b.id)] == kUntouched) {
        state[static_cast<size_t>(b.id)] = kSkipped;
        progress(b, "skipped (already done)", true);
      }
      return present;
    };
  }
  // Asked after a block: the post_check, else the check.
  const CheckSpec* after = !t.spec.post_check.kind.empty() ? &t.spec.post_check
                           : t.spec.check.kind != "none"   ? &t.spec.check
                                                           : nullptr;
  const char* after_name = after == &t.spec.post_check ? "post_check" : "check";
  const auto confirm = [&](const Block& b) {
    return after == nullptr || is_done(*after, b, after_name);
  };
  task.process = [&](const Block& b) {
    const auto i = static_cast<size_t>(b.id);
    std::unique_ptr<EnvLock> claim;
    bool elsewhere = false;
    try {
      if (claims) {
        // Under the claim: another rank's result, or process and confirm.
        claim = claims->claim(b);
        if (claims->done_elsewhere(b)) {
          state[i] = kProcessed;
          progress(b, "done (by another rank)", true);
          return;
        }
        if (const auto why = claims->failure_elsewhere(b)) {
          elsewhere = true;
          throw NodeError(fmt::format("failed on another rank: {}", *why));
        }
        if (claims->failed_attempts(b) > task.max_retries) {
          elsewhere = true;
          throw NodeError("failed: the ranks used up its attempts");
        }
      }
      process_here(b);
      if (claims && !confirm(b))
        throw NodeError(
            fmt::format("{}() says the block is not done after process() returned", after_name));
    } catch (const std::exception& e) {
      // The last attempt's failure finishes the block.
      // Under MPI the attempts are counted over all ranks.
      bool last = ++failed_attempts[i] > task.max_retries;
      if (claims && !elsewhere) {
        last = claims->add_failed_attempt(b) > task.max_retries;
        if (last) claims->mark_failed(b, e.what());
      }
      progress(b, fmt::format("{}: {}", last ? "failed" : "attempt failed", e.what()), last);
      throw;
    }
    if (claims) claims->mark_done(b);
    state[i] = kProcessed;
    progress(b, "done", true);
  };
  if (claims) {
    task.post_check = [](const Block&) { return true; };  // confirmed under the claim
  } else if (after != nullptr) {
    task.post_check = confirm;
  }
  if (!t.spec.init_command.empty())
    task.init_worker = [&] { run_command(t.spec.init_command, nullptr, "init"); };

  BlockwiseReport report = run_blockwise(task);
  TaskReport& r = report.tasks.front();
  std::vector<int> states;
  for (const auto& s : state) states.push_back(s.load());
  for (const BlockFailure& f : r.failures) states[static_cast<size_t>(f.block.id)] = kFailed;
  if (claims) merge_over_ranks(*claims, blocks, states, r);
  if (args.report_json && lead) {
    const std::string text = to_json(report_json(t, r, blocks, states, report.wall_seconds));
    if (*args.report_json == "-") {
      fmt::print("{}\n", text);
    } else {
      std::ofstream out(*args.report_json, std::ios::binary | std::ios::trunc);
      out << text << "\n";
      if (!out) throw IoError(fmt::format("cannot write {}", *args.report_json));
    }
  }
  if (!args.quiet && lead) {
    fmt::print(stderr, "{}", report.summary());
    for (const BlockFailure& f : r.failures)
      fmt::print(stderr, "  block {} {} failed after {} attempts: {}\n", f.block.id,
                 f.block.index.str(), f.attempts, terminal_text(f.error));
  }
  return report.ok() ? kExitOk : kExitFailed;
}

int blockwise_worker_command(const std::string& task_path, const std::string& block,
                             const std::optional<std::string>& cache) {
  watch_parent();
  const std::unique_ptr<LoadedTask> t = load_task(task_path, cache, false);
  process_block(*t, parse_block_arg(t->spec, block));
  fmt::print("{}\n", kWorkerDone);
  std::fflush(stdout);
  return kExitOk;
}

}  // namespace cellflow::cli

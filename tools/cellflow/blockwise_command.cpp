#include "blockwise_command.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/graph/blockwise.hpp"
#include "cellflow/graph/suggest.hpp"
#include "cellflow/nodes/builtin.hpp"
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
  std::string check = "output";  // "output", "none" or "command"
  std::vector<std::string> check_command;
};

[[noreturn]] void field_error(const TaskSpec& s, std::string_view field, std::string_view what) {
  throw UsageError(fmt::format("{}: field \"{}\" {}", s.file, field, what));
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
  check_keys(
      s, root, "",
      {"name", "inputs", "total_roi", "read_roi", "write_roi", "fit", "read_write_conflict",
       "num_workers", "worker_processes", "max_retries", "timeout", "process", "output", "check"});
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
  if (const Value* v = root.find("check"); v != nullptr && v->is_object()) {
    check_keys(s, *v, "check", {"command"});
    s.check = "command";
    const Value* cmd = member(s, *v, "command", K::kArray, "check.command", true);
    for (const Value& x : cmd->as_array()) {
      if (!x.is_string()) field_error(s, "check.command", "must be a list of strings");
      s.check_command.push_back(x.as_string());
    }
    if (s.check_command.empty() || s.check_command.front().empty())
      field_error(s, "check.command", "must name a program");
  } else if (v != nullptr) {
    if (!v->is_string() || (v->as_string() != "output" && v->as_string() != "none"))
      field_error(s, "check",
                  fmt::format("must be \"output\", \"none\" or {{\"command\": [...]}} (got {})",
                              to_json_compact(*v)));
    s.check = v->as_string();
  }
  return s;
}

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
  std::vector<bool> failed(blocks.size(), false);
  for (const BlockFailure& f : r.failures) {
    Value x = Value::object();
    x.set("block", f.block.id);
    x.set("index", Value::list(f.block.index.to_vector()));
    x.set("read_roi", roi_json(f.block.read_roi));
    x.set("write_roi", roi_json(f.block.write_roi));
    x.set("attempts", f.attempts);
    x.set("error", f.error);
    failures.as_array().push_back(std::move(x));
    failed[static_cast<size_t>(f.block.id)] = true;
  }
  // Per block: 1 skipped, 2 processed; failed from the report; the rest orphaned.
  Value done = Value::array(), skipped = Value::array(), orphaned = Value::array();
  for (const Block& b : blocks) {
    const size_t i = static_cast<size_t>(b.id);
    if (failed[i]) continue;
    if (state[i] == 1) {
      skipped.as_array().emplace_back(b.id);
    } else if (state[i] == 2) {
      done.as_array().emplace_back(b.id);
    } else {
      orphaned.as_array().emplace_back(b.id);
    }
  }
  v.set("done_blocks", std::move(done));
  v.set("skipped_blocks", std::move(skipped));
  v.set("failed_blocks", std::move(failures));
  v.set("orphaned_blocks", std::move(orphaned));
  return v;
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

  const std::vector<Block> blocks = enumerate_blocks(task);
  // Per block id: 0 untouched, 1 skipped by the check, 2 processed.
  std::vector<std::atomic<int>> state(blocks.size());
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
  task.process = [&](const Block& b) {
    try {
      if (!processes) {
        process_block(t, b);
      } else {
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
          throw NodeError(
              fmt::format("{}: {}", exit.describe(timeout), worker_error(exit.output, {})));
        if (exit.output.find(kWorkerDone) == std::string::npos)
          throw NodeError("worker exited 0 without writing the block");
      }
    } catch (const std::exception& e) {
      // The last attempt's failure finishes the block.
      const bool last = ++failed_attempts[static_cast<size_t>(b.id)] > task.max_retries;
      progress(b, fmt::format("{}: {}", last ? "failed" : "attempt failed", e.what()), last);
      throw;
    }
    state[static_cast<size_t>(b.id)] = 2;
    progress(b, "done", true);
  };
  const auto check_command = [&](const Block& b) {
    const auto list = [](const Dims& d) { return fmt::format("{}", fmt::join(d, ",")); };
    const WorkerExit exit =
        run_program(t.spec.check_command,
                    {fmt::format("CELLFLOW_TASK_DIR={}", t.spec.dir.string()),
                     fmt::format("CELLFLOW_BLOCK_ID={}", b.id),
                     fmt::format("CELLFLOW_BLOCK_INDEX={}", list(b.index)),
                     fmt::format("CELLFLOW_BLOCK_READ_OFFSET={}", list(b.read_roi.begin())),
                     fmt::format("CELLFLOW_BLOCK_READ_SHAPE={}", list(b.read_roi.shape())),
                     fmt::format("CELLFLOW_BLOCK_WRITE_OFFSET={}", list(b.write_roi.begin())),
                     fmt::format("CELLFLOW_BLOCK_WRITE_SHAPE={}", list(b.write_roi.shape()))},
                    timeout);
    if (exit.how == WorkerExit::How::kExited && (exit.code == 0 || exit.code == 1))
      return exit.code == 0;
    std::string why = exit.describe(timeout);
    if (why.starts_with("worker ")) why.erase(0, 7);
    throw NodeError(fmt::format("check command {}: {}: {}", t.spec.check_command.front(), why,
                                worker_error(exit.output, {})));
  };
  if (t.spec.check != "none") {
    task.check = [&](const Block& b) {
      const bool present = t.spec.check == "output" ? t.out->contains(b.index) : check_command(b);
      if (present && state[static_cast<size_t>(b.id)] == 0) {
        state[static_cast<size_t>(b.id)] = 1;
        progress(b, "skipped (already done)", true);
      }
      return present;
    };
  }

  const BlockwiseReport report = run_blockwise(task);
  const TaskReport& r = report.tasks.front();
  std::vector<int> states;
  for (const auto& s : state) states.push_back(s.load());
  if (args.report_json) {
    const std::string text = to_json(report_json(t, r, blocks, states, report.wall_seconds));
    if (*args.report_json == "-") {
      fmt::print("{}\n", text);
    } else {
      std::ofstream out(*args.report_json, std::ios::binary | std::ios::trunc);
      out << text << "\n";
      if (!out) throw IoError(fmt::format("cannot write {}", *args.report_json));
    }
  }
  if (!args.quiet) {
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

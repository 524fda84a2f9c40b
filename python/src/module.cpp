// _cellflow: the compiled half of the cellflow Python package (pybind11). It
// binds graphs (build, hashes, run, read), the op registry and plugins, Python
// ops and blockwise tasks; python/cellflow/*.py builds the user-facing API on
// top. Every call that may compute releases the GIL.
#include <fmt/format.h>
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <climits>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/memory_cache.hpp"
#include "cellflow/cache/node_use_lock.hpp"
#include "cellflow/graph/blockwise.hpp"
#include "cellflow/graph/cancel.hpp"
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/plugins/loader.hpp"
#include "common.hpp"
#include "py_op.hpp"

namespace fs = std::filesystem;

namespace cellflow::python {
namespace {

using Clock = std::chrono::steady_clock;

// ---- graph definitions --------------------------------------------------

GraphDef def_from_dict(const py::dict& d) {
  GraphDef def;
  if (d.contains("name") && !d["name"].is_none()) def.name = d["name"].cast<std::string>();
  if (d.contains("source")) def.source = d["source"].cast<std::string>();
  if (d.contains("base_dir")) def.base_dir = d["base_dir"].cast<std::string>();
  for (auto n : d["nodes"]) {
    auto nd = n.cast<py::dict>();
    NodeDef node;
    node.id = nd["id"].cast<std::string>();
    node.op = nd["op"].cast<std::string>();
    if (nd.contains("inputs"))
      for (auto i : nd["inputs"]) node.inputs.push_back(i.cast<std::string>());
    if (nd.contains("params")) node.params = to_value(nd["params"], "node " + node.id + " params");
    if (nd.contains("persist") && !nd["persist"].is_none()) {
      if (!py::isinstance<py::bool_>(nd["persist"]))
        throw InvalidArgument(
            fmt::format("node \"{}\": persist must be True, False or None", node.id));
      node.persist = nd["persist"].cast<bool>();
    }
    def.nodes.push_back(std::move(node));
  }
  if (d.contains("outputs"))
    for (auto o : d["outputs"]) def.outputs.push_back(o.cast<std::string>());
  return def;
}

py::dict dict_from_def(const GraphDef& def) {
  py::dict d;
  d["name"] = def.name;
  py::list nodes;
  for (const NodeDef& n : def.nodes) {
    py::dict nd;
    nd["id"] = n.id;
    nd["op"] = n.op;
    nd["inputs"] = py::cast(n.inputs);
    nd["params"] = from_value(n.params);
    if (n.persist) nd["persist"] = *n.persist;
    nodes.append(nd);
  }
  d["nodes"] = nodes;
  d["outputs"] = py::cast(def.outputs);
  d["source"] = def.source;
  d["base_dir"] = def.base_dir;
  return d;
}

// ---- ops -----------------------------------------------------------------

py::dict op_dict(const Op& op) {
  py::dict d;
  d["name"] = std::string(op.name());
  d["version"] = op.version();
  d["doc"] = std::string(op.doc());
  d["min_inputs"] = op.min_inputs();
  d["max_inputs"] = op.max_inputs() == INT_MAX ? -1 : op.max_inputs();
  py::list params;
  for (const ParamSpec& p : op.params()) {
    py::dict pd;
    pd["name"] = p.name;
    pd["type"] = std::string(param_type_name(p.type));
    pd["default"] = from_value(p.default_value);
    pd["doc"] = p.doc;
    pd["required"] = p.required;
    params.append(pd);
  }
  d["params"] = params;
  return d;
}

/// The op handle Python keeps for a decorated function.
struct PyOpHandle {
  std::shared_ptr<const PyOp> op;
};

PyOpHandle make_py_op(const py::dict& s) {
  PyOpSpec spec;
  spec.name = s["name"].cast<std::string>();
  spec.version = s["version"].cast<int>();
  spec.doc = s["doc"].cast<std::string>();
  for (auto p : s["params"]) {
    auto pd = p.cast<py::dict>();
    ParamSpec ps;
    ps.name = pd["name"].cast<std::string>();
    ps.type = parse_param_type(pd["type"].cast<std::string>());
    ps.default_value = to_value(pd["default"], "param " + ps.name);
    ps.doc = pd["doc"].cast<std::string>();
    ps.required = pd["required"].cast<bool>();
    spec.params.push_back(std::move(ps));
  }
  spec.min_inputs = s["min_inputs"].cast<int>();
  spec.max_inputs = s["max_inputs"].cast<int>();
  spec.max_retries = s["max_retries"].cast<int>();
  spec.timeout_seconds = s["timeout"].cast<double>();
  spec.bind = py::reinterpret_borrow<py::object>(s["bind"]);
  return PyOpHandle{std::make_shared<const PyOp>(std::move(spec))};
}

// ---- built graphs ----------------------------------------------------------

class BuiltGraph {
 public:
  /// `previous`: the graph this one replaces (after an edit in Python); the
  /// node images it used that this graph shares are taken over, so that their
  /// cells in memory survive the edit.
  BuiltGraph(const py::dict& def, std::optional<std::string> cache_root,
             const std::vector<PyOpHandle>& py_ops, bool strict_code, const BuiltGraph* previous) {
    GraphDef gd = def_from_dict(def);
    Registry registry;
    for (const auto& op : nodes::builtin_registry().list()) registry.add(op);
    for (const PyOpHandle& h : py_ops) registry.add(h.op);
    GraphOptions options;
    if (cache_root) options.cache_root = fs::absolute(*cache_root).lexically_normal();
    options.strict_code = strict_code;
    graph_ = std::make_unique<Graph>(Graph::build(std::move(gd), registry, std::move(options)));
    if (previous != nullptr && previous->graph_->cache_root() == graph_->cache_root()) {
      for (size_t i = 0; i < graph_->nodes().size(); ++i) {
        if (previous->used_.count(graph_->nodes()[i].hash) != 0) image(i);
      }
    }
  }

  /// The node's image; remembers that this graph used it.
  std::shared_ptr<CachedCellImage> image(size_t i) const {
    auto img = graph_->image(i);
    std::lock_guard lock(used_mu_);
    used_.insert(graph_->nodes()[i].hash);
    return img;
  }
  std::shared_ptr<CachedCellImage> image(const std::string& id) const {
    return image(graph_->index(id));
  }

  const Graph& graph() const { return *graph_; }

  py::list hashes() const {
    py::list l;
    for (const GraphNode& n : graph_->nodes()) l.append(py::make_tuple(n.def.id, n.hash));
    return l;
  }

  py::dict info(const std::string& id) const {
    const GraphNode& n = graph_->node(id);
    py::dict d;
    d["id"] = n.def.id;
    d["op"] = n.def.op;
    d["hash"] = n.hash;
    d["dtype"] = std::string(dtype_name(n.info.dtype));
    d["shape"] = dims_tuple(n.info.shape);
    d["cell_shape"] = dims_tuple(n.info.cell_shape);
    d["table"] = n.info.kind == OutputKind::kTable;
    d["labels"] = n.info.labels;
    const Space space = n.info.space.filled(n.info.shape.rank());
    d["spacing"] = py::tuple(py::cast(space.spacing));
    d["origin"] = py::tuple(py::cast(space.origin));
    d["axis_names"] = py::tuple(py::cast(space.axis_names));
    d["units"] = py::tuple(py::cast(space.units));
    d["inputs"] = py::cast(n.def.inputs);
    d["definition"] = from_value(n.definition);
    if (graph_->cache_root())
      d["path"] = (*graph_->cache_root() / n.hash).string();
    else
      d["path"] = py::none();
    return d;
  }

  py::array read(const std::string& id, const py::handle& begin, const py::handle& end) const {
    const size_t i = graph_->index(id);
    return read_box(i, Box(dims_from(begin, "begin"), dims_from(end, "end")));
  }

  /// node[key] when key is a box (a tuple of one step-1 slice per axis), the
  /// common case, without a round trip through Python; None otherwise (the
  /// package handles every other key).
  py::object getitem(const std::string& id, const py::handle& key) const {
    const size_t i = graph_->index(id);
    const Shape& shape = graph_->nodes()[i].info.shape;
    if (!PyTuple_Check(key.ptr()) || PyTuple_GET_SIZE(key.ptr()) != shape.rank()) return py::none();
    Dims begin(shape.rank());
    Dims end(shape.rank());
    for (int a = 0; a < shape.rank(); ++a) {
      PyObject* k = PyTuple_GET_ITEM(key.ptr(), a);
      if (!PySlice_Check(k) || reinterpret_cast<PySliceObject*>(k)->step != Py_None)
        return py::none();
      Py_ssize_t start = 0;
      Py_ssize_t stop = 0;
      Py_ssize_t step = 0;
      if (PySlice_Unpack(k, &start, &stop, &step) < 0) throw py::error_already_set();
      PySlice_AdjustIndices(shape[a], &start, &stop, step);
      begin[a] = start;
      end[a] = std::max(start, stop);
    }
    return read_box(i, Box(begin, end));
  }

  py::array read_box(size_t i, const Box& box) const {
    const GraphNode& n = graph_->nodes()[i];
    if (n.info.kind == OutputKind::kTable)
      throw InvalidArgument(fmt::format("node \"{}\" is a table: use .table()", n.def.id));
    if (box.rank() != n.info.shape.rank() || !Box::from_shape(n.info.shape).contains(box))
      throw py::index_error(fmt::format("region {} is not inside node \"{}\" of shape {}",
                                        box.str(), n.def.id, n.info.shape.str()));
    const auto image = this->image(i);
    // A pooled buffer (see owning_array), handed to numpy without a copy.
    CellBuffer buffer = CellBuffer::allocate(n.info.dtype, box.shape());
    if (box.empty()) return owning_array(std::move(buffer));
    void* ptr = buffer.mutable_data();
    // Cells already at hand: read on this thread (cheap). Else compute on a
    // helper thread, so that Ctrl-C is seen while cells compute.
    const CellGrid& grid = image->grid();
    bool ready = true;
    for_each_index(grid.cells_touching(box), [&](const CellIndex& c) {
      if (ready && !image->available(c)) ready = false;
    });
    if (ready) {
      py::gil_scoped_release release;
      image->read_into(box, ptr);
    } else {
      run_released([&] { image->read_into(box, ptr); }, {});
    }
    return owning_array(std::move(buffer));
  }

  /// One cell as a read-only array sharing the cached buffer (no copy).
  py::array cell(const std::string& id, const py::handle& index) const {
    const auto image = this->image(id);
    const CellIndex c = dims_from(index, "cell");
    CellBuffer b;
    {
      py::gil_scoped_release release;
      b = image->get(c);
    }
    return view_of(b);
  }

  py::tuple table(const std::string& id) const {
    Table t;
    image(id);
    run_released([&] { t = graph_->table(id); }, {});
    py::array_t<double> values(
        {static_cast<py::ssize_t>(t.num_rows()), static_cast<py::ssize_t>(t.num_columns())});
    auto* p = values.mutable_data();
    for (size_t r = 0; r < t.num_rows(); ++r) {
      const auto row = t.row(r);
      std::memcpy(p + r * t.num_columns(), row.data(), row.size() * sizeof(double));
    }
    return py::make_tuple(py::cast(t.columns()), values);
  }

  py::dict stats(const std::string& id) const {
    const CellImageStats s = image(id)->stats();
    py::dict d;
    d["computed"] = s.computed;
    d["loaded"] = s.loaded;
    d["memory_hits"] = s.memory_hits;
    d["corrupt"] = s.corrupt;
    return d;
  }

  py::dict run(const std::vector<std::string>& outputs, int threads, int max_retries,
               double timeout, const py::object& progress, int progress_interval_ms) const {
    if (max_retries < 0) throw InvalidArgument("max_retries must be >= 0");
    if (!(timeout >= 0)) throw InvalidArgument("timeout must be >= 0 seconds");
    if (threads < 0) throw InvalidArgument("threads must be >= 0");
    std::vector<size_t> targets;
    for (const std::string& id : outputs) targets.push_back(graph_->index(id));
    if (targets.empty()) targets = graph_->outputs();
    const auto& nodes = graph_->nodes();

    // Like `cellflow run`: mark every node the run may touch in use, so that a
    // concurrent `cellflow cache gc` leaves it alone.
    std::vector<NodeUseLock> uses;
    std::vector<std::shared_ptr<CachedCellImage>> images(nodes.size());
    for (size_t i : graph_->ancestors(targets)) {
      if (graph_->cache_root() && nodes[i].persist)
        uses.push_back(NodeUseLock::acquire(*graph_->cache_root(), nodes[i].hash));
      images[i] = image(i);
    }

    // Stopping: Ctrl-C, a failing progress callback, or a failed cell (as the
    // executor itself does) cancel cells in flight through their tokens.
    auto stop = std::make_shared<std::atomic<bool>>(false);
    std::mutex mu;
    std::vector<NodeProgress> latest;
    bool fresh = false;
    std::vector<int64_t> done(nodes.size(), 0);
    std::vector<int64_t> computed(nodes.size(), 0);
    std::vector<int64_t> retries(nodes.size(), 0);
    std::vector<int64_t> failed(nodes.size(), 0);

    RunOptions o;
    o.threads = threads;
    o.max_retries = max_retries;
    o.timeout_seconds = timeout;
    o.progress_interval_ms = progress_interval_ms;
    o.stop = stop.get();
    o.on_cell = [&](const CellEvent& ev) {
      std::lock_guard lock(mu);
      switch (ev.kind) {
        case CellEvent::Kind::kDone:
          ++done[ev.node];
          if (ev.computed) ++computed[ev.node];
          break;
        case CellEvent::Kind::kRetry:
          ++retries[ev.node];
          break;
        case CellEvent::Kind::kFailed:
          ++failed[ev.node];
          stop->store(true);
          break;
      }
    };
    o.on_progress = [&](const std::vector<NodeProgress>& p) {
      std::lock_guard lock(mu);
      latest = p;
      fresh = true;
    };

    const auto tick = [&] {
      if (progress.is_none()) return;
      std::vector<NodeProgress> snap;
      std::vector<int64_t> fin;
      std::vector<int64_t> comp;
      std::vector<int64_t> ret;
      std::vector<int64_t> fail;
      {
        std::lock_guard lock(mu);
        if (!fresh) return;
        fresh = false;
        snap = latest;
        fin = done;
        comp = computed;
        ret = retries;
        fail = failed;
      }
      py::list l;
      for (const NodeProgress& p : snap) {
        py::dict d;
        d["id"] = nodes[p.node].def.id;
        d["total"] = p.cells_total;
        d["scheduled"] = p.cells_scheduled;
        // Counted from the same events as "computed", so that the two agree.
        d["done"] = fin[p.node];
        d["computed"] = comp[p.node];
        d["retries"] = ret[p.node];
        d["failed"] = fail[p.node];
        l.append(d);
      }
      progress(l);
    };

    RunReport report;
    run_released([&] { report = materialize(*graph_, targets, o); }, [&] { stop->store(true); },
                 tick, 50);

    py::dict result;
    result["wall_seconds"] = report.wall_seconds;
    py::dict per_node;
    for (const NodeReport& r : report.nodes) {
      if (!images[r.node]) continue;  // not part of this run
      py::dict d;
      d["hash"] = nodes[r.node].hash;
      d["cells_total"] = r.cells_total;
      d["cells_computed"] = r.cells_computed;
      d["cells_loaded"] = r.cells_loaded;
      d["cells_corrupt"] = r.cells_corrupt;
      d["retries"] = retries[r.node];
      d["seconds"] = r.seconds;
      d["complete"] = r.complete;
      d["persisted"] = r.persisted;
      per_node[py::str(nodes[r.node].def.id)] = d;
    }
    result["nodes"] = per_node;
    return result;
  }

  /// Times `repeats` reads of `box` done entirely in C++ (for bench/python_ops.py).
  double time_cpp_read(const std::string& id, const py::handle& begin, const py::handle& end,
                       int repeats) const {
    const Box box(dims_from(begin, "begin"), dims_from(end, "end"));
    const auto image = this->image(id);
    CellBuffer out = CellBuffer::allocate(image->dtype(), box.shape());
    py::gil_scoped_release release;
    const auto t0 = Clock::now();
    for (int i = 0; i < repeats; ++i) image->read_into(box, out.mutable_data());
    return std::chrono::duration<double>(Clock::now() - t0).count() / repeats;
  }

 private:
  std::unique_ptr<Graph> graph_;
  mutable std::mutex used_mu_;
  mutable std::set<std::string> used_;  // hashes of the nodes whose images this graph used
};

// ---- blockwise -------------------------------------------------------------

Box roi_from(const py::handle& t, const std::string& what) {
  auto pair = t.cast<py::tuple>();
  return Box(dims_from(pair[0], what), dims_from(pair[1], what));
}

py::tuple roi_tuple(const Box& b) {
  return py::make_tuple(dims_tuple(b.begin()), dims_tuple(b.end()));
}

py::tuple block_tuple(const Block& b) {
  return py::make_tuple(b.id, roi_tuple(b.read_roi), roi_tuple(b.write_roi), dims_tuple(b.index));
}

py::list run_blockwise_py(const py::list& specs) {
  // Tasks live in a deque: upstream pointers must stay valid.
  std::deque<BlockwiseTask> tasks;
  std::vector<std::shared_ptr<PyRef>> keep;
  std::map<std::string, BlockwiseTask*> by_name;
  for (auto s : specs) {
    auto d = s.cast<py::dict>();
    BlockwiseTask& t = tasks.emplace_back();
    t.name = d["name"].cast<std::string>();
    t.total_roi = roi_from(d["total_roi"], "total_roi");
    t.read_roi = roi_from(d["read_roi"], "read_roi");
    t.write_roi = roi_from(d["write_roi"], "write_roi");
    t.fit = parse_fit(d["fit"].cast<std::string>());
    t.read_write_conflict = d["read_write_conflict"].cast<bool>();
    t.max_retries = d["max_retries"].cast<int>();
    t.timeout_seconds = d["timeout"].cast<double>();
    t.num_workers = d["num_workers"].cast<int>();
    auto process = std::make_shared<PyRef>(py::reinterpret_borrow<py::object>(d["process"]));
    keep.push_back(process);
    const std::string name = t.name;
    t.process = [process, name](const Block& b) {
      if (interrupt_requested().load()) throw Cancelled("interrupted (KeyboardInterrupt)");
      py::gil_scoped_acquire gil;
      try {
        process->get()(block_tuple(b));
      } catch (py::error_already_set& e) {
        throw NodeError(fmt::format("task \"{}\": block {}: process function raised:\n{}", name,
                                    b.id, format_python_error(e)));
      }
    };
    // A Python check function (pre or post) as the engine's.
    const auto check_of = [&](const char* key) -> std::function<bool(const Block&)> {
      if (d[key].is_none()) return {};
      auto fn = std::make_shared<PyRef>(py::reinterpret_borrow<py::object>(d[key]));
      keep.push_back(fn);
      return [fn, name, key](const Block& b) {
        py::gil_scoped_acquire gil;
        try {
          return py::bool_(fn->get()(block_tuple(b))).cast<bool>();
        } catch (py::error_already_set& e) {
          throw NodeError(fmt::format("task \"{}\": block {}: {} function raised:\n{}", name, b.id,
                                      key, format_python_error(e)));
        }
      };
    };
    t.check = check_of("check");
    t.post_check = check_of("post_check");
    if (!d["init"].is_none()) {
      auto init = std::make_shared<PyRef>(py::reinterpret_borrow<py::object>(d["init"]));
      keep.push_back(init);
      t.init_worker = [init, name] {
        py::gil_scoped_acquire gil;
        try {
          init->get()();
        } catch (py::error_already_set& e) {
          throw NodeError(fmt::format("task \"{}\": init_callback_fn raised:\n{}", name,
                                      format_python_error(e)));
        }
      };
    }
    by_name[t.name] = &t;
  }
  size_t k = 0;
  for (auto s : specs) {
    auto d = s.cast<py::dict>();
    for (auto u : d["upstream"]) {
      const auto uname = u.cast<std::string>();
      auto it = by_name.find(uname);
      if (it == by_name.end())
        throw InvalidArgument(fmt::format(
            "task \"{}\": upstream task \"{}\" is not part of the run", tasks[k].name, uname));
      tasks[k].upstream.push_back(it->second);
    }
    ++k;
  }
  std::vector<const BlockwiseTask*> ptrs;
  for (const BlockwiseTask& t : tasks) ptrs.push_back(&t);
  BlockwiseReport report;
  run_released([&] { report = run_blockwise(ptrs); }, {});
  py::list out;
  for (const TaskReport& r : report.tasks) {
    py::dict d;
    d["name"] = r.name;
    d["blocks"] = r.blocks;
    d["done"] = r.done;
    d["skipped"] = r.skipped;
    d["failed"] = r.failed;
    d["orphaned"] = r.orphaned;
    d["retries"] = r.retries;
    py::list failures;
    for (const BlockFailure& f : r.failures)
      failures.append(py::make_tuple(block_tuple(f.block), f.attempts, f.error));
    d["failures"] = failures;
    out.append(d);
  }
  return out;
}

py::list enumerate_blocks_py(const py::dict& d) {
  BlockwiseTask t;
  t.name = d["name"].cast<std::string>();
  t.total_roi = roi_from(d["total_roi"], "total_roi");
  t.read_roi = roi_from(d["read_roi"], "read_roi");
  t.write_roi = roi_from(d["write_roi"], "write_roi");
  t.fit = parse_fit(d["fit"].cast<std::string>());
  py::list l;
  for (const Block& b : enumerate_blocks(t)) l.append(block_tuple(b));
  return l;
}

}  // namespace
}  // namespace cellflow::python

PYBIND11_MODULE(_cellflow, m) {
  using namespace cellflow;
  using namespace cellflow::python;
  m.doc() = "cellflow's compiled core (use the cellflow package)";

  // The exception hierarchy, rooted at cellflow.Error like the C++ one.
  // Registered base first: pybind11 tries the newest translator first.
  static py::exception<Error> error(m, "Error");
  py::register_exception<InvalidArgument>(m, "InvalidArgument", error.ptr());
  py::register_exception<GraphError>(m, "GraphError", error.ptr());
  py::register_exception<IoError>(m, "IoError", error.ptr());
  py::register_exception<CorruptionError>(m, "CorruptionError", error.ptr());
  py::register_exception<PluginError>(m, "PluginError", error.ptr());
  py::register_exception<NodeError>(m, "NodeError", error.ptr());
  py::register_exception<Cancelled>(m, "Cancelled", error.ptr());

  m.def("builtin_ops", [] {
    py::list l;
    for (const auto& op : nodes::builtin_registry().list()) l.append(op_dict(*op));
    return l;
  });
  m.def("load_plugin", [](const std::string& path) {
    const plugins::PluginInfo info = plugins::load_plugin(path, nodes::builtin_registry());
    return py::make_tuple(info.path.string(), info.ops);
  });
  m.def("load_plugins_from_env", [] {
    py::list l;
    for (const auto& info : plugins::load_plugins_from_env(nodes::builtin_registry()))
      l.append(py::make_tuple(info.path.string(), info.ops));
    return l;
  });
  m.def("parse_graph", [](const std::string& text, const std::string& source) {
    return dict_from_def(parse_graph(text, source));
  });
  m.def("load_graph_file",
        [](const std::string& path) { return dict_from_def(load_graph_file(path)); });
  m.def("save_graph", [](const py::dict& d) { return save_graph(def_from_dict(d)); });
  m.def("default_cache_root", [] { return CacheDirectory::default_root().string(); });
  m.def("set_memory_budget", [](const py::object& size) {
    const size_t bytes = py::isinstance<py::int_>(size)
                             ? size.cast<size_t>()
                             : parse_size(size.cast<std::string>(), "memory");
    MemoryCache::global().set_budget(bytes);
  });
  m.def("memory_budget", [] { return MemoryCache::global().budget(); });
  m.def("clear_memory", [] { MemoryCache::global().clear(); });
  m.def(
      "check_cancelled", [] { check_cancelled(); },
      "Raises cellflow.Cancelled when the cell or block being computed on this thread is "
      "past its timeout or its run is stopping");

  py::class_<PyOpHandle>(m, "PyOp")
      .def_property_readonly("name", [](const PyOpHandle& h) { return std::string(h.op->name()); })
      .def("describe", [](const PyOpHandle& h) { return op_dict(*h.op); });
  m.def("make_py_op", &make_py_op);
  // For the plugin that registers Python ops in the `cellflow` program
  // (cli_plugin.cpp): the op as a capsule holding a shared_ptr<const Op>.
  m.def("_op_capsule", [](const PyOpHandle& h) {
    return py::capsule(new std::shared_ptr<const Op>(h.op), "cellflow.Op", [](PyObject* c) {
      delete static_cast<std::shared_ptr<const Op>*>(PyCapsule_GetPointer(c, "cellflow.Op"));
    });
  });

  py::class_<BuiltGraph>(m, "BuiltGraph")
      .def(py::init<const py::dict&, std::optional<std::string>, const std::vector<PyOpHandle>&,
                    bool, const BuiltGraph*>(),
           py::arg("definition"), py::arg("cache_root"), py::arg("py_ops"),
           py::arg("strict_code") = false, py::arg("previous") = nullptr)
      .def("hashes", &BuiltGraph::hashes)
      .def("info", &BuiltGraph::info)
      .def("read", &BuiltGraph::read)
      .def("getitem", &BuiltGraph::getitem)
      .def("cell", &BuiltGraph::cell)
      .def("table", &BuiltGraph::table)
      .def("stats", &BuiltGraph::stats)
      .def("run", &BuiltGraph::run, py::arg("outputs"), py::arg("threads"), py::arg("max_retries"),
           py::arg("timeout"), py::arg("progress"), py::arg("progress_interval_ms"))
      .def("to_dot", [](const BuiltGraph& g) { return g.graph().to_dot(); })
      .def("outputs",
           [](const BuiltGraph& g) {
             std::vector<std::string> ids;
             for (size_t i : g.graph().outputs()) ids.push_back(g.graph().nodes()[i].def.id);
             return ids;
           })
      .def("time_cpp_read", &BuiltGraph::time_cpp_read);

  m.def("run_blockwise", &run_blockwise_py);
  m.def("enumerate_blocks", &enumerate_blocks_py);
}

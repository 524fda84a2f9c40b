#include "cellflow/graph/graph_def.hpp"

#include <fmt/format.h>

#include <filesystem>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"

namespace cellflow {
namespace {

GraphError field_error(const std::string& source, const std::string& where,
                       const std::string& what) {
  return GraphError(fmt::format("{}: {}{}", source, where.empty() ? "" : where + ": ", what));
}

std::vector<std::string> string_list(const Value& v, const std::string& source,
                                     const std::string& where, const std::string& field) {
  if (!v.is_array())
    throw field_error(
        source, where,
        fmt::format("field \"{}\" must be a list of node ids (got {})", field, v.kind_name()));
  std::vector<std::string> out;
  for (const auto& x : v.as_array()) {
    if (!x.is_string())
      throw field_error(source, where,
                        fmt::format("field \"{}\" must contain node ids (strings), got {}", field,
                                    x.kind_name()));
    out.push_back(x.as_string());
  }
  return out;
}

Value string_list_value(const std::vector<std::string>& items) {
  Value::Array a;
  for (const auto& s : items) a.emplace_back(s);
  return Value(std::move(a));
}

}  // namespace

const std::string& GraphDef::add(std::string id, std::string op, std::vector<std::string> inputs,
                                 Value params) {
  nodes.push_back(NodeDef{std::move(id), std::move(op), std::move(inputs), std::move(params)});
  return nodes.back().id;
}

GraphDef parse_graph(std::string_view json_text, const std::string& source) {
  const Value root = parse_json(json_text, source);
  if (!root.is_object()) throw field_error(source, "", "a graph must be a JSON object");
  GraphDef def;
  def.source = source;
  for (const auto& [key, v] : root.as_object()) {
    if (key != "cellflow" && key != "name" && key != "nodes" && key != "outputs")
      throw field_error(
          source, "",
          fmt::format("unknown field \"{}\" (expected cellflow, name, nodes, outputs)", key));
  }
  const Value* format = root.find("cellflow");
  if (format == nullptr)
    throw field_error(
        source, "",
        fmt::format("field \"cellflow\" (the format version, {}) is missing", kGraphFormat));
  if (!format->is_int() || format->as_int() != kGraphFormat)
    throw field_error(source, "",
                      fmt::format("field \"cellflow\" must be {} (got {})", kGraphFormat,
                                  to_json_compact(*format)));
  if (const Value* name = root.find("name")) {
    if (!name->is_string()) throw field_error(source, "", "field \"name\" must be a string");
    def.name = name->as_string();
  }
  const Value* nodes = root.find("nodes");
  if (nodes == nullptr || !nodes->is_array())
    throw field_error(source, "", "field \"nodes\" must be a list of nodes");
  size_t position = 0;
  for (const auto& n : nodes->as_array()) {
    const std::string where0 = fmt::format("nodes[{}]", position++);
    if (!n.is_object()) throw field_error(source, where0, "a node must be an object");
    const Value* id = n.find("id");
    if (id == nullptr || !id->is_string() || id->as_string().empty())
      throw field_error(source, where0, "field \"id\" must be a non-empty string");
    NodeDef node;
    node.id = id->as_string();
    const std::string where = fmt::format("node \"{}\"", node.id);
    for (const auto& [key, v] : n.as_object()) {
      if (key != "id" && key != "op" && key != "inputs" && key != "params" && key != "persist")
        throw field_error(
            source, where,
            fmt::format("unknown field \"{}\" (expected id, op, inputs, params, persist)", key));
    }
    const Value* op = n.find("op");
    if (op == nullptr || !op->is_string() || op->as_string().empty())
      throw field_error(source, where, "field \"op\" must be a non-empty string");
    node.op = op->as_string();
    if (const Value* inputs = n.find("inputs"))
      node.inputs = string_list(*inputs, source, where, "inputs");
    if (const Value* params = n.find("params")) {
      if (!params->is_object())
        throw field_error(
            source, where,
            fmt::format("field \"params\" must be an object (got {})", params->kind_name()));
      node.params = *params;
    }
    if (const Value* persist = n.find("persist")) {
      if (!persist->is_bool())
        throw field_error(
            source, where,
            fmt::format("field \"persist\" must be true or false (got {})", persist->kind_name()));
      node.persist = persist->as_bool();
    }
    def.nodes.push_back(std::move(node));
  }
  if (const Value* outputs = root.find("outputs"))
    def.outputs = string_list(*outputs, source, "", "outputs");
  return def;
}

GraphDef load_graph_file(const std::string& path) {
  std::optional<std::string> text;
  try {
    text = read_file(path);
  } catch (const IoError& e) {
    throw IoError(fmt::format("{}: cannot read the graph: {}", path, e.message()));
  }
  if (!text) throw IoError(fmt::format("{}: no such file", path));
  GraphDef def = parse_graph(*text, path);
  def.base_dir = std::filesystem::absolute(path).lexically_normal().parent_path().string();
  return def;
}

std::string save_graph(const GraphDef& def) {
  Value root = Value::object();
  root.set("cellflow", kGraphFormat);
  if (!def.name.empty()) root.set("name", def.name);
  Value::Array nodes;
  for (const auto& n : def.nodes) {
    Value v = Value::object();
    v.set("id", n.id);
    v.set("op", n.op);
    if (!n.inputs.empty()) v.set("inputs", string_list_value(n.inputs));
    if (n.params.is_object() && !n.params.as_object().empty()) v.set("params", n.params);
    if (n.persist) v.set("persist", *n.persist);
    nodes.push_back(std::move(v));
  }
  root.set("nodes", Value(std::move(nodes)));
  if (!def.outputs.empty()) root.set("outputs", string_list_value(def.outputs));
  return to_json(root);
}

}  // namespace cellflow

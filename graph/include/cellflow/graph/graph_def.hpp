// GraphDef: the serializable description of a pipeline, as written in JSON:
//   {"cellflow": 1, "name": ..., "nodes": [{"id", "op", "inputs", "params", "persist"}],
//    "outputs": [...]}
// Plain values; no synchronization needed.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cellflow/graph/value.hpp"

namespace cellflow {

inline constexpr int kGraphFormat = 1;

struct NodeDef {
  std::string id;
  std::string op;
  std::vector<std::string> inputs;  // ids of other nodes; order is significant
  Value params = Value::object();
  /// Whether the node's cells are stored in the cache; unset: the op's
  /// default (Op::persist_by_default). Not part of the node's hash.
  std::optional<bool> persist;
};

struct GraphDef {
  std::string name;
  std::vector<NodeDef> nodes;
  std::vector<std::string> outputs;
  /// Where it was read from, for error messages ("" if built in code).
  std::string source;
  /// The folder that relative file paths in params (read.image, read.zarr) are
  /// taken from first (Params::get_path): load_graph_file sets the graph file's
  /// folder, absolute; "" (graphs built in code or parsed from text): the current
  /// directory. Not part of the JSON form, nor of any hash.
  std::string base_dir;

  /// Appends a node; returns its id for chaining.
  const std::string& add(std::string id, std::string op, std::vector<std::string> inputs = {},
                         Value params = Value::object());
};

/// Parses the JSON form. Throws GraphError naming the file and field for
/// structural problems (types, missing fields, unknown keys).
GraphDef parse_graph(std::string_view json_text, const std::string& source = "<graph>");
/// Reads and parses a file; throws IoError if it cannot be read.
GraphDef load_graph_file(const std::string& path);
/// The JSON form; save -> parse -> save is byte-identical.
std::string save_graph(const GraphDef& def);

}  // namespace cellflow

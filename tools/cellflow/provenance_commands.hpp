// The provenance commands of `cellflow` (see cellflow/graph/provenance.hpp):
//   cellflow cache show --cache DIR HASH|PREFIX|GRAPH.json NODE_ID [--tree]
//                                                   a node's definition, state,
//                                                   size, inputs and artifacts
//                                                   (or a memo entry's record)
//   cellflow graph --from-cache DIR HASH [--out F]  the JSON graph producing HASH
//   cellflow replay --cache DIR HASH                completes HASH's node from
//                                                   the stored definitions
// Each returns the exit code or throws, like the other commands (a missing
// definition or unknown op is a GraphError: exit 2). Not thread-safe: called
// once from main().
#pragma once

#include <optional>
#include <string>

#include "cellflow/store/env.hpp"

namespace cellflow::cli {

struct ProvenanceArgs {
  std::string hash;                    // cache show: a hash, a unique prefix of one, or GRAPH.json
  std::optional<std::string> node_id;  // cache show GRAPH.json NODE_ID
  bool tree = false;                   // cache show
  std::optional<std::string> out;      // graph --from-cache
  std::optional<std::string> cache;    // replay
  int threads = 0;                     // replay
  bool quiet = false;                  // replay
};

/// Environment variable that --strict-code sets (so worker processes inherit it).
inline constexpr const char* kStrictCodeEnv = "CELLFLOW_STRICT_CODE";
/// True when $CELLFLOW_STRICT_CODE is set to a non-empty value other than "0".
bool strict_code_requested();
/// Environment variable that --durability sets ("process" or "power-cut").
inline constexpr const char* kDurabilityEnv = "CELLFLOW_DURABILITY";
/// Durability::kPowerCut when $CELLFLOW_DURABILITY is "power-cut", else kProcess.
Durability durability_requested();

int cache_show_command(const std::optional<std::string>& cache, const ProvenanceArgs& args);
int graph_from_cache_command(const std::string& cache, const ProvenanceArgs& args);
int replay_command(const ProvenanceArgs& args);

}  // namespace cellflow::cli

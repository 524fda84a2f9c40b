// The JSON parser behind graph files, params, .zarray/.zattrs and cache
// metadata (parse_json): any input either parses or throws cellflow::Error;
// what parses is written back by each writer and parses back to the same value.
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/value.hpp"
#include "fuzz_input.hpp"

using cellflow::Value;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Value v;
  try {
    v = cellflow::parse_json(cellflow::fuzz::as_text(data, size), "fuzz.json");
  } catch (const cellflow::Error&) {
    return 0;
  }
  CELLFLOW_FUZZ_CHECK(cellflow::parse_json(cellflow::to_json(v)) == v);
  CELLFLOW_FUZZ_CHECK(cellflow::parse_json(cellflow::to_json_compact(v)) == v);
  // Canonical JSON sorts keys: it is a fixed point, not the same value.
  const std::string canonical = cellflow::to_canonical_json(v);
  CELLFLOW_FUZZ_CHECK(cellflow::to_canonical_json(cellflow::parse_json(canonical)) == canonical);
  return 0;
}

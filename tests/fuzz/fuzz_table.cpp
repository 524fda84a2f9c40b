// Table rows: a table cell's bytes (Table::deserialize), and a TableLog batch
// as TableLog::read finds it (MemoryEnv; the input is stored as a second
// batch, behind one with known columns). Every input either reads or throws
// cellflow::Error; rows that deserialize serialize back to the same bytes.
#include <memory>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/table.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/store/layout.hpp"
#include "cellflow/store/memory_env.hpp"
#include "cellflow/store/table_log.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes = cellflow::fuzz::as_text(data, size);
  try {
    cellflow::Table t = cellflow::Table::deserialize(bytes, "fuzz");
    CELLFLOW_FUZZ_CHECK(t.serialize() == bytes);
    (void)t.to_csv();
    if (t.num_columns() > 0) t.sort_by(0);
  } catch (const cellflow::Error&) {
  }

  auto env = std::make_shared<cellflow::MemoryEnv>();
  cellflow::TableLog log(env, "objects");
  cellflow::Table first({"label", "volume"});
  const double row[] = {1.0, 27.0};
  first.add_row(row);
  log.append(first, "a");
  const std::string path = cellflow::layout::table_batch("objects", "b");
  env->write_atomic(path, cellflow::ZarrArray::encode_chunk(bytes.data(), bytes.size(), 1, path),
                    cellflow::Durability::kProcess);
  try {
    (void)log.read();
  } catch (const cellflow::Error&) {
  }
  return 0;
}

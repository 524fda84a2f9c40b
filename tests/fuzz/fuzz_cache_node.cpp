// A node folder of the cache as its readers find it (read_node_definition,
// ZarrArray::open and read, verify_cache), in a MemoryEnv: the input is the
// node's .zattrs, a NUL byte, its 0/.zarray, a NUL byte, then a blosc frame
// stored (with a valid checksum trailer) as the node's first cell. Every
// reader either succeeds or throws cellflow::Error; verify never throws for
// damage, it reports it.
#include <memory>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/cache_scan.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/store/cache_files.hpp"
#include "cellflow/store/layout.hpp"
#include "cellflow/store/memory_env.hpp"
#include "fuzz_input.hpp"

namespace layout = cellflow::layout;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = cellflow::fuzz::split_parts(cellflow::fuzz::as_text(data, size), 3);
  const std::string hash = "0123456789abcdef0123456789abcdef";
  auto env = std::make_shared<cellflow::MemoryEnv>();
  cellflow::CacheDirectory cache(env);
  env->make_folders(layout::array(hash));
  env->write_atomic(layout::zgroup(hash), layout::kZgroupText, cellflow::Durability::kProcess);
  env->write_atomic(layout::zattrs(hash), parts[0], cellflow::Durability::kProcess);
  env->write_atomic(layout::zarray(hash), parts[1], cellflow::Durability::kProcess);

  try {
    (void)cellflow::read_node_definition(*env, hash);
  } catch (const cellflow::Error&) {
  }
  try {
    const auto array = cellflow::ZarrArray::open(env, layout::array(hash), hash);
    const cellflow::CellIndex first(array->grid().rank());
    // A large chunk is legal; it is only not worth allocating per input.
    const auto cell_bytes = static_cast<size_t>(array->grid().cell_shape().product()) *
                            cellflow::dtype_size(array->dtype());
    if (cell_bytes <= (size_t{1} << 22)) {
      env->write_atomic(layout::cell(layout::array(hash), first),
                        cellflow::fuzz::seal(parts[2], layout::cell_identity(hash, first)),
                        cellflow::Durability::kProcess);
      (void)array->read(first);
    }
  } catch (const cellflow::Error&) {
  }
  cellflow::VerifyOptions options;
  options.threads = 1;
  (void)cellflow::verify_cache(env, options);
  return 0;
}

// read.zarr's reading of a foreign Zarr array (nodes/src/zarr_v2 and zarr_v3):
// the input is array metadata (a .zarray text, or a zarr.json text when it
// starts with '{' and holds "zarr_format": 3), a NUL byte, then the stored
// bytes of chunk 0 (a shard for a sharded v3 array). The metadata either
// opens or throws cellflow::Error; chunk 0 then decodes into exactly one
// chunk's bytes or throws cellflow::Error. The chunk is written under every
// name chunk 0 can have (v2 "0.0", "0/0"; v3 "c/0/0", "c.0.0") in a folder of
// the fuzzing process, since the readers take chunks from files.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "fuzz_input.hpp"
#include "zarr_v2.hpp"
#include "zarr_v3.hpp"

namespace fs = std::filesystem;
namespace zarr = cellflow::nodes::zarr;

namespace {

const fs::path& folder() {
  static const fs::path dir = [] {
    fs::path d =
        fs::temp_directory_path() / ("cellflow-fuzz-read-zarr-" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

void write(const fs::path& file, std::string_view bytes) {
  fs::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
}

/// Chunk 0's names for an array of `rank` axes.
std::vector<fs::path> chunk_zero_names(int rank) {
  std::string dots = "0";
  fs::path slashes = "0";
  for (int d = 1; d < rank; ++d) {
    dots += ".0";
    slashes /= "0";
  }
  return {dots, slashes, fs::path("c") / slashes, "c." + dots};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = cellflow::fuzz::split_parts(cellflow::fuzz::as_text(data, size), 2);
  const std::string meta(parts[0]);
  const bool v3 = meta.find("\"zarr_format\": 3") != std::string::npos ||
                  meta.find("\"zarr_format\":3") != std::string::npos;
  const fs::path& dir = folder();
  fs::remove_all(dir);
  fs::create_directories(dir);
  zarr::OpenedArray array;
  try {
    array = v3 ? zarr::open_v3(dir, meta) : zarr::open_v2(dir, meta);
  } catch (const cellflow::Error&) {
    return 0;
  }
  // A chunk this large is legal; it is only not worth allocating per input.
  const int64_t elements = array.chunks.product();
  const size_t bytes = static_cast<size_t>(elements) * cellflow::dtype_size(array.dtype);
  if (elements <= 0 || bytes > (size_t{1} << 22)) return 0;
  for (const fs::path& name : chunk_zero_names(array.chunks.rank())) write(dir / name, parts[1]);
  std::vector<std::byte> out(bytes);
  try {
    (void)array.source->read(cellflow::CellIndex(array.chunks.rank(), 0), out.data());
  } catch (const cellflow::Error&) {
  }
  return 0;
}

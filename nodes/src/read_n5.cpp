// read.n5: an existing N5 dataset as a source node (the format in n5.cpp,
// the kernel and identity shared with read.zarr in array_reader.cpp).
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "array_reader.hpp"
#include "n5.hpp"
#include "ops.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes {
namespace {

class ReadN5Op final : public Op {
 public:
  std::string_view name() const override { return "read.n5"; }
  // Its cells are served from the dataset, never copied into the cache.
  bool persist_by_default() const override { return false; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Reads an existing N5 dataset (a folder with an attributes.json giving dimensions, "
           "blockSize, dataType and compression, as n5-java, z5 or zarr-python's N5Store write "
           "it): axes reversed to C order (N5 lists the fastest axis first), dtypes "
           "u8..u64/i8..i64/f32/f64, compression raw, gzip (or zlib), zstd or blosc (bzip2, "
           "xz and lz4 are refused). Missing blocks read as 0; edge blocks may hold only their "
           "in-bounds part. A block whose header does not match the dataset and its position, "
           "or that does not decode to exactly its size, is an error naming its file. "
           "\"pixelResolution\" (or \"resolution\") gives the spacing, reversed, with its unit.";
  }
  std::vector<ParamSpec> params() const override {
    return detail::array_reader_params(
        "the dataset's folder (inside an N5 container, e.g. \"data.n5/setup0/timepoint0/s0\")",
        "the dataset's blockSize, reversed");
  }
  int min_inputs() const override { return 0; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 0);
    const fs::path dir = params.get_path("path");
    n5::Dataset ds = n5::open_dataset(dir);
    return detail::bind_array_reader(params, dir, std::move(ds.array), std::move(ds.space),
                                     {"n5", "n5"});
  }
};

}  // namespace

std::shared_ptr<const Op> make_read_n5_op() { return std::make_shared<ReadN5Op>(); }

}  // namespace cellflow::nodes

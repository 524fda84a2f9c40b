// The op interface: an Op is a named, versioned operation with declared params;
// binding it to params and input descriptions yields a NodeKernel that computes
// output cells. Ops are immutable after registration; NodeKernel::compute is
// called concurrently on different cells and must be thread-safe.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cellflow/cache/box.hpp"
#include "cellflow/cache/cell_buffer.hpp"
#include "cellflow/cache/dims.hpp"
#include "cellflow/cache/dtype.hpp"
#include "cellflow/cache/space.hpp"
#include "cellflow/cache/table.hpp"
#include "cellflow/graph/value.hpp"

namespace cellflow {

class CachedCellImage;

enum class ParamType {
  kBool,
  kInt,
  kFloat,
  kString,
  kDType,        // a dtype name such as "f32"
  kIntList,      // [1, 2, 3]
  kFloatList,    // [0.5, 1.0]
  kFloatOrList,  // 2.0 or one value per axis [1.0, 2.0, 2.0]
  kIntOrList,    // 3 or one value per axis
};
std::string_view param_type_name(ParamType t);

struct ParamSpec {
  std::string name;
  ParamType type = ParamType::kFloat;
  /// Null: the param is optional with no default (op decides), unless `required`.
  Value default_value;
  std::string doc;
  bool required = false;
};

/// Params after validation: known names only, types checked and normalized
/// (ints given for floats become floats), defaults filled in.
class Params {
 public:
  Params() = default;
  explicit Params(Value object, std::filesystem::path base_dir = {})
      : v_(std::move(object)), base_dir_(std::move(base_dir)) {}

  /// The params themselves: what the node hash covers (base_dir() is not in it).
  const Value& value() const { return v_; }
  /// The folder relative paths in params are taken from (GraphDef::base_dir: the
  /// graph file's folder); empty: the current directory.
  const std::filesystem::path& base_dir() const { return base_dir_; }
  bool has(std::string_view name) const;
  /// Accessors throw InvalidArgument naming the param.
  const Value& get(std::string_view name) const;
  bool get_bool(std::string_view name) const;
  int64_t get_int(std::string_view name) const;
  double get_float(std::string_view name) const;
  const std::string& get_string(std::string_view name) const;
  DType get_dtype(std::string_view name) const;
  std::vector<int64_t> get_ints(std::string_view name) const;
  std::vector<double> get_floats(std::string_view name) const;
  /// A number or a list expanded to `rank` entries (a list must have `rank`).
  std::vector<double> get_floats_per_axis(std::string_view name, int rank) const;
  std::vector<int64_t> get_ints_per_axis(std::string_view name, int rank) const;
  /// String param `name` as an absolute, lexically normal path to read from. A
  /// relative path is taken from base_dir() if something exists there, else from
  /// the current directory if something exists there (graph files written before
  /// paths followed them), else it is an InvalidArgument naming both paths. With
  /// no base_dir() it is taken from the current directory, unchecked.
  /// Throws InvalidArgument if the param is empty.
  std::filesystem::path get_path(std::string_view name) const;

 private:
  Value v_ = Value::object();
  std::filesystem::path base_dir_;
};

/// What a node produces: an image, or a table whose rows are produced cell
/// by cell over the image domain `shape` cut into `cell_shape` cells.
enum class OutputKind { kImage, kTable };

/// What an image is: element type, shape and cell shape (for a table: the
/// domain its cells cover; Graph::build sets dtype to u8: cells hold serialized rows).
struct ImageInfo {
  DType dtype = DType::kF32;
  Shape shape;
  Shape cell_shape;
  OutputKind kind = OutputKind::kImage;
  /// Where the voxels lie (image nodes). Empty: not set by the op; Graph::build
  /// then gives the node its first image input's space (voxel space for sources).
  Space space;
  /// Whether the voxels are labels (ids of objects, 0 = background) rather
  /// than intensities: exports write them as OME-NGFF label images and
  /// pyramids reduce them by mode. Set by the op (`label`; `downsample` by
  /// mode or max of labels); not inherited.
  bool labels = false;
};

/// One input region handed to compute: the box (image coordinates) and its data.
struct InputRegion {
  Box box;
  CellBuffer data;
};

/// A bound node: an op with fixed params and known inputs.
class NodeKernel {
 public:
  explicit NodeKernel(ImageInfo output) : output_(std::move(output)) {}
  virtual ~NodeKernel() = default;

  const ImageInfo& output() const { return output_; }

  /// The region of input `input` needed to compute `out_box` (the ITK
  /// "requested region"). Default: out_box clipped to the input's extent.
  /// Must lie inside the input's extent.
  virtual Box input_region(size_t input, const Box& out_box, const ImageInfo& input_info) const;

  /// Extra identity that enters the node's hash besides op, version, params and
  /// inputs: what identifies a source's data (a file's path, size and mtime, or
  /// its content hash). Empty for ops whose output depends on params only.
  virtual std::string identity() const { return {}; }

  /// Global ops (histograms, min/max, label merges) return true and do their
  /// reduction over whole inputs in prepare(), which runs once before any
  /// compute() of this node in a process.
  virtual bool needs_prepare() const { return false; }
  virtual void prepare(std::span<CachedCellImage* const> /*inputs*/) {}

  /// Computes the output region `out_box` into `out` (dtype output().dtype,
  /// shape out_box.shape()); `inputs[i]` holds input_region(i, out_box).
  /// Table kernels implement compute_rows() instead.
  virtual void compute(const Box& out_box, std::span<const InputRegion> inputs,
                       CellBuffer& out) const;

  /// Table kernels (output().kind == kTable): the rows the cell `out_box`
  /// contributes; `inputs[i]` holds input_region(i, out_box).
  virtual Table compute_rows(const Box& out_box, std::span<const InputRegion> inputs) const;
  /// Table kernels: combines the rows of all cells, in cell order, into the
  /// node's table (for example, merging partial rows of one object that spans
  /// cells). Default: concatenation.
  virtual Table merge_rows(std::vector<Table> parts) const;
  /// Table kernels: the columns of the merged table when the params fix them
  /// (for descriptions before anything runs); empty when not known.
  virtual std::vector<std::string> table_columns() const { return {}; }

 private:
  ImageInfo output_;
};

/// An operation type, registered by name.
class Op {
 public:
  virtual ~Op() = default;
  virtual std::string_view name() const = 0;
  /// Bump when the output for the same params changes: it invalidates caches.
  virtual int version() const = 0;
  virtual std::string_view doc() const = 0;
  virtual std::vector<ParamSpec> params() const = 0;
  virtual int min_inputs() const = 0;
  virtual int max_inputs() const { return min_inputs(); }

  /// Whether the op takes table nodes as inputs (most ops take images only;
  /// Graph::build rejects a table input otherwise).
  virtual bool accepts_table_inputs() const { return false; }

  /// Whether its nodes store their cells in the cache unless the graph says
  /// otherwise (NodeDef::persist). Sources that read the user's own files
  /// (read.zarr, read.image) say false: their cells are served from the
  /// file, so the cache holds no second copy of the input.
  virtual bool persist_by_default() const { return true; }

  /// An op's own failure policy; negative values defer to the run's options.
  virtual int max_retries() const { return -1; }
  virtual double timeout_seconds() const { return -1; }

  /// Validates semantic constraints (throws InvalidArgument naming the param)
  /// and returns the kernel. `params` were already checked against params().
  virtual std::unique_ptr<NodeKernel> bind(const Params& params,
                                           std::span<const ImageInfo> inputs) const = 0;
};

/// Checks `given` (an object) against `specs`: unknown names, types, required
/// params; fills defaults. Throws InvalidArgument naming the param. `base_dir`
/// becomes Params::base_dir().
Params validate_params(const std::vector<ParamSpec>& specs, const Value& given,
                       std::filesystem::path base_dir = {});

}  // namespace cellflow

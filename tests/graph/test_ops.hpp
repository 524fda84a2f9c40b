// Small ops defined by the tests, independent of nodes/:
//   test.const  (source)   value + ramp * global linear index, any dtype
//   test.add    (2 inputs) a + scale * b  (f32; inputs must have equal shapes)
//   test.fail   (1 input)  copies its input, but throws on the cell at `fail_at`
// and a registry holding them next to the built-in ops.
#pragma once

#include <fmt/format.h>

#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "cellflow/cache/cached_cell_image.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/graph/op.hpp"
#include "cellflow/graph/registry.hpp"
#include "cellflow/nodes/builtin.hpp"

namespace cellflow::test {

class ConstKernel final : public NodeKernel {
 public:
  ConstKernel(ImageInfo info, double value, double ramp)
      : NodeKernel(std::move(info)), value_(value), ramp_(ramp) {}
  void compute(const Box& out_box, std::span<const InputRegion>, CellBuffer& out) const override {
    const Shape& shape = output().shape;
    int64_t i = 0;
    for_each_index(out_box, [&](const Dims& g) {
      int64_t lin = 0;
      for (int d = 0; d < g.rank(); ++d) lin = lin * shape[d] + g[d];
      const double v = value_ + ramp_ * static_cast<double>(lin);
      switch (out.dtype()) {
        case DType::kF32:
          out.mutable_as<float>()[i] = static_cast<float>(v);
          break;
        case DType::kF64:
          out.mutable_as<double>()[i] = v;
          break;
        case DType::kU8:
          out.mutable_as<uint8_t>()[i] = static_cast<uint8_t>(v);
          break;
        case DType::kU16:
          out.mutable_as<uint16_t>()[i] = static_cast<uint16_t>(v);
          break;
        case DType::kI32:
          out.mutable_as<int32_t>()[i] = static_cast<int32_t>(v);
          break;
        default:
          throw InvalidArgument("test.const: unsupported dtype");
      }
      ++i;
    });
  }

 private:
  double value_, ramp_;
};

class ConstOp final : public Op {
 public:
  explicit ConstOp(int version = 1) : version_(version) {}
  std::string_view name() const override { return "test.const"; }
  int version() const override { return version_; }
  std::string_view doc() const override { return "test source"; }
  std::vector<ParamSpec> params() const override {
    return {
        {"shape", ParamType::kIntList, Value(), "shape", true},
        {"cell_shape", ParamType::kIntList, Value(), "cell shape", true},
        {"value", ParamType::kFloat, Value(0.0), "constant"},
        {"ramp", ParamType::kFloat, Value(0.0), "slope along the linear index"},
        {"dtype", ParamType::kDType, Value("f32"), "dtype"},
    };
  }
  int min_inputs() const override { return 0; }
  std::unique_ptr<NodeKernel> bind(const Params& p, std::span<const ImageInfo>) const override {
    ImageInfo info;
    info.dtype = p.get_dtype("dtype");
    info.shape = Shape::from(p.get_ints("shape"));
    info.cell_shape = Shape::from(p.get_ints("cell_shape"));
    return std::make_unique<ConstKernel>(info, p.get_float("value"), p.get_float("ramp"));
  }

 private:
  int version_;
};

class AddKernel final : public NodeKernel {
 public:
  AddKernel(ImageInfo info, double scale) : NodeKernel(std::move(info)), scale_(scale) {}
  void compute(const Box&, std::span<const InputRegion> in, CellBuffer& out) const override {
    const auto get = [](const CellBuffer& b, int64_t i) -> double {
      return b.dtype() == DType::kF32 ? b.as<float>()[i] : b.as<double>()[i];
    };
    for (int64_t i = 0; i < out.num_elements(); ++i)
      out.mutable_as<float>()[i] =
          static_cast<float>(get(in[0].data, i) + scale_ * get(in[1].data, i));
  }

 private:
  double scale_;
};

class AddOp final : public Op {
 public:
  std::string_view name() const override { return "test.add"; }
  int version() const override { return 1; }
  std::string_view doc() const override { return "a + scale * b"; }
  std::vector<ParamSpec> params() const override {
    return {{"scale", ParamType::kFloat, Value(2.0), "factor of the second input"}};
  }
  int min_inputs() const override { return 2; }
  std::unique_ptr<NodeKernel> bind(const Params& p, std::span<const ImageInfo> in) const override {
    if (!(in[0].shape == in[1].shape))
      throw InvalidArgument(fmt::format("field \"inputs\": shape mismatch: {} vs {}",
                                        in[0].shape.str(), in[1].shape.str()));
    for (const auto& i : in)
      if (i.dtype != DType::kF32 && i.dtype != DType::kF64)
        throw InvalidArgument(
            fmt::format("field \"inputs\": dtype {} is not f32 or f64", dtype_name(i.dtype)));
    return std::make_unique<AddKernel>(ImageInfo{DType::kF32, in[0].shape, in[0].cell_shape},
                                       p.get_float("scale"));
  }
};

class FailKernel final : public NodeKernel {
 public:
  FailKernel(ImageInfo info, Box fail_box) : NodeKernel(std::move(info)), fail_box_(fail_box) {}
  void compute(const Box& out_box, std::span<const InputRegion> in,
               CellBuffer& out) const override {
    if (!out_box.intersect(fail_box_).empty()) throw std::runtime_error("injected failure");
    std::memcpy(out.mutable_data(), in[0].data.data(), out.num_bytes());
  }

 private:
  Box fail_box_;
};

class FailOp final : public Op {
 public:
  std::string_view name() const override { return "test.fail"; }
  int version() const override { return 1; }
  std::string_view doc() const override { return "fails on one voxel"; }
  std::vector<ParamSpec> params() const override {
    return {{"fail_at", ParamType::kIntList, Value(), "voxel whose cell fails", true}};
  }
  int min_inputs() const override { return 1; }
  std::unique_ptr<NodeKernel> bind(const Params& p, std::span<const ImageInfo> in) const override {
    const Dims at = Dims::from(p.get_ints("fail_at"));
    Dims end = at;
    for (int d = 0; d < end.rank(); ++d) end[d] += 1;
    return std::make_unique<FailKernel>(in[0], Box(at, end));
  }
};

/// Built-in ops plus the test ops (a fresh registry each call).
inline std::unique_ptr<Registry> make_test_registry(int const_version = 1) {
  auto r = std::make_unique<Registry>();
  nodes::register_builtin_ops(*r);
  r->add(std::make_shared<ConstOp>(const_version));
  r->add(std::make_shared<AddOp>());
  r->add(std::make_shared<FailOp>());
  return r;
}

}  // namespace cellflow::test

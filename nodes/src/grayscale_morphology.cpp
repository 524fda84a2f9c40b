// min / max: grayscale erosion and dilation — the smallest / largest value over
// a ball (default; ITK's BinaryBallStructuringElement) or box window, clipped
// to the image (voxels outside the image are ignored). NaN voxels are ignored
// unless the whole window is NaN. Exact, so cells match the whole image bit
// for bit.
#include <fmt/format.h>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "neighborhood.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

enum class Extremum { kMin, kMax };

class ExtremumKernel final : public NodeKernel {
 public:
  ExtremumKernel(ImageInfo info, Extremum which, std::vector<int64_t> radius, bool ball)
      : NodeKernel(std::move(info)),
        which_(which),
        radius_(std::move(radius)),
        ball_(ball),
        rows_(ball ? detail::ball_rows(radius_) : detail::BallRows{}) {}

  Box input_region(size_t /*input*/, const Box& out_box,
                   const ImageInfo& input_info) const override {
    return detail::grow_clipped(out_box, radius_, input_info.shape);
  }

  void compute(const Box& out_box, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    const InputRegion& in = inputs[0];
    dispatch_dtype(in.data.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      if (which_ == Extremum::kMin) {
        run<T>(in, out_box, out, detail::PickMin{});
      } else {
        run<T>(in, out_box, out, detail::PickMax{});
      }
    });
  }

 private:
  template <class T, class Pick>
  void run(const InputRegion& in, const Box& out_box, CellBuffer& out, Pick pick) const {
    if (ball_) {
      detail::ball_extremum(in.data.as<T>(), in.box, out.mutable_as<T>(), out_box, rows_, pick);
    } else {
      detail::box_extremum(in.data.as<T>(), in.box, out.mutable_as<T>(), out_box, radius_, pick);
    }
  }

  Extremum which_;
  std::vector<int64_t> radius_;
  bool ball_;
  detail::BallRows rows_;
};

class ExtremumOp final : public Op {
 public:
  explicit ExtremumOp(Extremum which) : which_(which) {}
  std::string_view name() const override { return which_ == Extremum::kMin ? "min" : "max"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return which_ == Extremum::kMin
               ? "Grayscale erosion: the smallest value over a ball or box window of the given "
                 "radius, clipped at the image edge (NaN ignored); same dtype as the input."
               : "Grayscale dilation: the largest value over a ball or box window of the given "
                 "radius, clipped at the image edge (NaN ignored); same dtype as the input.";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"radius", ParamType::kIntOrList, Value(1),
         "window half-width in voxels: one number, or one per axis (each >= 0)"},
        {"shape", ParamType::kString, Value("ball"),
         "\"ball\": the voxels o with sum((o_d / (radius_d + 0.5))^2) <= 1 (ITK's "
         "BinaryBallStructuringElement); \"box\": all of (2*radius+1)^D"},
    };
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const ImageInfo& in = inputs[0];
    auto radius = detail::get_radius(params, "radius", in.shape.rank());
    const std::string& shape = params.get_string("shape");
    if (shape != "ball" && shape != "box") {
      throw InvalidArgument(
          fmt::format("param \"shape\" must be \"ball\" or \"box\" (got \"{}\")", shape));
    }
    if (shape == "ball") detail::check_ball_size(radius, "radius");
    ImageInfo info{in.dtype, in.shape, in.cell_shape};
    return std::make_unique<ExtremumKernel>(std::move(info), which_, std::move(radius),
                                            shape == "ball");
  }

 private:
  Extremum which_;
};

}  // namespace

std::shared_ptr<const Op> make_min_op() { return std::make_shared<ExtremumOp>(Extremum::kMin); }
std::shared_ptr<const Op> make_max_op() { return std::make_shared<ExtremumOp>(Extremum::kMax); }

}  // namespace cellflow::nodes

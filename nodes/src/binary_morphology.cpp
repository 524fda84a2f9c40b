// erode / dilate / open / close: binary morphology with a ball structuring
// element (ITK's BinaryBallStructuringElement: offsets o with
// sum((o_d / (radius_d + 0.5))^2) <= 1). The input's foreground is the voxels
// equal to `foreground`; the output is a u8 0/1 mask.
//
// Outside the image: the window is clipped to the image, so for erode the
// outside counts as foreground (objects touching the border do not shrink
// from it, like ITK's BoundaryToForeground default) and for dilate as
// background. open = dilate(erode(x)) and close = erode(dilate(x)) use the
// same rules at each step and read a halo of 2 * radius.
#include <fmt/format.h>

#include <cmath>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "neighborhood.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

enum class Morphology { kErode, kDilate, kOpen, kClose };

std::string_view morphology_name(Morphology m) {
  switch (m) {
    case Morphology::kErode:
      return "erode";
    case Morphology::kDilate:
      return "dilate";
    case Morphology::kOpen:
      return "open";
    case Morphology::kClose:
      return "close";
  }
  return "";
}

class MorphologyKernel final : public NodeKernel {
 public:
  MorphologyKernel(ImageInfo info, Morphology which, std::vector<int64_t> radius, double foreground)
      : NodeKernel(std::move(info)),
        which_(which),
        radius_(std::move(radius)),
        rows_(detail::ball_rows(radius_)),
        foreground_(foreground) {}

  Box input_region(size_t /*input*/, const Box& out_box,
                   const ImageInfo& input_info) const override {
    const bool twice = which_ == Morphology::kOpen || which_ == Morphology::kClose;
    return detail::grow_clipped(out_box, twice ? detail::scaled(radius_, 2) : radius_,
                                input_info.shape);
  }

  void compute(const Box& out_box, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    const InputRegion& in = inputs[0];
    std::vector<uint8_t> mask(static_cast<size_t>(in.box.volume()));
    dispatch_dtype(in.data.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* src = in.data.as<T>();
      for (size_t i = 0; i < mask.size(); ++i) {
        mask[i] = static_cast<uint8_t>(static_cast<double>(src[i]) == foreground_);
      }
    });
    uint8_t* dst = out.mutable_as<uint8_t>();
    switch (which_) {
      case Morphology::kErode:
        detail::ball_extremum(mask.data(), in.box, dst, out_box, rows_, detail::PickMin{});
        return;
      case Morphology::kDilate:
        detail::ball_extremum(mask.data(), in.box, dst, out_box, rows_, detail::PickMax{});
        return;
      case Morphology::kOpen:
        two_steps(mask, in.box, dst, out_box, detail::PickMin{}, detail::PickMax{});
        return;
      case Morphology::kClose:
        two_steps(mask, in.box, dst, out_box, detail::PickMax{}, detail::PickMin{});
        return;
    }
  }

 private:
  template <class First, class Second>
  void two_steps(const std::vector<uint8_t>& mask, const Box& in_box, uint8_t* dst,
                 const Box& out_box, First first, Second second) const {
    // The intermediate image on out_box grown by one radius (clipped to the
    // image): exactly the voxels the second step reads.
    const Box mid_box = detail::grow_clipped(out_box, radius_, output().shape);
    std::vector<uint8_t> mid(static_cast<size_t>(mid_box.volume()));
    detail::ball_extremum(mask.data(), in_box, mid.data(), mid_box, rows_, first);
    detail::ball_extremum(mid.data(), mid_box, dst, out_box, rows_, second);
  }

  Morphology which_;
  std::vector<int64_t> radius_;
  detail::BallRows rows_;
  double foreground_;
};

class MorphologyOp final : public Op {
 public:
  explicit MorphologyOp(Morphology which) : which_(which) {}
  std::string_view name() const override { return morphology_name(which_); }
  int version() const override { return 1; }
  std::string_view doc() const override {
    switch (which_) {
      case Morphology::kErode:
        return "Binary erosion by a ball of the given radius: u8 mask, 1 where the whole ball "
               "(clipped to the image: the outside counts as foreground) is foreground.";
      case Morphology::kDilate:
        return "Binary dilation by a ball of the given radius: u8 mask, 1 where any voxel of the "
               "ball is foreground (the outside counts as background).";
      case Morphology::kOpen:
        return "Binary opening (dilate of erode) by a ball of the given radius: removes "
               "foreground smaller than the ball; u8 mask.";
      case Morphology::kClose:
        return "Binary closing (erode of dilate) by a ball of the given radius: fills "
               "background gaps smaller than the ball; u8 mask.";
    }
    return "";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"radius", ParamType::kIntOrList, Value(1),
         "ball radius in voxels: one number, or one per axis (each >= 0); the ball holds the "
         "offsets o with sum((o_d / (radius_d + 0.5))^2) <= 1"},
        {"foreground", ParamType::kFloat, Value(1.0),
         "input value that is foreground; every other value is background"},
    };
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const ImageInfo& in = inputs[0];
    auto radius = detail::get_radius(params, "radius", in.shape.rank());
    detail::check_ball_size(radius, "radius");
    const double foreground = params.get_float("foreground");
    if (!std::isfinite(foreground)) {
      throw InvalidArgument(
          fmt::format("param \"foreground\" must be a finite number (got {})", foreground));
    }
    ImageInfo info{DType::kU8, in.shape, in.cell_shape};
    return std::make_unique<MorphologyKernel>(std::move(info), which_, std::move(radius),
                                              foreground);
  }

 private:
  Morphology which_;
};

}  // namespace

std::shared_ptr<const Op> make_erode_op() {
  return std::make_shared<MorphologyOp>(Morphology::kErode);
}
std::shared_ptr<const Op> make_dilate_op() {
  return std::make_shared<MorphologyOp>(Morphology::kDilate);
}
std::shared_ptr<const Op> make_open_op() {
  return std::make_shared<MorphologyOp>(Morphology::kOpen);
}
std::shared_ptr<const Op> make_close_op() {
  return std::make_shared<MorphologyOp>(Morphology::kClose);
}

}  // namespace cellflow::nodes

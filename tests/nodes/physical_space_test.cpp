// Physical space through the graph: read.image takes spacing and origin from
// the file, gaussian/gradient_magnitude/log take sigma in physical units, ops
// that change the grid say how, and exports record it. The references are ITK
// itself: files written and read back by ITK's own reader and writer, and
// DiscreteGaussianImageFilter with UseImageSpacing on, on the whole image.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/nodes/image_export.hpp"
#include "itkDiscreteGaussianImageFilter.h"
#include "itkGradientMagnitudeImageFilter.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include "itkLaplacianImageFilter.h"
#include "itkMetaImageIOFactory.h"
#include "itkNrrdImageIOFactory.h"
#include "itkTIFFImageIOFactory.h"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using test::TempDir;
using ItkImage = itk::Image<float, 3>;

// The reference files go through ITK's own reader and writer, here, before
// cellflow loads its ITK library (which registers the IO factories it uses):
// this file registers the ones it needs itself.
const bool kItkFactories = [] {
  itk::NrrdImageIOFactory::RegisterOneFactory();
  itk::MetaImageIOFactory::RegisterOneFactory();
  itk::TIFFImageIOFactory::RegisterOneFactory();
  return true;
}();

// ITK's axis order (x, y, z): cellflow's reversed.
constexpr double kSpacingXyz[3] = {0.2, 0.2, 1.0};
constexpr double kOriginXyz[3] = {1.5, -2.25, 3.0};

/// An anisotropic random image (ITK size x=29, y=23, z=13), written by ITK.
ItkImage::Pointer write_anisotropic(const fs::path& file, const double* spacing = kSpacingXyz,
                                    const double* origin = kOriginXyz) {
  auto image = ItkImage::New();
  ItkImage::RegionType region;
  region.SetSize({29, 23, 13});
  image->SetRegions(region);
  image->Allocate();
  ItkImage::SpacingType s;
  ItkImage::PointType o;
  for (unsigned i = 0; i < 3; ++i) {
    s[i] = spacing[i];
    o[i] = origin[i];
  }
  image->SetSpacing(s);
  image->SetOrigin(o);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> value(0.0F, 100.0F);
  float* p = image->GetBufferPointer();
  for (size_t i = 0; i < region.GetNumberOfPixels(); ++i) p[i] = value(rng);
  auto writer = itk::ImageFileWriter<ItkImage>::New();
  writer->SetFileName(file.string());
  writer->SetInput(image);
  writer->Update();
  return image;
}

ItkImage::Pointer itk_read(const fs::path& file) {
  auto reader = itk::ImageFileReader<ItkImage>::New();
  reader->SetFileName(file.string());
  reader->Update();
  return reader->GetOutput();
}

/// sigma in ITK's axis order, in physical units.
ItkImage::Pointer itk_gaussian_with_spacing(const ItkImage::Pointer& in, const double* sigma_xyz) {
  using Filter = itk::DiscreteGaussianImageFilter<ItkImage, ItkImage>;
  auto filter = Filter::New();
  filter->SetInput(in);
  Filter::ArrayType variance;
  for (unsigned i = 0; i < 3; ++i) variance[i] = sigma_xyz[i] * sigma_xyz[i];
  filter->SetVariance(variance);
  filter->SetMaximumError(1e-4);
  filter->SetMaximumKernelWidth(128);
  filter->SetUseImageSpacing(true);
  filter->Update();
  return filter->GetOutput();
}

Graph reader_graph(const fs::path& file, Value gaussian_params) {
  GraphDef def;
  def.add("in", "read.image", {},
          Value(Value::Object{{"path", file.string()}, {"cell_shape", test::ints({5, 9, 12})}}));
  def.add("smooth", "gaussian", {"in"}, std::move(gaussian_params));
  def.add("half", "downsample", {"smooth"},
          Value(Value::Object{{"factors", test::ints({1, 2, 3})}}));
  return Graph::build(def, nodes::builtin_registry());
}

/// Number of voxels whose bits differ (and the largest difference).
std::pair<int64_t, double> compare(const float* a, const float* b, int64_t n) {
  int64_t differ = 0;
  double worst = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      ++differ;
      worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
    }
  }
  return {differ, worst};
}

TEST(PhysicalSpace, ReadImageCarriesSpacingAndOrigin) {
  TempDir tmp;
  for (const char* name : {"a.mha", "a.mhd", "a.nrrd"}) {
    SCOPED_TRACE(name);
    write_anisotropic(tmp / name);
    const Graph g = reader_graph(tmp / name, Value(Value::Object{{"sigma", 1.0}}));
    const Space& space = g.node("in").info.space;
    EXPECT_EQ(space.spacing, (std::vector<double>{1.0, 0.2, 0.2}));
    EXPECT_EQ(space.origin, (std::vector<double>{3.0, -2.25, 1.5}));
    EXPECT_EQ(space.axis_names, (std::vector<std::string>{"z", "y", "x"}));
    // A same-grid op keeps it; downsample scales spacing and centres the origin
    // on the first block.
    EXPECT_EQ(g.node("smooth").info.space, space);
    const Space& half = g.node("half").info.space;
    EXPECT_EQ(half.spacing, (std::vector<double>{1.0, 0.4, 0.6000000000000001}));
    EXPECT_DOUBLE_EQ(half.origin[1], -2.25 + 0.5 * 0.2);
    EXPECT_DOUBLE_EQ(half.origin[2], 1.5 + 1.0 * 0.2);
  }
}

TEST(PhysicalSpace, GaussianWithPhysicalSigmaEqualsItkWithImageSpacing) {
  TempDir tmp;
  const fs::path file = tmp / "aniso.mha";
  const ItkImage::Pointer written = write_anisotropic(file);
  const double sigma_xyz[3] = {0.7, 0.5, 2.0};
  const ItkImage::Pointer expected = itk_gaussian_with_spacing(itk_read(file), sigma_xyz);
  const int64_t n = static_cast<int64_t>(expected->GetLargestPossibleRegion().GetNumberOfPixels());
  for (const char* engine : {"native", "itk"}) {
    SCOPED_TRACE(engine);
    const Graph g = reader_graph(file, Value(Value::Object{{"sigma", test::floats({2.0, 0.5, 0.7})},
                                                           {"units", "physical"},
                                                           {"engine", engine}}));
    auto img = g.image("smooth");
    const CellBuffer got = img->read(img->grid().bounds());
    ASSERT_EQ(got.num_elements(), n);
    const auto [differ, worst] = compare(got.as<float>(), expected->GetBufferPointer(), n);
    EXPECT_EQ(differ, 0) << "voxels differ from ITK's filter with image spacing on (largest "
                         << worst << ")";
  }
  // The same sigma in voxels is a different filter: the spacing was used.
  const Graph voxels =
      reader_graph(file, Value(Value::Object{{"sigma", test::floats({2.0, 0.5, 0.7})}}));
  auto img = voxels.image("smooth");
  const CellBuffer in_voxels = img->read(img->grid().bounds());
  EXPECT_GT(compare(in_voxels.as<float>(), expected->GetBufferPointer(), n).first, n / 2);
}

/// Largest |a - b| relative to the largest |b|.
double relative_error(const float* a, const float* b, int64_t n) {
  double worst = 0.0;
  double scale = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return worst / scale;
}

// Derivatives per physical unit: ITK's GradientMagnitude and Laplacian
// filters with image spacing on, applied to ITK's smoothed image. Not bit for
// bit (ITK's operators sum in another order), hence the tolerance of float
// rounding over a few terms.
TEST(PhysicalSpace, DerivativesArePerPhysicalUnitAsItksWithImageSpacing) {
  TempDir tmp;
  const fs::path file = tmp / "aniso.mha";
  write_anisotropic(file);
  const double sigma_xyz[3] = {0.6, 0.4, 1.5};
  const ItkImage::Pointer smooth = itk_gaussian_with_spacing(itk_read(file), sigma_xyz);

  auto gradient = itk::GradientMagnitudeImageFilter<ItkImage, ItkImage>::New();
  gradient->SetInput(smooth);
  gradient->SetUseImageSpacing(true);
  gradient->Update();
  auto laplacian = itk::LaplacianImageFilter<ItkImage, ItkImage>::New();
  laplacian->SetInput(smooth);
  laplacian->SetUseImageSpacing(true);
  laplacian->Update();
  const int64_t n = static_cast<int64_t>(smooth->GetLargestPossibleRegion().GetNumberOfPixels());

  GraphDef def;
  def.add("in", "read.image", {},
          Value(Value::Object{{"path", file.string()}, {"cell_shape", test::ints({4, 10, 8})}}));
  const Value params(
      Value::Object{{"sigma", test::floats({1.5, 0.4, 0.6})}, {"units", "physical"}});
  def.add("grad", "gradient_magnitude", {"in"}, params);
  def.add("log", "log", {"in"}, params);
  const Graph g = Graph::build(def, nodes::builtin_registry());
  const auto whole = [&](const char* id) {
    auto img = g.image(id);
    return img->read(img->grid().bounds());
  };
  const CellBuffer grad = whole("grad");
  const CellBuffer log = whole("log");
  EXPECT_LT(relative_error(grad.as<float>(), gradient->GetOutput()->GetBufferPointer(), n), 1e-5);
  EXPECT_LT(relative_error(log.as<float>(), laplacian->GetOutput()->GetBufferPointer(), n), 1e-5);
}

TEST(PhysicalSpace, PhysicalSigmaEntersTheHashThroughTheSpacing) {
  TempDir tmp;
  const double other_spacing[3] = {0.2, 0.2, 2.0};
  write_anisotropic(tmp / "a.mha");
  write_anisotropic(tmp / "b.mha", other_spacing);
  const Value physical(Value::Object{{"sigma", 1.0}, {"units", "physical"}});
  const Graph a = reader_graph(tmp / "a.mha", physical);
  const Graph b = reader_graph(tmp / "b.mha", physical);
  const Value* identity = a.node("smooth").definition.find("identity");
  ASSERT_NE(identity, nullptr);
  EXPECT_EQ(identity->as_string(), "spacing 1 0.20000000000000001 0.20000000000000001");
  EXPECT_NE(a.node("smooth").hash, b.node("smooth").hash);
  // In voxels the spacing is no part of the result, nor of the identity.
  const Graph v = reader_graph(tmp / "a.mha", Value(Value::Object{{"sigma", 1.0}}));
  EXPECT_EQ(v.node("smooth").definition.find("identity"), nullptr);
}

TEST(PhysicalSpace, ExportsRecordSpacingAndOrigin) {
  TempDir tmp;
  const fs::path file = tmp / "aniso.nrrd";
  write_anisotropic(file);
  const Graph g = reader_graph(file, Value(Value::Object{{"sigma", 1.0}, {"units", "physical"}}));
  for (const char* node : {"smooth", "half"}) {
    const Space& space = g.node(node).info.space;
    nodes::ExportOptions options;
    options.space = space;
    for (const char* ext : {".nrrd", ".mha", ".mhd", ".tif"}) {
      SCOPED_TRACE(std::string(node) + ext);
      const fs::path out = tmp / (std::string(node) + ext);
      nodes::export_image(*g.image(node), out, options);
      const ItkImage::Pointer back = itk_read(out);
      const bool tiff = std::string(ext) == ".tif";
      for (unsigned i = 0; i < 3; ++i) {
        const size_t axis = 2 - i;
        // TIFF records the resolution of a page (x and y), not the distance
        // between pages nor an origin.
        if (tiff && i == 2) continue;
        EXPECT_NEAR(back->GetSpacing()[i], space.spacing[axis], 1e-6 * space.spacing[axis])
            << "ITK axis " << i;
        if (!tiff) EXPECT_DOUBLE_EQ(back->GetOrigin()[i], space.origin[axis]) << "ITK axis " << i;
      }
    }
  }
}

TEST(PhysicalSpace, RotatedAxesAreRefusedUnlessIgnored) {
  TempDir tmp;
  const fs::path file = tmp / "rotated.mha";
  ItkImage::Pointer image = write_anisotropic(file);
  ItkImage::DirectionType direction;
  direction.Fill(0.0);
  direction[0][1] = 1.0;
  direction[1][0] = -1.0;
  direction[2][2] = 1.0;
  image->SetDirection(direction);
  auto writer = itk::ImageFileWriter<ItkImage>::New();
  writer->SetFileName(file.string());
  writer->SetInput(image);
  writer->Update();

  GraphDef def;
  def.add("in", "read.image", {}, Value(Value::Object{{"path", file.string()}}));
  try {
    (void)Graph::build(def, nodes::builtin_registry());
    ADD_FAILURE() << "a rotated image was read without a word";
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rotated.mha"), std::string::npos) << what;
    EXPECT_NE(what.find("\"direction\""), std::string::npos) << what;
  }
  GraphDef ignored;
  ignored.add("in", "read.image", {},
              Value(Value::Object{{"path", file.string()}, {"direction", "ignore"}}));
  const Graph g = Graph::build(ignored, nodes::builtin_registry());
  EXPECT_EQ(g.node("in").info.space.spacing, (std::vector<double>{1.0, 0.2, 0.2}));
}

TEST(PhysicalSpace, InputsOfOneShapeMustShareAGrid) {
  const auto blobs = [](Value spacing) {
    Value p(Value::Object{
        {"shape", test::ints({8, 8, 8})}, {"cell_shape", test::ints({4, 4, 4})}, {"count", 2}});
    if (!spacing.is_null()) p.set("spacing", std::move(spacing));
    return p;
  };
  GraphDef def;
  def.add("a", "synthetic.blobs", {}, blobs(test::floats({1.0, 0.5, 0.5})));
  def.add("b", "synthetic.blobs", {}, blobs(Value()));
  def.add("sum", "add", {"a", "b"}, Value::object());
  try {
    (void)Graph::build(def, nodes::builtin_registry());
    ADD_FAILURE() << "inputs on different grids were combined";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("\"sum\""), std::string::npos) << what;
    EXPECT_NE(what.find("different grids"), std::string::npos) << what;
  }
  GraphDef same;
  same.add("a", "synthetic.blobs", {}, blobs(test::floats({1.0, 0.5, 0.5})));
  same.add("b", "synthetic.blobs", {}, blobs(test::floats({1.0, 0.5, 0.5})));
  same.add("sum", "add", {"a", "b"}, Value::object());
  const Graph g = Graph::build(same, nodes::builtin_registry());
  EXPECT_EQ(g.node("sum").info.space.spacing, (std::vector<double>{1.0, 0.5, 0.5}));
}

TEST(PhysicalSpace, BadSpaceParamsAreRefusedNamingTheParam) {
  const auto build = [](const char* name, Value v) {
    GraphDef def;
    Value p(Value::Object{{"shape", test::ints({8, 8})}, {"cell_shape", test::ints({4, 4})}});
    p.set(name, std::move(v));
    def.add("a", "synthetic.blobs", {}, p);
    return Graph::build(def, nodes::builtin_registry());
  };
  for (const auto& [name, value] :
       std::vector<std::pair<const char*, Value>>{{"spacing", Value(0.0)},
                                                  {"spacing", test::floats({1.0, -1.0})},
                                                  {"unit", Value("micrometre")},
                                                  {"spacing", test::floats({1.0, 1.0, 1.0})}}) {
    try {
      (void)build(name, value);
      ADD_FAILURE() << name << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("\"") + name + "\""), std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(build("unit", Value("micrometer")).node("a").info.space.units,
            (std::vector<std::string>{"micrometer", "micrometer"}));
}

}  // namespace
}  // namespace cellflow

// CacheDirectory: the on-disk layout contract of DESIGN.md.
#include "cellflow/cache/cache_directory.hpp"

#include <gtest/gtest.h>

#include <string>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/value.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

using test::TempDir;
namespace fs = std::filesystem;

const std::string kHash = "0123456789abcdef0123456789abcdef";

TEST(CacheDirectory, LayoutOfANode) {
  TempDir tmp;
  const fs::path root = tmp / "cache";
  CacheDirectory cache(root);
  EXPECT_EQ(cache.root(), root);
  const Value format = parse_json(test::read_all(root / "cellflow-cache.json"));
  EXPECT_EQ(format.find("format")->as_int(), 2);

  EXPECT_FALSE(cache.node_exists(kHash));
  const CellGrid grid({20, 30, 40}, {8, 16, 16});
  const std::string def = R"({"op":"gaussian","version":1,"params":{"sigma":2.0}})";
  auto arr = cache.open_node(kHash, DType::kF32, grid, def);
  EXPECT_TRUE(cache.node_exists(kHash));
  EXPECT_EQ(cache.node_path(kHash), root / kHash);
  EXPECT_EQ(arr->path(), root / kHash / "0");
  EXPECT_TRUE(fs::exists(root / kHash / ".zgroup"));
  EXPECT_TRUE(fs::exists(root / kHash / "0" / ".zarray"));
  EXPECT_EQ(parse_json(test::read_all(root / kHash / ".zgroup")).find("zarr_format")->as_int(), 2);

  const Value attrs = parse_json(test::read_all(root / kHash / ".zattrs"));
  const Value* ms = attrs.find("multiscales");
  ASSERT_NE(ms, nullptr);
  ASSERT_TRUE(ms->is_array());
  ASSERT_EQ(ms->as_array().size(), 1u);
  const Value& m = ms->as_array()[0];
  EXPECT_EQ(m.find("version")->as_string(), "0.4");
  ASSERT_EQ(m.find("axes")->as_array().size(), 3u);
  EXPECT_EQ(m.find("axes")->as_array()[0].find("name")->as_string(), "z");
  EXPECT_EQ(m.find("axes")->as_array()[2].find("name")->as_string(), "x");
  EXPECT_EQ(m.find("axes")->as_array()[2].find("type")->as_string(), "space");
  ASSERT_EQ(m.find("datasets")->as_array().size(), 1u);
  const Value& ds = m.find("datasets")->as_array()[0];
  EXPECT_EQ(ds.find("path")->as_string(), "0");
  const Value& ct = ds.find("coordinateTransformations")->as_array().at(0);
  EXPECT_EQ(ct.find("type")->as_string(), "scale");
  EXPECT_EQ(ct.find("scale")->as_array().size(), 3u);
  const Value* cf = attrs.find("cellflow");
  ASSERT_NE(cf, nullptr);
  EXPECT_EQ(*cf, parse_json(def));

  EXPECT_FALSE(cache.is_complete(kHash));
  cache.mark_complete(kHash);
  EXPECT_TRUE(cache.is_complete(kHash));
  EXPECT_TRUE(fs::exists(root / kHash / ".cellflow-complete"));

  // Opening again (another process, say) keeps what is there.
  arr->write({0, 0, 0}, CellBuffer::zeros(DType::kF32, {8, 16, 16}));
  const auto before = test::snapshot(root);
  CacheDirectory again(root);
  auto arr2 = again.open_node(kHash, DType::kF32, grid, def);
  EXPECT_TRUE(arr2->contains({0, 0, 0}));
  EXPECT_EQ(test::snapshot(root), before);
}

TEST(CacheDirectory, ZattrsForOtherRanks) {
  const Value two = parse_json(node_zattrs_json("n", 2, "{}"));
  const auto& axes2 = two.find("multiscales")->as_array()[0].find("axes")->as_array();
  ASSERT_EQ(axes2.size(), 2u);
  EXPECT_EQ(axes2[0].find("name")->as_string(), "y");
  EXPECT_EQ(axes2[1].find("name")->as_string(), "x");
  const Value five = parse_json(node_zattrs_json("n", 5, "{}"));
  const auto& axes5 = five.find("multiscales")->as_array()[0].find("axes")->as_array();
  ASSERT_EQ(axes5.size(), 5u);
  EXPECT_EQ(axes5[0].find("type")->as_string(), "time");
  EXPECT_EQ(axes5[1].find("type")->as_string(), "channel");
  // Rank 1 has no NGFF multiscales but keeps the definition.
  const Value one = parse_json(node_zattrs_json("n", 1, R"({"op":"x"})"));
  EXPECT_EQ(one.find("cellflow")->find("op")->as_string(), "x");
}

TEST(CacheDirectory, RefusesAForeignFormat) {
  TempDir tmp;
  test::write_all(tmp / "cache" / "cellflow-cache.json", "{\"format\": 99}\n");
  EXPECT_THROW(CacheDirectory(tmp / "cache"), InvalidArgument);
  test::write_all(tmp / "cache2" / "cellflow-cache.json", "not json");
  EXPECT_THROW(CacheDirectory(tmp / "cache2"), InvalidArgument);
}

TEST(CacheDirectory, DefaultRootFollowsEnvironment) {
  ::setenv("CELLFLOW_CACHE", "/tmp/some-cellflow-cache", 1);
  EXPECT_EQ(CacheDirectory::default_root(), fs::path("/tmp/some-cellflow-cache"));
  ::unsetenv("CELLFLOW_CACHE");
  EXPECT_EQ(CacheDirectory::default_root(), fs::path("cellflow-cache"));
}

}  // namespace
}  // namespace cellflow

// Hostile inputs through the real CLI (issue 13): truncated files, numbers
// that overflow, unwritable output streams, FIFOs where files belong, control
// characters, and exports that must be all or nothing.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "fault_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

/// A graph of one synthetic image (u16, 24 x 40 x 48 in 8 x 16 x 16 cells).
std::string synthetic_graph() {
  return R"({"cellflow": 1, "nodes": [
  {"id": "raw", "op": "synthetic.blobs",
   "params": {"shape": [24, 40, 48], "cell_shape": [8, 16, 16], "dtype": "u16", "seed": 9}}
], "outputs": ["raw"]}
)";
}

/// A graph reading `file` (cells of 8 x 16 x 16) and smoothing it.
std::string read_graph(const fs::path& file) {
  return R"({"cellflow": 1, "nodes": [
  {"id": "img", "op": "read.image", "params": {"path": )" +
         to_json_compact(Value(file.string())) + R"(, "cell_shape": [8, 16, 16]}},
  {"id": "smooth", "op": "gaussian", "inputs": ["img"], "params": {"sigma": 1}}
], "outputs": ["smooth"]}
)";
}

/// Exports the synthetic image to `to`; returns true on success.
bool export_synthetic(const TempDir& tmp, const fs::path& to) {
  const fs::path g = write_graph(tmp, "synthetic.json", synthetic_graph());
  const CommandResult r = run_cli(
      {"export", g.string(), "raw", "--to", to.string(), "--cache", (tmp / "src-cache").string()},
      tmp.path());
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  return r.exit_code == 0;
}

/// Files under `cache` that belong to a node (anything in a sub-folder).
std::vector<std::string> node_entries(const fs::path& cache) {
  std::vector<std::string> out;
  for (const auto& [rel, bytes] : snapshot(cache)) {
    if (rel.find('/') != std::string::npos) out.push_back(rel);
  }
  return out;
}

void expect_refused_whole(const TempDir& tmp, const fs::path& image, const fs::path& named) {
  SCOPED_TRACE(image.string());
  const fs::path g = write_graph(tmp, "read.json", read_graph(image));
  const fs::path cache = tmp / ("cache-" + image.filename().string());
  const CommandResult r =
      run_cli({"run", g.string(), "--cache", cache.string(), "--quiet"}, tmp.path());
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(named.string()), std::string::npos) << "should name the file: " << r.err;
  EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;
  EXPECT_EQ(node_entries(cache), std::vector<std::string>{}) << "nothing cached for the node";
}

TEST(CliHostile, TruncatedImageFilesFailNamingTheFile) {
  TempDir tmp;
  for (const char* ext : {".mha", ".tif", ".nrrd"}) {
    const fs::path file = tmp / (std::string("img") + ext);
    ASSERT_TRUE(export_synthetic(tmp, file));
    // The whole file reads; the same file cut short does not.
    const fs::path g = write_graph(tmp, "whole.json", read_graph(file));
    const CommandResult ok = run_cli(
        {"run", g.string(), "--cache", (tmp / "whole-cache").string(), "--quiet"}, tmp.path());
    ASSERT_EQ(ok.exit_code, 0) << describe(ok);
    fs::resize_file(file, fs::file_size(file) * 3 / 4);
    expect_refused_whole(tmp, file, file);
  }
}

TEST(CliHostile, MetaImageWithShortDataFileFails) {
  TempDir tmp;
  const fs::path mha = tmp / "img.mha";
  ASSERT_TRUE(export_synthetic(tmp, mha));
  // A detached header (.mhd) pointing at a data file one row short.
  const std::string text = read_all(mha);
  const size_t at = text.find("ElementDataFile = LOCAL\n");
  ASSERT_NE(at, std::string::npos) << text.substr(0, 400);
  const size_t data_at = at + std::string("ElementDataFile = LOCAL\n").size();
  write_all(tmp / "img.mhd", text.substr(0, at) + "ElementDataFile = img-data.raw\n");
  write_all(tmp / "img-data.raw", text.substr(data_at, text.size() - data_at - 48 * 2));
  expect_refused_whole(tmp, tmp / "img.mhd", tmp / "img-data.raw");
}

/// A Zarr v2 array (u8, 4 x 8 in 4 x 4 chunks, uncompressed or zlib).
void write_zarr(const fs::path& dir, const std::string& compressor) {
  write_all(dir / ".zarray", R"({"zarr_format": 2, "shape": [4, 8], "chunks": [4, 4],
    "dtype": "|u1", "compressor": )" +
                                 compressor +
                                 R"(, "fill_value": 0, "order": "C", "filters": null})");
}

TEST(CliHostile, TruncatedZarrChunkFails) {
  TempDir tmp;
  const fs::path arr = tmp / "a.zarr";
  write_zarr(arr, "null");
  write_all(arr / "0.0", std::string(16, '\x07'));
  write_all(arr / "0.1", std::string(10, '\x07'));  // 6 bytes short
  const fs::path g = write_graph(tmp, "z.json",
                                 R"({"cellflow": 1, "nodes": [
    {"id": "z", "op": "read.zarr", "params": {"path": ")" +
                                     arr.string() + R"("}}],
    "outputs": ["z"]})");
  const fs::path cache = tmp / "cache";
  const CommandResult r =
      run_cli({"run", g.string(), "--cache", cache.string(), "--quiet"}, tmp.path());
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find((arr / "0.1").string()), std::string::npos) << r.err;
  for (const auto& rel : node_entries(cache))
    EXPECT_EQ(rel.find("/0/0/1"), std::string::npos) << "the short chunk was cached: " << rel;
}

}  // namespace
}  // namespace cellflow::test

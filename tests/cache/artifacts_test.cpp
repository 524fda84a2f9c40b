// Tests of ArtifactWriter (cache/src/artifacts.cpp): atomic text, CSV and PNG
// files, logs, name checks, the thread's current writer and the warnings.log
// hook of cellflow::log().
#include "cellflow/cache/artifacts.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "cellflow/cache/cache_tree.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/store/layout.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

uint32_t be32(const std::string& s, size_t at) {
  return (static_cast<uint32_t>(static_cast<unsigned char>(s[at])) << 24) |
         (static_cast<uint32_t>(static_cast<unsigned char>(s[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<unsigned char>(s[at + 2])) << 8) |
         static_cast<uint32_t>(static_cast<unsigned char>(s[at + 3]));
}

struct DecodedPng {
  uint32_t width = 0, height = 0;
  int depth = 0, color = -1;
  std::string raw;  // inflated scanlines
  bool crc_ok = true;
};

// A minimal PNG reader for the checks: chunks, CRCs, IHDR, inflated IDAT.
DecodedPng decode(const std::string& png) {
  DecodedPng d;
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  std::string idat;
  for (size_t at = 8; at + 12 <= png.size();) {
    const uint32_t len = be32(png, at);
    const std::string type = png.substr(at + 4, 4);
    const std::string data = png.substr(at + 8, len);
    const uint32_t crc = be32(png, at + 8 + len);
    const auto* p = reinterpret_cast<const Bytef*>(png.data() + at + 4);
    if (crc32(0L, p, len + 4) != crc) d.crc_ok = false;
    if (type == "IHDR") {
      d.width = be32(data, 0);
      d.height = be32(data, 4);
      d.depth = static_cast<unsigned char>(data[8]);
      d.color = static_cast<unsigned char>(data[9]);
    } else if (type == "IDAT") {
      idat += data;
    }
    at += 12 + len;
  }
  uLongf size = 64 << 20;
  d.raw.resize(size);
  EXPECT_EQ(uncompress(reinterpret_cast<Bytef*>(d.raw.data()), &size,
                       reinterpret_cast<const Bytef*>(idat.data()), idat.size()),
            Z_OK);
  d.raw.resize(size);
  return d;
}

TEST(ArtifactsTest, WritesTextTablesAndLogsCreatingTheFolder) {
  TempDir tmp;
  const ArtifactWriter w(tmp / "node" / "artifacts");
  EXPECT_TRUE(w.list().empty());
  w.write_text("notes.txt", "hello\n");
  Table t({"label", "volume"});
  t.add_row(std::vector<double>{1, 27});
  t.add_row(std::vector<double>{2, 0.5});
  w.write_table("stats", t);
  w.append_log("run.log", "first");
  w.append_log("run.log", "second");
  EXPECT_EQ(test::read_all(tmp / "node/artifacts/notes.txt"), "hello\n");
  EXPECT_EQ(test::read_all(tmp / "node/artifacts/stats.csv"), t.to_csv());
  EXPECT_EQ(test::read_all(tmp / "node/artifacts/run.log"), "first\nsecond\n");
  const auto list = w.list();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].name, "notes.txt");
  EXPECT_EQ(list[0].bytes, 6u);
  EXPECT_EQ(list[1].name, "run.log");
  EXPECT_EQ(list[2].name, "stats.csv");
  // Rewriting replaces the file whole and leaves no temporary files behind;
  // the folder keeps only the log lock beside the artifacts.
  w.write_text("notes.txt", "bye\n");
  EXPECT_EQ(test::read_all(tmp / "node/artifacts/notes.txt"), "bye\n");
  const std::vector<std::string> names = test::listing(tmp / "node/artifacts");
  EXPECT_EQ(names.size(), 4u);
  EXPECT_TRUE(std::find(names.begin(), names.end(), std::string(layout::kLogLock)) != names.end());
}

TEST(ArtifactsTest, RejectsNamesThatAreNotPlainFileNames) {
  TempDir tmp;
  const ArtifactWriter w(tmp.path());
  for (const char* bad : {"", "../x", "a/b", ".hidden", "/abs"}) {
    EXPECT_THROW(w.write_text(bad, "x"), InvalidArgument) << bad;
  }
  try {
    w.write_text("../escape", "x");
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("\"../escape\""), std::string::npos) << e.what();
  }
}

TEST(ArtifactsTest, PngOfU8AndU16Images) {
  TempDir tmp;
  const ArtifactWriter w(tmp.path());
  CellBuffer img = CellBuffer::allocate(DType::kU8, Shape{3, 5});
  for (int i = 0; i < 15; ++i) img.mutable_as<uint8_t>()[i] = static_cast<uint8_t>(i * 17);
  w.write_png("gray", img);
  const DecodedPng d = decode(test::read_all(tmp / "gray.png"));
  EXPECT_TRUE(d.crc_ok);
  EXPECT_EQ(d.width, 5u);
  EXPECT_EQ(d.height, 3u);
  EXPECT_EQ(d.depth, 8);
  EXPECT_EQ(d.color, 0);
  ASSERT_EQ(d.raw.size(), 3u * 6u);
  for (int y = 0; y < 3; ++y) {
    EXPECT_EQ(d.raw[static_cast<size_t>(y * 6)], 0) << "filter byte";
    for (int x = 0; x < 5; ++x)
      EXPECT_EQ(static_cast<unsigned char>(d.raw[static_cast<size_t>(y * 6 + 1 + x)]),
                (y * 5 + x) * 17);
  }

  CellBuffer wide = CellBuffer::allocate(DType::kU16, Shape{2, 2});
  const uint16_t values[] = {0, 258, 65535, 4660};
  std::memcpy(wide.mutable_data(), values, sizeof values);
  w.write_png("wide.png", wide);
  const DecodedPng d16 = decode(test::read_all(tmp / "wide.png"));
  EXPECT_EQ(d16.depth, 16);
  ASSERT_EQ(d16.raw.size(), 2u * 5u);
  EXPECT_EQ(static_cast<unsigned char>(d16.raw[3]), 0x01);  // 258 big-endian
  EXPECT_EQ(static_cast<unsigned char>(d16.raw[4]), 0x02);
  EXPECT_EQ(static_cast<unsigned char>(d16.raw[6]), 0xff);

  EXPECT_THROW(w.write_png("f", CellBuffer::zeros(DType::kF32, Shape{2, 2})), InvalidArgument);
  EXPECT_THROW(w.write_png("v", CellBuffer::zeros(DType::kU8, Shape{2, 2, 2})), InvalidArgument);
}

TEST(ArtifactsTest, WarningsGoToTheCurrentWritersLog) {
  TempDir tmp;
  const LogSink previous = set_log_sink([](LogLevel, const std::string&) {});
  const ArtifactWriter outer(tmp / "outer");
  const ArtifactWriter inner(tmp / "inner");
  log_warning("before any writer");
  {
    const ScopedArtifacts a(&outer);
    EXPECT_EQ(current_artifacts(), &outer);
    log_warning("one");
    {
      const ScopedArtifacts b(&inner);
      log_warning("two");
      log(LogLevel::kInfo, "info is not kept");
      // Another thread has no current writer.
      std::thread([] { EXPECT_EQ(current_artifacts(), nullptr); }).join();
    }
    log(LogLevel::kError, "three");
  }
  EXPECT_EQ(current_artifacts(), nullptr);
  log_warning("after");
  set_log_sink(previous);
  const std::string o = test::read_all(tmp / "outer/warnings.log");
  const std::string i = test::read_all(tmp / "inner/warnings.log");
  EXPECT_NE(o.find("warning: one\n"), std::string::npos) << o;
  EXPECT_NE(o.find("error: three\n"), std::string::npos) << o;
  EXPECT_EQ(o.find("two"), std::string::npos) << o;
  EXPECT_NE(i.find("warning: two\n"), std::string::npos) << i;
  EXPECT_EQ(i.find("info"), std::string::npos) << i;
}

// A cache-tree step saves an intermediate volume the way cvpl_tools steps do:
// an OME-Zarr group that zarr-python (and napari) open.
TEST(ArtifactsTest, ATreeStepWritesAnImageAsOmeZarrThatZarrPythonReads) {
  test::TempDir tmp;
  CacheTree root(tmp / "tree");
  CacheTree step = root.child("segment");
  CellBuffer image = CellBuffer::allocate(DType::kU16, Shape{5, 70, 90});
  uint16_t* p = image.mutable_as<uint16_t>();
  for (int64_t i = 0; i < image.num_elements(); ++i) p[i] = static_cast<uint16_t>(i * 7 % 65521);
  step.writer().write_image("labels", image);
  EXPECT_THROW(step.writer().write_image("flat", CellBuffer::allocate(DType::kU8, Shape{4})),
               InvalidArgument);
  step.commit();
  const fs::path group = tmp / "tree" / "segment" / "labels.ome.zarr";
  ASSERT_TRUE(fs::is_directory(group / "0"));
  const std::string script = R"(
import sys, zarr, json
g = zarr.open_group(sys.argv[1], mode="r")
ms = g.attrs["multiscales"][0]
a = g[ms["datasets"][0]["path"]][:]
print(a.shape, a.dtype, int(a.astype("uint64").sum()), ms["version"], len(ms["axes"]))
)";
  const test::CommandResult r =
      test::run_command({CELLFLOW_PYTHON, "-c", script, group.string()}, tmp.path());
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  uint64_t sum = 0;
  for (int64_t i = 0; i < image.num_elements(); ++i) sum += p[i];
  EXPECT_EQ(r.out, fmt::format("(5, 70, 90) uint16 {} 0.4 3\n", sum));
  // Rewriting replaces it whole; no temporary is left.
  step.writer().write_image("labels.ome.zarr", image);
  for (const auto& e : fs::directory_iterator(tmp / "tree" / "segment"))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

}  // namespace
}  // namespace cellflow

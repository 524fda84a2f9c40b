// Relative `path` params of read.image and read.zarr in a graph file are taken
// from the graph file's folder, whatever the current directory; else from the
// current directory (older graphs); else an error naming both. The node hash
// does not depend on where the graph file lies when the data is hashed by content.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "cli_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

/// A 3 x 4 x 5 u16 image as raw little-endian NRRD (value i at linear index i).
void write_nrrd(const fs::path& file) {
  std::string text =
      "NRRD0004\ntype: uint16\ndimension: 3\nsizes: 5 4 3\nendian: little\nencoding: raw\n\n";
  for (int i = 0; i < 60; ++i) {
    text += static_cast<char>((i * 7) & 0xff);
    text += static_cast<char>((i * 7) >> 8);
  }
  write_all(file, text);
}

/// A 4 x 6 u8 Zarr v2 array, uncompressed, one chunk (value 100 + i at linear index i).
void write_zarr(const fs::path& dir) {
  fs::create_directories(dir);
  write_all(dir / ".zarray",
            R"({"zarr_format": 2, "shape": [4, 6], "chunks": [4, 6], "dtype": "|u1",)"
            R"( "compressor": null, "fill_value": 0, "order": "C", "filters": null})");
  std::string chunk;
  for (int i = 0; i < 24; ++i) chunk += static_cast<char>(100 + i);
  write_all(dir / "0.0", chunk);
}

// The readers persist ("persist": true): these tests check what the cache holds.
std::string reader_graph(const std::string& image_path, const std::string& zarr_path,
                         const std::string& hash = "stat") {
  return R"({
  "cellflow": 1,
  "nodes": [
    {"id": "image", "op": "read.image", "persist": true, "params": {"path": ")" +
         image_path + R"(", "hash": ")" + hash + R"("}},
    {"id": "array", "op": "read.zarr", "persist": true, "params": {"path": ")" +
         zarr_path + R"(", "hash": ")" + hash + R"("}}
  ]
}
)";
}

/// Runs the CLI with `cwd` as its current directory.
CommandResult run_cli_in(const fs::path& cwd, const std::vector<std::string>& args,
                         const TempDir& tmp) {
  std::vector<std::string> argv{"env", "--chdir=" + cwd.string(), CELLFLOW_CLI};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, tmp.path());
}

void expect_values(const Graph& g) {
  const CellBuffer image = read_whole(g, "image");
  ASSERT_EQ(image.shape(), (Shape{3, 4, 5}));
  for (int i = 0; i < 60; ++i) ASSERT_EQ(image.as<uint16_t>()[i], i * 7) << i;
  const CellBuffer array = read_whole(g, "array");
  ASSERT_EQ(array.shape(), (Shape{4, 6}));
  for (int i = 0; i < 24; ++i) ASSERT_EQ(array.as<uint8_t>()[i], 100 + i) << i;
}

TEST(CliReaderPaths, RelativePathsAreTakenFromTheGraphFilesFolder) {
  TempDir tmp;
  const fs::path project = tmp / "project";
  const fs::path elsewhere = tmp / "elsewhere";
  fs::create_directories(project / "data");
  fs::create_directories(elsewhere);
  write_nrrd(project / "data" / "image.nrrd");
  write_zarr(project / "data" / "array.zarr");
  const std::string json = reader_graph("data/image.nrrd", "data/array.zarr");
  const fs::path graph = write_graph(tmp, "project/graph.json", json);
  const fs::path cache = tmp / "cache";

  // From another folder, naming the graph by an absolute path...
  const CommandResult r = run_cli_in(elsewhere,
                                     {"run", graph.string(), "--cache", cache.string(),
                                      "--summary-json", (tmp / "s.json").string(), "--quiet"},
                                     tmp);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const Summary s = read_summary(tmp / "s.json");
  EXPECT_EQ(s.get("image", "cells_computed"), 1);
  EXPECT_EQ(s.get("array", "cells_computed"), 1);

  // ...and by a relative one: the same nodes (same hashes), all loaded from the cache.
  const CommandResult again = run_cli_in(tmp.path(),
                                         {"run", "project/graph.json", "--cache", cache.string(),
                                          "--summary-json", (tmp / "s2.json").string(), "--quiet"},
                                         tmp);
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  const Summary s2 = read_summary(tmp / "s2.json");
  for (const std::string id : {"image", "array"}) {
    EXPECT_EQ(s2.str(id, "hash"), s.str(id, "hash")) << id;
    EXPECT_EQ(s2.get(id, "cells_computed"), 0) << id;
  }

  // What the CLI stored is the files' data (this process's cwd is neither folder).
  GraphOptions options;
  options.cache_root = cache;
  const Graph cached =
      Graph::build(load_graph_file(graph.string()), nodes::builtin_registry(), options);
  EXPECT_EQ(cached.node("image").hash, s.str("image", "hash"));
  expect_values(cached);
  EXPECT_EQ(cached.image("image")->stats().computed, 0);
  EXPECT_EQ(cached.image("array")->stats().computed, 0);

  // The stored graph keeps the path as written.
  EXPECT_EQ(save_graph(load_graph_file(graph.string())), save_graph(parse_graph(json)));
}

TEST(CliReaderPaths, PathsFromTheCurrentDirectoryStillWork) {
  TempDir tmp;
  fs::create_directories(tmp / "data");
  write_nrrd(tmp / "data" / "image.nrrd");
  write_zarr(tmp / "data" / "array.zarr");
  // Nothing next to the graph file: the current directory (tmp) has the data.
  const fs::path graph =
      write_graph(tmp, "graphs/g.json", reader_graph("data/image.nrrd", "data/array.zarr"));
  const CommandResult r = run_cli_in(
      tmp.path(), {"run", graph.string(), "--cache", (tmp / "cache").string(), "--quiet"}, tmp);
  EXPECT_EQ(r.exit_code, 0) << describe(r);

  // An absolute path hashes as it did in a graph built in code.
  const std::string abs_json =
      reader_graph((tmp / "data" / "image.nrrd").string(), (tmp / "data" / "array.zarr").string());
  const fs::path abs_graph = write_graph(tmp, "graphs/abs.json", abs_json);
  const Graph from_file =
      Graph::build(load_graph_file(abs_graph.string()), nodes::builtin_registry());
  const Graph in_code = Graph::build(parse_graph(abs_json), nodes::builtin_registry());
  for (const std::string id : {"image", "array"})
    EXPECT_EQ(from_file.node(id).hash, in_code.node(id).hash) << id;
  expect_values(from_file);
}

TEST(CliReaderPaths, MissingEverywhereNamesBothPaths) {
  TempDir tmp;
  fs::create_directories(tmp / "elsewhere");
  write_zarr(tmp / "project" / "array.zarr");
  const fs::path graph =
      write_graph(tmp, "project/graph.json", reader_graph("data/missing.nrrd", "array.zarr"));
  const fs::path cache = tmp / "cache";
  const CommandResult r = run_cli_in(
      tmp / "elsewhere", {"run", graph.string(), "--cache", cache.string(), "--quiet"}, tmp);
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  for (const std::string& part :
       {graph.string(), std::string("node \"image\""), std::string("param \"path\""),
        std::string("\"data/missing.nrrd\""), (tmp / "project" / "data" / "missing.nrrd").string(),
        (tmp / "elsewhere" / "data" / "missing.nrrd").string()}) {
    EXPECT_NE(r.err.find(part), std::string::npos) << "missing '" << part << "' in: " << r.err;
  }
  EXPECT_FALSE(fs::exists(cache)) << "an invalid graph writes nothing";
}

TEST(CliReaderPaths, ContentHashDoesNotDependOnWhereTheGraphFileLies) {
  TempDir tmp;
  std::map<std::string, std::string> content_hash;
  std::map<std::string, std::string> stat_hash;
  for (const std::string folder : {"a", "b/c"}) {
    write_nrrd(tmp / folder / "image.nrrd");
    write_zarr(tmp / folder / "array.zarr");
    const fs::path content = write_graph(tmp, folder + "/content.json",
                                         reader_graph("image.nrrd", "array.zarr", "content"));
    const fs::path stat =
        write_graph(tmp, folder + "/stat.json", reader_graph("image.nrrd", "array.zarr"));
    const Graph gc = Graph::build(load_graph_file(content.string()), nodes::builtin_registry());
    const Graph gs = Graph::build(load_graph_file(stat.string()), nodes::builtin_registry());
    for (const std::string id : {"image", "array"}) {
      const std::string key = id + " in " + folder;
      content_hash[key] = gc.node(id).hash;
      stat_hash[key] = gs.node(id).hash;
    }
  }
  for (const std::string id : {"image", "array"}) {
    EXPECT_EQ(content_hash[id + " in a"], content_hash[id + " in b/c"]) << id;
    // "stat" identifies a file by its absolute path (and size and time).
    EXPECT_NE(stat_hash[id + " in a"], stat_hash[id + " in b/c"]) << id;
  }
}

}  // namespace
}  // namespace cellflow::test

// A hostile cache: at every position of the layout (the cache's own file, a
// node folder, 0/, a cell's folder, a cell file, .zattrs, .zarray, .zgroup,
// the completion marker, memo/, a memo entry, its entry.json) a symbolic link
// to a file outside, a link to a folder outside, a folder, a FIFO and a UNIX
// socket are planted in turn; then `run`, `export`, `replay`, `cache verify`,
// `cache verify --repair`, `cache gc` and `run` again, each under a time
// limit. Nothing outside the cache may change (a watched folder, holding the
// links' targets, is hashed after every command), no command may hang or die
// of a signal, the repair must leave a cache that verifies clean, and the last
// run must give the bit-identical cells of a clean run. The read-only
// commands (ls, show, graph --dot / --from-cache) run on the damaged cache too. Also: a cell
// swapped with another cell of its node, or copied from another node, is reported by `verify` and
// recomputed with a warning by `run`.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "cellflow/cache/memoize.hpp"
#include "cli_common.hpp"
#include "fault_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

// raw (blobs 16x16x24 in 8^3 cells: 2x2x3) -> smooth -> mask: small, so that
// sixty damaged caches run in seconds.
const std::string kGraph = R"({
  "cellflow": 1,
  "name": "damage",
  "nodes": [
    {"id": "raw", "op": "synthetic.blobs",
     "params": {"shape": [16, 16, 24], "cell_shape": [8, 8, 8], "dtype": "f32", "seed": 5,
                "count": 6}},
    {"id": "smooth", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": 1.0}},
    {"id": "mask", "op": "threshold", "inputs": ["smooth"], "params": {"above": 0.3}}
  ],
  "outputs": ["mask"]
}
)";
const char* const kIds[] = {"raw", "smooth", "mask"};
constexpr double kCommandSeconds = 30;  // far above any command here: only a hang reaches it

CellBuffer ramp(int64_t rows, int64_t cols) {
  CellBuffer b = CellBuffer::allocate(DType::kU16, Shape{rows, cols});
  for (int64_t i = 0; i < rows * cols; ++i)
    b.mutable_as<uint16_t>()[i] = static_cast<uint16_t>(i * 7);
  return b;
}

// A clean cache of kGraph plus one memo entry (an image result), and the
// hashes of the graph's nodes.
struct CleanCache {
  fs::path root;
  fs::path graph;
  std::map<std::string, std::string> hash;  // id -> hash
  std::string memo_key;

  CleanCache(const TempDir& tmp) : root(tmp / "clean"), graph(tmp / "graph.json") {
    write_all(graph, kGraph);
    const CommandResult r = run_cli({"run", graph.string(), "--cache", root.string(), "--quiet",
                                     "--summary-json", (tmp / "summary.json").string()},
                                    tmp.path());
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    const Summary s = read_summary(tmp / "summary.json");
    for (const char* id : kIds) hash[id] = s.str(id, "hash");
    Memo memo(root);
    memo_key = memo.call_with_outcome("ramp", 1, ramp, int64_t{20}, int64_t{30}).outcome.key;
  }
};

// What an entry of the watched folder is: kind, and bytes of a file or target of a link.
std::string fingerprint(const fs::path& root) {
  std::string out;
  std::vector<fs::path> paths;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it)
    paths.push_back(it->path());
  std::sort(paths.begin(), paths.end());
  for (const fs::path& p : paths) {
    struct stat st {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    out += fs::relative(p, root).string();
    out += fmt::format(" mode {:o}", st.st_mode);
    if (S_ISREG(st.st_mode)) {
      const std::string data = read_all(p);
      out += fmt::format(" size {} hash {:x} mtime {}.{}", data.size(),
                         std::hash<std::string>{}(data), st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    } else if (S_ISLNK(st.st_mode)) {
      out += " -> " + fs::read_symlink(p).string();
    }
    out += '\n';
  }
  return out;
}

// Known, and fixed on branch `locks` (NodeUseLock onto Env::lock): the CLI's
// node lease (NodeUseLock::acquire, path-based in node_use_lock.cpp) follows
// a node folder that is a link and touches the use file at its target (the
// mtime only: the file exists in the planted copy). The test expects exactly
// that difference while this is true, so it fails, and says so, once the
// lease stops following links: then set this to false.
constexpr bool kLeaseFollowsANodeLink = false;

// `fingerprint` without the mtime of the use file at the linked node's target.
std::string without_use_mtime(const std::string& fp) {
  const std::string line = "target-folder/.cellflow-use ";
  const size_t at = fp.find(line);
  if (at == std::string::npos) return fp;
  const size_t mtime = fp.find(" mtime ", at);
  const size_t end = fp.find('\n', at);
  if (mtime == std::string::npos || mtime > end) return fp;
  return fp.substr(0, mtime) + fp.substr(end);
}

enum class Plant { kLinkToFile, kLinkToFolder, kFolder, kFifo, kSocket };
const Plant kPlants[] = {Plant::kLinkToFile, Plant::kLinkToFolder, Plant::kFolder, Plant::kFifo,
                         Plant::kSocket};

const char* plant_name(Plant p) {
  switch (p) {
    case Plant::kLinkToFile:
      return "a link to a file outside";
    case Plant::kLinkToFolder:
      return "a link to a folder outside";
    case Plant::kFolder:
      return "a folder";
    case Plant::kFifo:
      return "a FIFO";
    case Plant::kSocket:
      return "a UNIX socket";
  }
  return "?";
}

// Binds a UNIX socket at `path` (through /proc/self/fd: a socket's path must be short).
void plant_socket(const fs::path& path) {
  const int dir = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dir, 0) << path;
  const std::string name = fmt::format("/proc/self/fd/{}/{}", dir, path.filename().string());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(name.size(), sizeof addr.sun_path) << name;
  std::memcpy(addr.sun_path, name.c_str(), name.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0)
      << std::strerror(errno) << " " << path;
  ::close(fd);
  ::close(dir);
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  ASSERT_TRUE(S_ISSOCK(st.st_mode)) << path;
}

// Replaces whatever is at `at` with `plant`. The link targets live in
// `outside`: a copy of what was at `at` (so that a store that followed the
// link would find plausible content there, and could damage it).
void plant(const fs::path& at, Plant what, const fs::path& outside) {
  const bool was_folder = fs::is_directory(fs::symlink_status(at));
  const fs::path target_file = outside / "target-file";
  const fs::path target_folder = outside / "target-folder";
  if (!fs::exists(target_file)) {
    write_all(target_file, was_folder ? std::string("outside data") : read_all(at));
    if (was_folder) {
      fs::copy(at, target_folder, fs::copy_options::recursive);
    } else {
      write_all(target_folder / "keep.txt", "outside folder");
    }
  }
  fs::remove_all(at);
  switch (what) {
    case Plant::kLinkToFile:
      fs::create_symlink(target_file, at);
      break;
    case Plant::kLinkToFolder:
      fs::create_directory_symlink(target_folder, at);
      break;
    case Plant::kFolder:
      fs::create_directory(at);
      write_all(at / "planted.txt", "a folder where the layout has something else");
      break;
    case Plant::kFifo:
      ASSERT_EQ(::mkfifo(at.c_str(), 0644), 0) << at;
      break;
    case Plant::kSocket:
      plant_socket(at);
      break;
  }
}

// Runs the CLI under a time limit: a hang is killed and fails the test. Returns the exit code.
int run_limited(const std::vector<std::string>& args, const fs::path& scratch, std::string* out,
                std::string* err) {
  static int counter = 0;
  const fs::path o = scratch / fmt::format("limited-{}.out", counter);
  const fs::path e = scratch / fmt::format("limited-{}.err", counter++);
  std::vector<std::string> argv{CELLFLOW_CLI};
  argv.insert(argv.end(), args.begin(), args.end());
  Child child(argv, o, e);
  EXPECT_TRUE(child.started());
  if (!child.wait_for(kCommandSeconds)) {
    child.kill9();
    child.wait();
    ADD_FAILURE() << "hung (killed after " << kCommandSeconds << " s): cellflow "
                  << fmt::format("{}", fmt::join(args, " "));
    return -1;
  }
  if (out != nullptr) *out = read_all(o);
  if (err != nullptr) *err = read_all(e);
  return child.code();
}

// A copy of the clean cache at tmp/cache.
fs::path copy_of(const CleanCache& clean, const TempDir& tmp) {
  const fs::path cache = tmp / "cache";
  fs::copy(clean.root, cache, fs::copy_options::recursive);
  return cache;
}

// Every node of the graph holds the cells of the clean cache, bit for bit.
void expect_same_as_clean(const CleanCache& clean, const fs::path& cache) {
  for (const char* id : kIds) {
    const std::string& h = clean.hash.at(id);
    EXPECT_TRUE(same_cells(cache / h / "0", clean.root / h / "0")) << "node " << id;
  }
}

// A layout position, relative to the cache root.
struct Position {
  const char* name;
  std::function<std::string(const CleanCache&)> path;
};

std::string smooth(const CleanCache& c) { return c.hash.at("smooth"); }

const Position kPositions[] = {
    {"CacheFile", [](const CleanCache&) { return std::string("cellflow-cache.json"); }},
    {"NodeFolder", [](const CleanCache& c) { return smooth(c); }},
    {"ArrayFolder", [](const CleanCache& c) { return smooth(c) + "/0"; }},
    {"CellFolder", [](const CleanCache& c) { return smooth(c) + "/0/1"; }},
    {"CellFile", [](const CleanCache& c) { return smooth(c) + "/0/1/0/2"; }},
    {"Zattrs", [](const CleanCache& c) { return smooth(c) + "/.zattrs"; }},
    {"Zarray", [](const CleanCache& c) { return smooth(c) + "/0/.zarray"; }},
    {"Zgroup", [](const CleanCache& c) { return smooth(c) + "/.zgroup"; }},
    {"CompleteMarker", [](const CleanCache& c) { return smooth(c) + "/.cellflow-complete"; }},
    {"MemoFolder", [](const CleanCache&) { return std::string("memo"); }},
    {"MemoEntry", [](const CleanCache& c) { return "memo/" + c.memo_key; }},
    {"MemoEntryFile", [](const CleanCache& c) { return "memo/" + c.memo_key + "/entry.json"; }},
};

class CliCacheDamage : public ::testing::TestWithParam<Position> {};

TEST_P(CliCacheDamage, EveryKindOfEntryIsReportedRepairedAndNothingOutsideChanges) {
  TempDir tmp;
  const CleanCache clean(tmp);
  ASSERT_FALSE(::testing::Test::HasFailure());
  const std::string rel = GetParam().path(clean);
  for (const Plant what : kPlants) {
    SCOPED_TRACE(fmt::format("{} at {}", plant_name(what), rel));
    const fs::path dir = tmp / fmt::format("case-{}", static_cast<int>(what));
    const fs::path cache = dir / "cache";
    const fs::path outside = dir / "outside";
    fs::create_directories(outside);
    fs::copy(clean.root, cache, fs::copy_options::recursive);
    plant(cache / rel, what, outside);
    ASSERT_FALSE(::testing::Test::HasFatalFailure());
    const std::string before = fingerprint(outside);
    std::string last = before;
    const bool known_lease_case =
        kLeaseFollowsANodeLink && rel == clean.hash.at("smooth") && what == Plant::kLinkToFolder;
    bool saw_known_lease = false;
    const auto step = [&](const std::vector<std::string>& args, std::string* out = nullptr) {
      std::string o;
      std::string e;
      const int code = run_limited(args, dir, &o, &e);
      const std::string what_ran = fmt::format("cellflow {}", fmt::join(args, " "));
      EXPECT_TRUE(code == 0 || code == 1 || code == 2)
          << what_ran << ": exit " << code << " (a signal is 128 + its number)\n"
          << o << e;
      const std::string now = fingerprint(outside);
      if (known_lease_case && now != last && without_use_mtime(now) == without_use_mtime(last)) {
        saw_known_lease = true;
      } else {
        EXPECT_EQ(now, last) << what_ran << " changed the folder outside";
      }
      last = now;
      if (out != nullptr) *out = o + e;
      return code;
    };
    const std::string c = cache.string();

    std::string report;
    EXPECT_EQ(step({"cache", "verify", "--cache", c}, &report), 1) << report;
    EXPECT_NE(report.find("damaged: " + (cache / rel).string()), std::string::npos)
        << "verify does not name what was planted:\n"
        << report;
    // The read-only commands, on the damaged cache.
    step({"cache", "ls", "--cache", c});
    step({"cache", "ls", "--json", "--cache", c});
    step({"cache", "show", clean.hash.at("smooth"), "--tree", "--cache", c});
    step({"cache", "show", clean.memo_key, "--cache", c});
    step({"graph", clean.graph.string(), "--dot", "--cache", c});
    step({"graph", "--from-cache", clean.hash.at("mask"), "--cache", c});
    step({"run", clean.graph.string(), "--cache", c, "--quiet"});
    step({"export", clean.graph.string(), "mask", "--cache", c, "--to",
          (dir / "mask.tif").string()});
    step({"replay", clean.hash.at("mask"), "--cache", c, "--quiet"});
    EXPECT_EQ(step({"cache", "verify", "--repair", "--cache", c}, &report), 0) << report;
    EXPECT_EQ(step({"cache", "verify", "--cache", c}, &report), 0) << report;
    EXPECT_NE(report.find(": clean"), std::string::npos) << report;
    EXPECT_EQ(step({"cache", "gc", "--keep-graph", clean.graph.string(), "--cache", c}, &report), 0)
        << report;
    // Every node, not only the graph's output: each must match the clean cache.
    EXPECT_EQ(step({"run", clean.graph.string(), "--cache", c, "--quiet", "--output", "raw",
                    "--output", "smooth", "--output", "mask"},
                   &report),
              0)
        << report;
    expect_same_as_clean(clean, cache);
    EXPECT_EQ(step({"cache", "verify", "--cache", c}, &report), 0) << report;
    EXPECT_EQ(without_use_mtime(fingerprint(outside)), without_use_mtime(before));
    if (known_lease_case)
      EXPECT_TRUE(saw_known_lease) << "the node lease no longer follows a node folder that is a "
                                      "link: set kLeaseFollowsANodeLink to false";
  }
}

INSTANTIATE_TEST_SUITE_P(AtEveryPosition, CliCacheDamage, ::testing::ValuesIn(kPositions),
                         [](const ::testing::TestParamInfo<Position>& info) {
                           return std::string(info.param.name);
                         });

// gc alone on a node folder that is a link to a folder outside: the link goes,
// the folder it points to stays whole.
TEST(CliCacheDamageGc, ANodeLinkedOutsideIsUnlinkedNeverEmptied) {
  TempDir tmp;
  const CleanCache clean(tmp);
  const fs::path cache = copy_of(clean, tmp);
  const fs::path outside = tmp / "outside";
  fs::create_directories(outside);
  const std::string rel = clean.hash.at("smooth");
  plant(cache / rel, Plant::kLinkToFolder, outside);
  const std::string before = fingerprint(outside);
  std::string out;
  EXPECT_EQ(run_limited({"cache", "gc", "--older-than", "0", "--cache", cache.string()}, tmp.path(),
                        &out, nullptr),
            0)
      << out;
  EXPECT_FALSE(fs::exists(fs::symlink_status(cache / rel))) << "the link was left";
  EXPECT_EQ(fingerprint(outside), before);
  EXPECT_FALSE(fs::is_empty(outside / "target-folder"));
  EXPECT_EQ(run_limited({"cache", "ls", "--cache", cache.string()}, tmp.path(), &out, nullptr), 0)
      << out;
}

// A cell file moved to another place: `verify` names both cells (their
// checksums bind them to their place), `run` warns naming each and recomputes
// it, and the result is the clean run's.
void expect_misplaced_cells_found(const CleanCache& clean, const TempDir& tmp,
                                  const std::vector<std::string>& damaged_cells) {
  const fs::path cache = tmp / "cache";
  const std::string c = cache.string();
  std::string out;
  EXPECT_EQ(run_limited({"cache", "verify", "--cache", c}, tmp.path(), &out, nullptr), 1) << out;
  for (const std::string& cell : damaged_cells) {
    EXPECT_NE(out.find("damaged: " + (cache / cell).string() + ": checksum mismatch"),
              std::string::npos)
        << cell << "\n"
        << out;
  }
  // The node that reads them is gone: the run must read every cell of smooth.
  fs::remove_all(cache / clean.hash.at("mask"));
  std::string err;
  EXPECT_EQ(
      run_limited({"run", clean.graph.string(), "--cache", c, "--quiet"}, tmp.path(), &out, &err),
      0)
      << out << err;
  for (const std::string& cell : damaged_cells) {
    EXPECT_NE(err.find("warning: node \"smooth\""), std::string::npos) << err;
    EXPECT_NE(err.find((cache / cell).string() + ": checksum mismatch"), std::string::npos)
        << "no warning names " << cell << ":\n"
        << err;
  }
  EXPECT_NE(err.find("recomputing it"), std::string::npos) << err;
  expect_same_as_clean(clean, cache);
  EXPECT_EQ(run_limited({"cache", "verify", "--cache", c}, tmp.path(), &out, nullptr), 0) << out;
}

TEST(CliCacheIdentity, ACellSwappedWithAnotherOfItsNodeIsFoundAndRecomputed) {
  TempDir tmp;
  const CleanCache clean(tmp);
  const fs::path cache = copy_of(clean, tmp);
  const std::string a = clean.hash.at("smooth") + "/0/0/0/0";
  const std::string b = clean.hash.at("smooth") + "/0/1/1/2";
  fs::rename(cache / a, tmp / "swap");
  fs::rename(cache / b, cache / a);
  fs::rename(tmp / "swap", cache / b);
  expect_misplaced_cells_found(clean, tmp, {a, b});
}

TEST(CliCacheIdentity, ACellCopiedFromAnotherNodeIsFoundAndRecomputed) {
  TempDir tmp;
  const CleanCache clean(tmp);
  const fs::path cache = copy_of(clean, tmp);
  const std::string cell = "/0/1/0/1";
  fs::copy_file(cache / (clean.hash.at("raw") + cell), cache / (clean.hash.at("smooth") + cell),
                fs::copy_options::overwrite_existing);
  expect_misplaced_cells_found(clean, tmp, {clean.hash.at("smooth") + cell});
}

// A deleted 0/.zarray is damage (zarr-python could no longer open the node):
// reported, and rewritten from the node's definition by --repair.
TEST(CliCacheDamageMetadata, ADeletedZarrayIsReportedAndRewrittenFromTheDefinition) {
  TempDir tmp;
  const CleanCache clean(tmp);
  const fs::path cache = copy_of(clean, tmp);
  const std::string zarray = clean.hash.at("smooth") + "/0/.zarray";
  fs::remove(cache / zarray);
  const std::string c = cache.string();
  std::string out;
  EXPECT_EQ(run_limited({"cache", "verify", "--cache", c}, tmp.path(), &out, nullptr), 1) << out;
  EXPECT_NE(out.find("damaged: " + (cache / zarray).string() + ": missing"), std::string::npos)
      << out;
  EXPECT_EQ(run_limited({"cache", "verify", "--repair", "--cache", c}, tmp.path(), &out, nullptr),
            0)
      << out;
  EXPECT_NE(out.find("rewritten"), std::string::npos) << out;
  ASSERT_TRUE(fs::is_regular_file(cache / zarray));
  EXPECT_EQ(read_all(cache / zarray), read_all(clean.root / zarray));
  EXPECT_EQ(run_limited({"cache", "verify", "--cache", c}, tmp.path(), &out, nullptr), 0) << out;
  expect_same_as_clean(clean, cache);
}

// A .zattrs whose definition was edited (its params no longer hash to the
// folder's name) is damage: the node's cells were not computed from it.
// --repair removes the node, and the next run computes it again.
TEST(CliCacheDamageMetadata, ADefinitionThatDoesNotHashToItsFolderIsReported) {
  TempDir tmp;
  const CleanCache clean(tmp);
  const fs::path cache = copy_of(clean, tmp);
  const std::string zattrs = clean.hash.at("smooth") + "/.zattrs";
  std::string text = read_all(cache / zattrs);
  const size_t at = text.find("\"sigma\": 1");
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, 11, "\"sigma\": 3");
  write_all(cache / zattrs, text);
  const std::string c = cache.string();
  std::string out;
  EXPECT_EQ(run_limited({"cache", "verify", "--cache", c}, tmp.path(), &out, nullptr), 1) << out;
  EXPECT_NE(out.find("damaged: " + (cache / zattrs).string() + ": its definition hashes to "),
            std::string::npos)
      << out;
  EXPECT_EQ(run_limited({"cache", "verify", "--repair", "--cache", c}, tmp.path(), &out, nullptr),
            0)
      << out;
  EXPECT_FALSE(fs::exists(cache / clean.hash.at("smooth"))) << out;
  EXPECT_EQ(run_limited({"run", clean.graph.string(), "--cache", c, "--quiet", "--output", "raw",
                         "--output", "smooth", "--output", "mask"},
                        tmp.path(), &out, nullptr),
            0)
      << out;
  expect_same_as_clean(clean, cache);
  EXPECT_EQ(run_limited({"cache", "verify", "--cache", c}, tmp.path(), &out, nullptr), 0) << out;
}

}  // namespace
}  // namespace cellflow::test

// One writer process of the concurrency matrix (tests/cache/concurrency_test.cpp):
//   cellflow_concurrency_worker MODE CACHE SEED WRITER WRITERS GO_FILE OUT_FILE
// waits until GO_FILE exists (so that all writers start together), runs the
// writer MODE (add-node, compute-node, table-rows, metadata; see
// concurrency_ops.hpp) and writes its result to OUT_FILE. Exit code 0 on
// success; 1 with the error on stderr otherwise.
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>

#include "cache/concurrency_ops.hpp"

namespace {

namespace fs = std::filesystem;

bool wait_for(const fs::path& go) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(go)) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8) {
    std::fprintf(stderr, "usage: %s MODE CACHE SEED WRITER WRITERS GO_FILE OUT_FILE\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1];
  const fs::path cache = argv[2];
  const int64_t seed = std::stoll(argv[3]);
  const int writer = std::stoi(argv[4]);
  const int writers = std::stoi(argv[5]);
  const fs::path go = argv[6];
  const fs::path out = argv[7];
  try {
    if (!wait_for(go)) throw cellflow::IoError("the start signal never came: " + go.string());
    namespace cc = cellflow::concurrency;
    std::string result;
    if (mode == "add-node") {
      result = cc::add_node(cache, seed);
    } else if (mode == "compute-node") {
      result = cc::compute_shared_node(cache, seed, /*sleep_ms=*/2);
    } else if (mode == "table-rows") {
      result = cc::append_rows(cache, seed, writer, writers);
    } else if (mode == "metadata") {
      result = cc::update_metadata(cache, seed, writer, /*updates=*/20).string();
    } else {
      std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
      return 2;
    }
    cellflow::write_file_atomic(out, result);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "writer %d (%s): %s\n", writer, mode.c_str(), e.what());
    return 1;
  }
}

// One memoized function, built three times by tests/CMakeLists.txt for
// MemoCodeTest (tests/cache/memo_code_test.cpp): twice from the same body
// (CELLFLOW_MEMO_BODY=1, as two separately compiled and linked programs) and
// once with the body edited (CELLFLOW_MEMO_BODY=2), its id and version kept.
//
// Usage: memo_code_program CACHE X [--by-version]
// Prints "<result> <cached|computed> <key>".
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>

#include "cellflow/cache/memoize.hpp"

namespace {

int64_t scale(int64_t x) {
#if CELLFLOW_MEMO_BODY == 1
  return x * 2;
#else
  return x * 3;  // the edit
#endif
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: memo_code_program CACHE X [--by-version]\n");
    return 2;
  }
  try {
    cellflow::Memo memo(argv[1]);
    if (argc == 4 && std::string(argv[3]) == "--by-version") memo.set_key_by_code(false);
    const auto r = memo.call_with_outcome("scale", 1, scale, int64_t{std::stoll(argv[2])});
    std::printf("%lld %s %s\n", static_cast<long long>(r.value),
                r.outcome.cached ? "cached" : "computed", r.outcome.key.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "memo_code_program: %s\n", e.what());
    return 1;
  }
}

// ulam_spiral: the joblib example (primes between a and b, and an Ulam spiral
// of them) with both steps memoized by cellflow::Memo. The spiral step takes
// the primes as an argument, so its key covers their content: changing
// --spiral-b recomputes only the spiral, changing --b recomputes both.
//
//   ulam_spiral                      cold then cached run in one process, on a
//                                    fresh cache; prints both times and the ratio
//   ulam_spiral --cache DIR [--a A] [--b B] [--spiral-b S]
//                                    one run on DIR; says what was cached
//
// Each entry keeps artifacts: a summary of the primes, and a PNG of the
// spiral's center (<cache>/memo/<key>/artifacts/).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "cellflow/cache/artifacts.hpp"
#include "cellflow/cache/box.hpp"
#include "cellflow/cache/memoize.hpp"

namespace {

namespace fs = std::filesystem;
using cellflow::CellBuffer;

/// All primes p with a <= p <= b (a sieve of Eratosthenes over [0, b]).
/// REQUIRES: b < 2^32 (primes are stored as 32-bit integers, half the bytes
/// of int64 to store, load and hash).
std::vector<uint32_t> primes_between(int64_t a, int64_t b) {
  std::vector<uint8_t> sieve(static_cast<size_t>(b) + 1, 1);
  sieve[0] = 0;
  if (b >= 1) sieve[1] = 0;
  for (int64_t p = 2; p * p <= b; ++p) {
    if (!sieve[static_cast<size_t>(p)]) continue;
    for (int64_t m = p * p; m <= b; m += p) sieve[static_cast<size_t>(m)] = 0;
  }
  std::vector<uint32_t> primes;
  for (int64_t i = std::max<int64_t>(a, 2); i <= b; ++i)
    if (sieve[static_cast<size_t>(i)]) primes.push_back(static_cast<uint32_t>(i));
  if (const auto* artifacts = cellflow::current_artifacts()) {
    artifacts->write_text("summary.txt",
                          fmt::format("{} primes between {} and {}\n", primes.size(), a, b));
  }
  return primes;
}

/// The Ulam spiral of 1..n*n (n the smallest odd number with n*n >= b-a+1),
/// 1 where the number is one of `primes` within [a, b], else 0.
CellBuffer ulam_spiral(const std::vector<uint32_t>& primes, int64_t a, int64_t b) {
  auto n = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(b - a + 1))));
  if (n % 2 == 0) ++n;
  CellBuffer spiral = CellBuffer::zeros(cellflow::DType::kU8, cellflow::Shape{n, n});
  uint8_t* px = spiral.mutable_as<uint8_t>();
  // Numbers grow along the walk, so one cursor through the sorted primes
  // replaces a set lookup.
  auto next = std::lower_bound(primes.begin(), primes.end(), static_cast<uint32_t>(a));
  int64_t x = n / 2;
  int64_t y = n / 2;
  int64_t dx = 0;
  int64_t dy = -1;
  for (int64_t i = 1; i <= n * n; ++i) {
    if (i >= a && i <= b && next != primes.end() && *next == i) {
      px[x * n + y] = 1;
      ++next;
    }
    if (x == y || (x < y && x + y == n - 1) || (x > y && x + y == n)) {
      const int64_t t = dx;
      dx = -dy;
      dy = t;
    }
    x += dx;
    y += dy;
  }
  if (const auto* artifacts = cellflow::current_artifacts()) {
    // A viewable preview: the center, primes white.
    const int64_t side = std::min<int64_t>(n, 401);
    const int64_t o = (n - side) / 2;
    CellBuffer center = CellBuffer::allocate(cellflow::DType::kU8, cellflow::Shape{side, side});
    for (int64_t r = 0; r < side; ++r)
      for (int64_t c = 0; c < side; ++c)
        center.mutable_as<uint8_t>()[r * side + c] = px[(o + r) * n + (o + c)] ? 255 : 0;
    artifacts->write_png("center.png", center);
  }
  return spiral;
}

struct Options {
  int64_t a = 1;
  int64_t b = 100'000'000;
  int64_t spiral_b = -1;  // default: b / 10
  std::string cache;
};

int64_t parse_int(std::string_view flag, const char* text) {
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0' || v < 1) {
    fmt::print(stderr, "ulam_spiral: {} needs a positive integer (got \"{}\")\n", flag, text);
    std::exit(2);
  }
  return v;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) {
      fmt::print(stderr, "usage: ulam_spiral [--a A] [--b B] [--spiral-b S] [--cache DIR]\n");
      std::exit(2);
    }
    if (arg == "--a") {
      o.a = parse_int(arg, argv[++i]);
    } else if (arg == "--b") {
      o.b = parse_int(arg, argv[++i]);
    } else if (arg == "--spiral-b") {
      o.spiral_b = parse_int(arg, argv[++i]);
    } else if (arg == "--cache") {
      o.cache = argv[++i];
    } else {
      fmt::print(stderr, "ulam_spiral: unknown option \"{}\"\n", arg);
      std::exit(2);
    }
  }
  // Like the seed, the spiral zooms into the start of the range by default.
  if (o.spiral_b < 0) o.spiral_b = std::max<int64_t>(o.a, o.b / 10);
  if (o.b >= (int64_t{1} << 32) || o.spiral_b > o.b) {
    fmt::print(stderr, "ulam_spiral: --b must be below 2^32 and --spiral-b must not exceed --b\n");
    std::exit(2);
  }
  if (o.a > o.b || o.a > o.spiral_b) {
    fmt::print(stderr, "ulam_spiral: --a must not exceed --b and --spiral-b\n");
    std::exit(2);
  }
  return o;
}

struct RunTimes {
  double primes = 0;
  double spiral = 0;
  double total = 0;
};

RunTimes run(cellflow::Memo& memo, const Options& o, const char* label) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const auto primes = memo.call_with_outcome("primes_between", 1, primes_between, o.a, o.b);
  const auto spiral =
      memo.call_with_outcome("ulam_spiral", 1, ulam_spiral, primes.value, o.a, o.spiral_b);
  const double total = std::chrono::duration<double>(Clock::now() - t0).count();
  const auto state = [](const cellflow::MemoOutcome& m) {
    return m.cached ? "cached" : "computed";
  };
  fmt::print("{}: primes_between({}, {}): {} primes, {} in {:.3f} s\n", label, o.a, o.b,
             primes.value.size(), state(primes.outcome), primes.outcome.seconds);
  fmt::print("{}: ulam_spiral(primes, {}, {}): {}x{} image, {} in {:.3f} s\n", label, o.a,
             o.spiral_b, spiral.value.shape()[0], spiral.value.shape()[1], state(spiral.outcome),
             spiral.outcome.seconds);
  fmt::print("{}: total {:.3f} s\n", label, total);
  fmt::print("{}: entries {} and {}\n", label, primes.outcome.entry.string(),
             spiral.outcome.entry.string());
  return RunTimes{primes.outcome.seconds, spiral.outcome.seconds, total};
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    if (!o.cache.empty()) {
      cellflow::Memo memo{fs::path(o.cache)};
      run(memo, o, "run");
      return 0;
    }
    const fs::path dir =
        fs::temp_directory_path() / fmt::format("ulam-spiral-cache-{}", ::getpid());
    fs::remove_all(dir);
    cellflow::Memo memo{dir};
    const RunTimes cold = run(memo, o, "cold");
    const RunTimes cached = run(memo, o, "cached");
    fmt::print("cold/cached: {:.1f}x (primes {:.1f}x, spiral {:.1f}x)\n", cold.total / cached.total,
               cold.primes / cached.primes, cold.spiral / cached.spiral);
    fs::remove_all(dir);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "ulam_spiral: error: {}\n", e.what());
    return 1;
  }
}

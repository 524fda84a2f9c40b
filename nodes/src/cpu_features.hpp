// What the CPU running this process can execute, asked once: for kernels
// with a vector path chosen at run time (the exact Gaussian's sums, Otsu's
// histogram).
#pragma once

namespace cellflow::nodes::detail {

#if defined(__x86_64__) && defined(__GNUC__)
/// AVX-512 Foundation (512-bit registers).
inline bool cpu_has_avx512f() {
  static const bool kHas = __builtin_cpu_supports("avx512f");
  return kHas;
}

/// AVX-512 F and VL (masked operations on 256-bit registers too).
inline bool cpu_has_avx512vl() {
  static const bool kHas = cpu_has_avx512f() && __builtin_cpu_supports("avx512vl");
  return kHas;
}
#endif

}  // namespace cellflow::nodes::detail

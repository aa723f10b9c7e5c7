// The kernel policy, and the one place Norma reads the kernel variables of the environment.
#include "kernel_policy.h"

#include <cpuid.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>

#include "error.h"

namespace norma {

namespace {

// "0" turns a kernel family off; unset or anything else leaves it on.
bool env_on(const char* name) {
  const char* v = std::getenv(name);
  return !(v && std::strcmp(v, "0") == 0);
}

KernelPolicy& current() {
  static KernelPolicy policy = [] {
    KernelPolicy p = KernelPolicy::from_env();
    p.fast = p.fast && fast_kernels_built();
    return p;
  }();
  return policy;
}

}  // namespace

KernelPolicy KernelPolicy::from_env() {
  KernelPolicy p;
  if (const char* v = std::getenv("NORMA_KERNELS")) {
    if (std::strcmp(v, "reference") == 0) p.fast = false;
    else if (std::strcmp(v, "fast") != 0)
      fail("NORMA_KERNELS: expected 'reference' or 'fast', got '{}'", v);
  }
  p.winograd = env_on("NORMA_WINOGRAD");
  p.direct_conv = env_on("NORMA_DIRECT_CONV");
  p.stream_stores = env_on("NORMA_STREAM_STORES");
  if (const char* v = std::getenv("NORMA_WINOGRAD_F44")) {
    char* end = nullptr;
    const long long n = std::strtoll(v, &end, 10);
    if (end == v || *end != '\0' || n < 0)
      fail("NORMA_WINOGRAD_F44: expected a channel count >= 0, got '{}'", v);
    p.winograd_f44_channels = n;
  }
  if (const char* v = std::getenv("NORMA_ISA")) {
    const Isa levels[] = {Isa::automatic, Isa::baseline, Isa::avx2, Isa::avx512};
    auto named = std::find_if(std::begin(levels), std::end(levels),
                              [&](Isa i) { return std::strcmp(v, isa_name(i)) == 0; });
    if (named == std::end(levels))
      fail("NORMA_ISA: expected 'auto', 'baseline', 'avx2' or 'avx512', got '{}'", v);
    check_isa(*named);
    p.isa = *named;
  }
  return p;
}

bool fast_kernels_built() {
#if NORMA_FAST_KERNELS
  return true;
#else
  return false;
#endif
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::baseline: return "baseline";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    default: return "auto";
  }
}

Isa cpu_isa() {
  static const Isa best = [] {
    __builtin_cpu_init();
    // Each level's compile flags (layers/fast/CMakeLists.txt), feature by feature.
    // F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does
    // not know it; AVX2's check already covers the OS saving the AVX state.
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c &&
                      __builtin_cpu_supports("bmi2");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    return avx512 ? Isa::avx512 : avx2 ? Isa::avx2 : Isa::baseline;
  }();
  return best;
}

void check_isa(Isa isa, Isa cpu) {
  if (isa <= cpu) return;
  std::string has = "baseline";
  for (Isa i : {Isa::avx2, Isa::avx512})
    if (i <= cpu) has += fmt::format(", {}", isa_name(i));
  fail("kernel policy: ISA level '{}' is not supported by this CPU, which has {}", isa_name(isa), has);
}

Isa kernel_isa() {
  const Isa isa = current().isa;
  return isa == Isa::automatic ? cpu_isa() : isa;
}

const KernelPolicy& kernel_policy() { return current(); }

void set_kernel_policy(const KernelPolicy& policy) {
  check_isa(policy.isa);
  current() = policy;
  current().fast = policy.fast && fast_kernels_built();
}

}  // namespace norma

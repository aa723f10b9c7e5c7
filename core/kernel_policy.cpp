// The kernel policy, and the one place Norma reads the kernel variables of the environment.
#include "kernel_policy.h"

#include <cstdlib>
#include <cstring>

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
  return p;
}

bool fast_kernels_built() {
#if NORMA_FAST_KERNELS
  return true;
#else
  return false;
#endif
}

const KernelPolicy& kernel_policy() { return current(); }

void set_kernel_policy(const KernelPolicy& policy) {
  current() = policy;
  current().fast = policy.fast && fast_kernels_built();
}

}  // namespace norma

// Which kernels run. Every op with fast kernels has a plain reference kernel
// that defines it (layers/ref/); the fast ones (layers/fast/) must equal it.
// Each op asks kernel_policy() at its one dispatch point.
//
// The policy starts from the environment, read once, here and nowhere else
// (kernel_policy.cpp; docs/architecture.md lists the variables):
//   NORMA_KERNELS=reference   reference kernels only (fast: false)
//   NORMA_WINOGRAD=0          no Winograd convolutions (winograd: false)
//   NORMA_WINOGRAD_F44=n      F(4x4) tiles for sums over at most n channels
//   NORMA_DIRECT_CONV=0       no direct convolutions for few input channels
//   NORMA_STREAM_STORES=0     no streaming stores in BatchNorm2d's passes
// Code and tests change it with set_kernel_policy, or for a scope:
//   { KernelPolicyGuard g(KernelPolicy{.fast = false}); ... reference kernels ... }
// Set it between ops, never while one runs on another thread.
#pragma once
#include <cstdint>

namespace norma {

struct KernelPolicy {
  // False: every op runs its reference kernel. Always false in a build
  // without the fast kernels (-DNORMA_FAST_KERNELS=OFF).
  bool fast = true;
  // Which of the fast convolutions may run (each only where it applies).
  bool winograd = true;
  bool direct_conv = true;
  // Forward and dx convolutions summing at most this many channels take
  // Winograd F(4x4) tiles instead of F(4x2): 4x fewer multiplies than direct
  // convolution but 2-3x F(4x2)'s float32 error, so 0 (never) by default.
  int64_t winograd_f44_channels = 0;
  // Streaming stores for BatchNorm2d outputs of 16 MiB and more (AVX-512).
  bool stream_stores = true;

  // The defaults above, changed by the environment variables listed above.
  static KernelPolicy from_env();
};

// Whether this build has the fast kernels at all.
bool fast_kernels_built();

// The policy in force: from_env() until set_kernel_policy is called. Its
// `fast` is false whenever fast_kernels_built() is.
const KernelPolicy& kernel_policy();
void set_kernel_policy(const KernelPolicy& policy);

// Sets a policy for a scope and restores the previous one.
class KernelPolicyGuard {
 public:
  explicit KernelPolicyGuard(const KernelPolicy& policy) : saved_(kernel_policy()) { set_kernel_policy(policy); }
  ~KernelPolicyGuard() { set_kernel_policy(saved_); }
  KernelPolicyGuard(const KernelPolicyGuard&) = delete;
  KernelPolicyGuard& operator=(const KernelPolicyGuard&) = delete;

 private:
  KernelPolicy saved_;
};

}  // namespace norma

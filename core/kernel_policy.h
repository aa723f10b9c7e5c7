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
//   NORMA_ISA=avx2            the fast kernels' copy for one ISA level (auto:
//                             the best this CPU has)
// Code and tests change it with set_kernel_policy, or for a scope:
//   { KernelPolicyGuard g(KernelPolicy{.fast = false}); ... reference kernels ... }
// Set it between ops, never while one runs on another thread.
#pragma once
#include <cstdint>

namespace norma {

// The x86-64 instruction-set levels the fast kernels are compiled for, one copy
// each (layers/fast/CMakeLists.txt): plain x86-64; AVX2 with FMA, F16C and
// BMI2; that plus AVX-512 F/BW/DQ/VL. automatic: the best the CPU has.
enum class Isa { automatic, baseline, avx2, avx512 };

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
  // Which copy of the fast kernels runs. A level the CPU lacks is an error.
  Isa isa = Isa::automatic;

  // The defaults above, changed by the environment variables listed above.
  static KernelPolicy from_env();
};

// Whether this build has the fast kernels at all.
bool fast_kernels_built();

// "auto", "baseline", "avx2" or "avx512".
const char* isa_name(Isa isa);
// The best level this CPU and its OS support (CPUID and XCR0, through
// __builtin_cpu_supports).
Isa cpu_isa();
// Fails, naming the level and those `cpu` has, unless cpu has `isa`.
void check_isa(Isa isa, Isa cpu = cpu_isa());
// The level the fast kernels run at: kernel_policy().isa, or cpu_isa() for automatic.
Isa kernel_isa();

// The policy in force: from_env() until set_kernel_policy is called. Its
// `fast` is false whenever fast_kernels_built() is. set_kernel_policy checks
// the ISA level (check_isa).
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

// The kernel policy (core/kernel_policy.h): read from the environment in one
// place, set from code, scoped by a guard; the ISA level of the fast kernels.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <norma/apps/models.h>
#include <norma/core/kernel_policy.h>
#include <norma/norma.h>
#if NORMA_FAST_KERNELS
#include <norma/layers/batchnorm2d_op.h>
#include <norma/layers/fast/kernels.h>
#endif

using namespace norma;


namespace {

// Sets an environment variable for a scope and puts the old value back.
struct ScopedEnv {
  ScopedEnv(const char* name, const char* value) : name(name) {
    if (const char* v = std::getenv(name)) old = v;
    if (value) setenv(name, value, 1); else unsetenv(name);
  }
  ~ScopedEnv() {
    if (old) setenv(name, old->c_str(), 1); else unsetenv(name);
  }
  const char* name;
  std::optional<std::string> old;
};

}  // namespace

TEST_CASE("kernel policy: read from the environment, set from code") {
  ScopedEnv k("NORMA_KERNELS", nullptr), w("NORMA_WINOGRAD", nullptr), f("NORMA_WINOGRAD_F44", nullptr),
      d("NORMA_DIRECT_CONV", nullptr), s("NORMA_STREAM_STORES", nullptr), i("NORMA_ISA", nullptr);
  const KernelPolicy defaults = KernelPolicy::from_env();
  CHECK(defaults.fast);
  CHECK(defaults.winograd);
  CHECK(defaults.direct_conv);
  CHECK(defaults.stream_stores);
  CHECK(defaults.winograd_f44_channels == 0);
  {
    ScopedEnv k2("NORMA_KERNELS", "reference"), w2("NORMA_WINOGRAD", "0"), f2("NORMA_WINOGRAD_F44", "32"),
        d2("NORMA_DIRECT_CONV", "0"), s2("NORMA_STREAM_STORES", "0");
    const KernelPolicy p = KernelPolicy::from_env();
    CHECK_FALSE(p.fast);
    CHECK_FALSE(p.winograd);
    CHECK_FALSE(p.direct_conv);
    CHECK_FALSE(p.stream_stores);
    CHECK(p.winograd_f44_channels == 32);
  }
  {
    ScopedEnv k2("NORMA_KERNELS", "fast"), w2("NORMA_WINOGRAD", "1");
    CHECK(KernelPolicy::from_env().fast);
    CHECK(KernelPolicy::from_env().winograd);
  }
  {
    ScopedEnv k2("NORMA_KERNELS", "plain");
    CHECK_THROWS_WITH(KernelPolicy::from_env(), "NORMA_KERNELS: expected 'reference' or 'fast', got 'plain'");
  }
  for (const char* bad : {"-1", "x", "32x", ""}) {
    ScopedEnv f2("NORMA_WINOGRAD_F44", bad);
    CHECK_THROWS_WITH(KernelPolicy::from_env(),
                      std::string("NORMA_WINOGRAD_F44: expected a channel count >= 0, got '") + bad + "'");
  }

  // Set from code, for a scope; `fast` stays false in a build without the fast kernels.
  const KernelPolicy before = kernel_policy();
  {
    KernelPolicyGuard g(KernelPolicy{.fast = false, .winograd_f44_channels = 7});
    CHECK_FALSE(kernel_policy().fast);
    CHECK(kernel_policy().winograd_f44_channels == 7);
    {
      KernelPolicyGuard inner(KernelPolicy{});
      CHECK(kernel_policy().fast == fast_kernels_built());
    }
    CHECK_FALSE(kernel_policy().fast);
  }
  CHECK(kernel_policy().fast == before.fast);
  CHECK(kernel_policy().winograd_f44_channels == before.winograd_f44_channels);
}

namespace {

struct Trained {
  std::vector<float> losses;
  NamedTensors state;
};

// cifar-small trained for a few SGD steps on a random batch, on the kernels
// `policy` picks; the same seed, so the same start and data. The state (and
// an eval-mode output) is taken after step `snapshot`.
Trained train_cifar_small(const KernelPolicy& policy, int steps, int snapshot) {
  KernelPolicyGuard g(policy);
  manual_seed(7);
  auto model = nn::cifar_small();
  optim::SGD opt(optim::decay_groups(*model, 5e-4), 0.01, 0.9, 0, 5e-4, true);
  Trained t;
  const Tensor x = randn({16, 3, 32, 32});  // one batch, learnt by heart
  const Tensor y = from_vector(std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5}, {16});
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    Tensor loss = nn::cross_entropy(model->forward(x), y);
    loss.backward();
    opt.step();
    t.losses.push_back(loss.item());
    if (s + 1 != snapshot) continue;
    model->eval();
    NoGradGuard ng;
    Tensor eval_out = model->forward(randn({4, 3, 32, 32}));  // the fused inference path too
    for (const auto& [name, v] : model->state_dict()) t.state.push_back({name, v.clone()});
    t.state.push_back({"eval_output", eval_out});
    model->train();
  }
  return t;
}

}  // namespace

TEST_CASE("kernel policy: cifar-small trains alike on the reference and the fast kernels") {
  if (!fast_kernels_built()) {
    WARN("skipped: this build has no fast kernels (NORMA_FAST_KERNELS=OFF) to compare with the reference ones");
    return;
  }
  const Trained fast = train_cifar_small(KernelPolicy{}, 6, 2);
  const Trained ref = train_cifar_small(KernelPolicy{.fast = false}, 6, 2);
  REQUIRE(fast.losses.size() == ref.losses.size());
  for (size_t s = 0; s < fast.losses.size(); ++s) {
    CAPTURE(s, fast.losses[s], ref.losses[s]);
    CHECK(std::abs(fast.losses[s] - ref.losses[s]) <= 1e-3 * std::abs(ref.losses[s]));
  }
  // The kernels round differently (Winograd against im2col, the order of
  // sums): after two steps each tensor differs by rounding only (measured
  // 1e-6 relative). Later a max-pool window whose two largest values are that
  // close picks the other one, and the runs part by more (1e-3 after a third
  // step), which only the losses above are held to.
  REQUIRE(fast.state.size() == ref.state.size());
  for (size_t i = 0; i < fast.state.size(); ++i) {
    const auto& [name, a] = fast.state[i];
    const Tensor& b = ref.state[i].second;
    double diff = 0, norm = 0;
    for (int64_t j = 0; j < a.numel(); ++j) {
      const double d = double(a.contiguous().data_ptr()[j]) - b.contiguous().data_ptr()[j];
      diff += d * d;
      norm += double(b.contiguous().data_ptr()[j]) * b.contiguous().data_ptr()[j];
    }
    CAPTURE(name, std::sqrt(diff), std::sqrt(norm));
    CHECK(std::sqrt(diff) <= 1e-5 * std::max(1.0, std::sqrt(norm)));
  }
}

TEST_CASE("kernel policy: the ISA level, from NORMA_ISA or code, only one the CPU has") {
  // cpu_isa() never above what /proc/cpuinfo lists (the kernel leaves out
  // what the OS does not support). Not "equal": under an emulator such as
  // qemu-user, /proc/cpuinfo is the host's while CPUID is the emulated CPU's.
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line) && line.rfind("flags", 0) != 0) {
  }
  if (!line.empty()) {
    std::istringstream words(line);
    std::set<std::string> flags;
    for (std::string w; words >> w;) flags.insert(w);
    auto has = [&](std::initializer_list<const char*> names) {
      return std::all_of(names.begin(), names.end(), [&](const char* n) { return flags.count(n) > 0; });
    };
    const bool avx2 = has({"avx2", "fma", "f16c", "bmi2"});
    const bool avx512 = avx2 && has({"avx512f", "avx512bw", "avx512dq", "avx512vl"});
    CHECK(cpu_isa() <= (avx512 ? Isa::avx512 : avx2 ? Isa::avx2 : Isa::baseline));
  }

  ScopedEnv i("NORMA_ISA", nullptr);
  CHECK(KernelPolicy::from_env().isa == Isa::automatic);
  for (Isa isa : {Isa::automatic, Isa::baseline, Isa::avx2, Isa::avx512}) {
    ScopedEnv i2("NORMA_ISA", isa_name(isa));
    CAPTURE(isa_name(isa));
    if (isa <= cpu_isa())
      CHECK(KernelPolicy::from_env().isa == isa);
    else
      CHECK_THROWS_WITH(KernelPolicy::from_env(), Catch::Contains("is not supported by this CPU"));
  }
  {
    ScopedEnv i2("NORMA_ISA", "sse9");
    CHECK_THROWS_WITH(KernelPolicy::from_env(),
                      "NORMA_ISA: expected 'auto', 'baseline', 'avx2' or 'avx512', got 'sse9'");
  }
  // A level the CPU lacks, on whatever CPU runs this: as a CPU with less would refuse it.
  CHECK_THROWS_WITH(check_isa(Isa::avx512, Isa::avx2),
                    "kernel policy: ISA level 'avx512' is not supported by this CPU, which has baseline, avx2");
  CHECK_THROWS_WITH(check_isa(Isa::avx2, Isa::baseline),
                    "kernel policy: ISA level 'avx2' is not supported by this CPU, which has baseline");
  CHECK_NOTHROW(check_isa(Isa::automatic, Isa::baseline));
  CHECK_NOTHROW(check_isa(Isa::avx512, Isa::avx512));
  // set_kernel_policy refuses such a level and keeps the policy it had.
  if (cpu_isa() != Isa::avx512) {
    const Isa before = kernel_isa();
    CHECK_THROWS_WITH(set_kernel_policy(KernelPolicy{.isa = Isa::avx512}),
                      Catch::Contains("ISA level 'avx512' is not supported by this CPU"));
    CHECK(kernel_isa() == before);
  }

  // automatic runs the CPU's best level; each level the CPU has runs its own copy.
  {
    KernelPolicyGuard g(KernelPolicy{});
    CHECK(kernel_isa() == cpu_isa());
  }
  for (Isa isa : {Isa::baseline, Isa::avx2, Isa::avx512}) {
    if (isa > cpu_isa()) continue;
    KernelPolicyGuard g(KernelPolicy{.isa = isa});
    CHECK(kernel_isa() == isa);
#if NORMA_FAST_KERNELS
    CHECK(&nn::fast::kernels() == &nn::fast::kernels(isa));
    CHECK(nn::batchnorm2d_fast_kernels() == nn::fast::kernels(isa).batchnorm2d);
#endif
  }
#if NORMA_FAST_KERNELS
  CHECK(&nn::fast::kernels(Isa::baseline) != &nn::fast::kernels(Isa::avx2));
  CHECK(&nn::fast::kernels(Isa::avx2) != &nn::fast::kernels(Isa::avx512));
  CHECK(nn::fast::kernels(Isa::baseline).conv2d_winograd_forward != nn::fast::kernels(Isa::avx512).conv2d_winograd_forward);
#endif
}

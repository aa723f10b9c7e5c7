// The kernel policy (core/kernel_policy.h): read from the environment in one
// place, set from code, scoped by a guard.
#include <cstdlib>
#include <optional>
#include <string>

#include <catch2/catch.hpp>
#include <norma/core/kernel_policy.h>

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
      d("NORMA_DIRECT_CONV", nullptr), s("NORMA_STREAM_STORES", nullptr);
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

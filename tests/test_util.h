// Helpers shared by the tests: compare tensors and report the worst element.
#pragma once
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <norma/norma.h>

namespace norma::test {

// Catch2 v2 has no SKIP: a test of the fast kernels warns and returns in a
// build without them (-DNORMA_FAST_KERNELS=OFF).
inline bool fast_kernels_or_skip() {
  if (fast_kernels_built()) return true;
  WARN("skipped: built without the fast kernels (NORMA_FAST_KERNELS=OFF)");
  return false;
}

// The fast kernels are compiled once per ISA level (core/kernel_policy.h), and
// their tests run once per level: after
//   const Isa isa = GENERATE(Isa::baseline, Isa::avx2, Isa::avx512);
// isa_or_skip warns and returns false for a level this CPU lacks, and
// at_isa(policy, isa) is a policy that runs that level's copy.
inline bool isa_or_skip(Isa isa) {
  if (isa <= cpu_isa()) return true;
  WARN("skipped: this CPU lacks " << isa_name(isa) << " (it has up to " << isa_name(cpu_isa()) << ")");
  return false;
}
inline KernelPolicy at_isa(KernelPolicy policy, Isa isa) {
  policy.isa = isa;
  return policy;
}

struct Diff {
  double max_abs = 0;
  int64_t index = -1;
  double got = 0, want = 0;
  bool ok = true;
};

// Elementwise |got - want| <= atol + rtol * |want|; records the worst element.
inline Diff compare(const std::vector<float>& got, const std::vector<float>& want, double rtol, double atol) {
  Diff d;
  if (got.size() != want.size()) {
    d.ok = false;
    return d;
  }
  double worst = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    double e = std::fabs(double(got[i]) - want[i]);
    double r = e / (atol + rtol * std::fabs(want[i]));
    if (std::isnan(got[i]) != std::isnan(want[i])) r = INFINITY;
    if (e > d.max_abs) d.max_abs = e;
    if (r > worst) {
      worst = r;
      d.index = int64_t(i);
      d.got = got[i];
      d.want = want[i];
    }
  }
  d.ok = worst <= 1.0;
  return d;
}

// CHECKs that two tensors match, printing the max abs diff and where.
#define NORMA_CHECK_CLOSE(got_t, want_t, rtol, atol)                                                      \
  do {                                                                                                    \
    auto gv_ = (got_t).to_vector();                                                                       \
    auto wv_ = (want_t).to_vector();                                                                      \
    auto d_ = ::norma::test::compare(gv_, wv_, (rtol), (atol));                                           \
    INFO(#got_t " vs " #want_t ": sizes " << gv_.size() << "/" << wv_.size() << ", max abs diff "         \
                                          << d_.max_abs << ", worst at flat index " << d_.index << ": got " \
                                          << d_.got << " want " << d_.want);                             \
    CHECK(d_.ok);                                                                                         \
  } while (0)

// max |got - want| / max |want|: relative to the tensor's scale. Per-element
// relative error is meaningless for values (gradients) that are ~0 in places.
inline double scaled_diff(const Tensor& got, const Tensor& want) {
  auto g = got.to_vector(), w = want.to_vector();
  REQUIRE(g.size() == w.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    num = std::max(num, std::fabs(double(g[i]) - w[i]));
    den = std::max(den, std::fabs(double(w[i])));
  }
  return den > 0 ? num / den : num;
}

// The names of a state_dict / named_parameters() list, in order.
inline std::vector<std::string> keys(const NamedTensors& named) {
  std::vector<std::string> out;
  for (const auto& [k, t] : named) out.push_back(k);
  return out;
}

// fn() must throw norma::Error whose message holds every piece.
template <class F>
void check_error(F&& fn, const std::vector<std::string>& pieces) {
  std::string msg;
  try {
    fn();
  } catch (const Error& e) {
    msg = e.what();
  }
  INFO("error message: '" << msg << "'");
  REQUIRE(!msg.empty());
  for (const std::string& p : pieces) CHECK_THAT(msg, Catch::Contains(p));
}

}  // namespace norma::test

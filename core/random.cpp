// The random generator behind manual_seed, uniform and normal (core/tensor.h).
#include <cmath>
#include <mutex>

#include "tensor.h"

namespace norma {

// Counter-based (SplitMix64 of seed + counter): the state is two integers, so
// a checkpoint restores it exactly in O(1).

namespace {
struct Generator {
  std::mutex mu;
  uint64_t seed = 0x4e6f726d61ull;  // "Norma"
  uint64_t draws = 0;
};
Generator& gen() {
  static Generator g;
  return g;
}
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
uint32_t next_u32_locked(Generator& g) {
  return uint32_t(splitmix64(g.seed + 0x9E3779B97F4A7C15ull * g.draws++) >> 32);
}
float u32_to_unit(uint32_t u) { return float(u >> 8) * (1.0f / 16777216.0f); }  // 24 bits: [0, 1)
}  // namespace

void manual_seed(uint64_t seed) {
  std::lock_guard<std::mutex> l(gen().mu);
  gen().seed = seed;
  gen().draws = 0;
}
GeneratorState get_rng_state() {
  std::lock_guard<std::mutex> l(gen().mu);
  return {gen().seed, gen().draws};
}
void set_rng_state(const GeneratorState& s) {
  std::lock_guard<std::mutex> l(gen().mu);
  gen().seed = s.seed;
  gen().draws = s.draws;
}
uint32_t random_u32() {
  std::lock_guard<std::mutex> l(gen().mu);
  return next_u32_locked(gen());
}
float random_uniform() { return u32_to_unit(random_u32()); }
float random_normal() {
  // Box-Muller on one pair of uniforms per normal: no spare is kept, so the
  // generator state stays the two integers above.
  Generator& g = gen();
  std::lock_guard<std::mutex> l(g.mu);
  float u1 = u32_to_unit(next_u32_locked(g)), u2 = u32_to_unit(next_u32_locked(g));
  double r = std::sqrt(-2.0 * std::log(1.0 - double(u1)));  // 1-u1 in (0, 1]
  return float(r * std::cos(2.0 * M_PI * double(u2)));
}

Tensor rand(const Shape& shape) { return uniform(shape, 0.0f, 1.0f); }
Tensor uniform(const Shape& shape, float low, float high) {
  if (!(low <= high) || !std::isfinite(low) || !std::isfinite(high))
    fail("uniform: need finite low <= high, got low {} and high {}", low, high);
  Tensor t = empty(shape);
  float* p = t.data_ptr();
  for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = low + (high - low) * random_uniform();
  return t;
}
Tensor randn(const Shape& shape) { return normal(shape, 0.0f, 1.0f); }
Tensor normal(const Shape& shape, float mean, float std) {
  if (!(std >= 0) || !std::isfinite(mean) || !std::isfinite(std))
    fail("normal: need a finite mean and std >= 0, got mean {} and std {}", mean, std);
  Tensor t = empty(shape);
  float* p = t.data_ptr();
  for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = mean + std * random_normal();
  return t;
}

}  // namespace norma

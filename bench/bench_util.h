// Timing helpers shared by the bench/ programs.
#pragma once
#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace norma::bench {

// Seconds per call of f, averaged over `reps` back-to-back calls.
inline double seconds_per_call(const std::function<void()>& f, int reps) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}

// The median; the mean of the two middle values for an even count.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

}  // namespace norma::bench

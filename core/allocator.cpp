#include "allocator.h"

#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "error.h"

namespace norma {
namespace {

struct Cache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free_lists;  // size class -> blocks
  AllocatorStats stats;
};

Cache& cache() {
  static Cache* c = new Cache;  // leaked on purpose: storage may be freed during static destruction
  return *c;
}

}  // namespace

size_t size_class(size_t bytes) {
  if (bytes <= 64) return 64;
  // Round up to a multiple of 2^(k-2) where 2^k <= bytes < 2^(k+1).
  int k = 63 - __builtin_clzll(bytes);
  size_t step = size_t(1) << (k - 2);
  return (bytes + step - 1) / step * step;
}

void* cached_alloc(size_t bytes) {
  size_t cls = size_class(bytes);
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free_lists.find(cls);
    if (it != c.free_lists.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      c.stats.cached_allocs++;
      c.stats.bytes_cached -= cls;
      c.stats.bytes_in_use += cls;
      if (c.stats.bytes_in_use > c.stats.peak_bytes_in_use) c.stats.peak_bytes_in_use = c.stats.bytes_in_use;
      return p;
    }
  }
  void* p = std::aligned_alloc(64, (cls + 63) / 64 * 64);  // the size must be a multiple of the alignment
  if (!p) fail("allocator: out of memory allocating {} bytes", cls);
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.fresh_allocs++;
  c.stats.fresh_bytes += cls;
  c.stats.bytes_in_use += cls;
  if (c.stats.bytes_in_use > c.stats.peak_bytes_in_use) c.stats.peak_bytes_in_use = c.stats.bytes_in_use;
  return p;
}

void cached_free(void* p, size_t bytes) {
  if (!p) return;
  size_t cls = size_class(bytes);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.free_lists[cls].push_back(p);
  c.stats.bytes_in_use -= cls;
  c.stats.bytes_cached += cls;
}

AllocatorStats allocator_stats() {
  std::lock_guard<std::mutex> lock(cache().mu);
  return cache().stats;
}

void reset_allocator_peak() {
  std::lock_guard<std::mutex> lock(cache().mu);
  cache().stats.peak_bytes_in_use = cache().stats.bytes_in_use;
}

void empty_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [cls, blocks] : c.free_lists)
    for (void* p : blocks) std::free(p);
  c.free_lists.clear();
  c.stats.bytes_cached = 0;
}

}  // namespace norma

#include "allocator.h"

#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "error.h"

// Under AddressSanitizer a cached block is poisoned while it sits in a free
// list, and so is the tail past the bytes asked for: without this, reading a
// freed tensor or past a tensor's end inside its size class goes unseen.
#if defined(__SANITIZE_ADDRESS__)
#define NORMA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NORMA_ASAN 1
#endif
#endif
#ifdef NORMA_ASAN
#include <sanitizer/asan_interface.h>
#define NORMA_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define NORMA_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define NORMA_POISON(p, n) ((void)(p), (void)(n))
#define NORMA_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace norma {
namespace {

struct Cache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free_lists;  // size class -> blocks
  std::unordered_map<void*, size_t> lent_up;  // blocks handed out for a smaller class -> their own class
  AllocatorStats stats;
};

Cache& cache() {
  static Cache* c = new Cache;  // leaked on purpose: storage may be freed during static destruction
  return *c;
}

// What aligned_alloc is asked for: its size must be a multiple of the alignment.
size_t block_bytes(size_t cls) { return (cls + 63) / 64 * 64; }

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
    // The exact class, else the smallest cached block up to twice as large: a
    // batch of another size (an epoch's last, partial batch) then reuses the full
    // batches' blocks instead of faulting in a second set.
    size_t got = cls;
    auto it = c.free_lists.find(cls);
    for (size_t up = cls; (it == c.free_lists.end() || it->second.empty()) && up < 2 * cls;) {
      up = size_class(up + 1);
      got = up;
      it = c.free_lists.find(up);
    }
    if (it != c.free_lists.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      if (got != cls) c.lent_up[p] = got;
      c.stats.cached_allocs++;
      c.stats.bytes_cached -= got;
      c.stats.bytes_in_use += got;
      if (c.stats.bytes_in_use > c.stats.peak_bytes_in_use) c.stats.peak_bytes_in_use = c.stats.bytes_in_use;
      NORMA_UNPOISON(p, bytes);
      NORMA_POISON(static_cast<char*>(p) + bytes, block_bytes(got) - bytes);
      return p;
    }
  }
  void* p = std::aligned_alloc(64, block_bytes(cls));
  if (!p) fail("allocator: out of memory allocating {} bytes", cls);
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.fresh_allocs++;
  c.stats.fresh_bytes += cls;
  c.stats.bytes_in_use += cls;
  if (c.stats.bytes_in_use > c.stats.peak_bytes_in_use) c.stats.peak_bytes_in_use = c.stats.bytes_in_use;
  NORMA_POISON(static_cast<char*>(p) + bytes, block_bytes(cls) - bytes);
  return p;
}

void cached_free(void* p, size_t bytes) {
  if (!p) return;
  size_t cls = size_class(bytes);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (!c.lent_up.empty())
    if (auto it = c.lent_up.find(p); it != c.lent_up.end()) {
      cls = it->second;
      c.lent_up.erase(it);
    }
  NORMA_POISON(p, block_bytes(cls));
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
    for (void* p : blocks) {
      NORMA_UNPOISON(p, block_bytes(cls));  // free() itself must not find the block poisoned
      std::free(p);
    }
  c.free_lists.clear();
  c.stats.bytes_cached = 0;
}

}  // namespace norma

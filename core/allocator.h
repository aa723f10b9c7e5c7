// Caching allocator for tensor storage.
// Freed blocks go to a free list keyed by size class and are handed out again
// (for the same class, or for a class at most 2x smaller when their own list is
// empty), so a training loop stops asking the OS for memory after its first step (on
// the VMs Norma targets, touching a fresh 32 MiB buffer costs ~100 ms; a reused
// one, under 1 ms). Thread-safe: the data loader allocates from its own thread.
#pragma once
#include <cstddef>
#include <cstdint>

namespace norma {

struct AllocatorStats {
  int64_t fresh_allocs = 0;    // blocks obtained from the system (each one faults in new pages)
  int64_t fresh_bytes = 0;     // bytes of those blocks
  int64_t cached_allocs = 0;   // requests served from the free lists
  int64_t bytes_in_use = 0;    // bytes handed out and not yet freed
  int64_t bytes_cached = 0;    // bytes sitting in the free lists
  int64_t peak_bytes_in_use = 0;
};

// Allocates at least `bytes` bytes, 64-byte aligned. Never returns null (throws norma::Error).
void* cached_alloc(size_t bytes);
// Returns a block obtained from cached_alloc(bytes) to its free list.
void cached_free(void* p, size_t bytes);

// A block from cached_alloc, held for the object's lifetime (what a max pool
// keeps of its argmax for the backward, say): a fresh std::vector of a few MiB
// faults its pages in again every step.
struct CachedBuffer {
  size_t bytes;
  void* data;
  explicit CachedBuffer(size_t n) : bytes(n > 0 ? n : 1), data(cached_alloc(bytes)) {}
  ~CachedBuffer() { cached_free(data, bytes); }
  CachedBuffer(const CachedBuffer&) = delete;
  CachedBuffer& operator=(const CachedBuffer&) = delete;
};

// The size class a request of `bytes` is rounded up to: four classes per power
// of two, so rounding wastes at most 25%.
size_t size_class(size_t bytes);

AllocatorStats allocator_stats();
void reset_allocator_peak();
// Gives every cached block back to the system.
void empty_cache();

}  // namespace norma

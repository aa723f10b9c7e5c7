// The caching allocator: size-class rounding, reuse of freed blocks, and a
// training loop that stops asking the system for memory after its first step.
#include "test_util.h"

using namespace norma;

TEST_CASE("allocator: size classes round up to four steps per power of two") {
  CHECK(size_class(1) == 64);
  CHECK(size_class(64) == 64);
  CHECK(size_class(65) == 80);      // 64 <= n < 128: steps of 16
  CHECK(size_class(100) == 112);
  CHECK(size_class(128) == 128);
  CHECK(size_class(129) == 160);    // 128 <= n < 256: steps of 32
  CHECK(size_class(1000) == 1024);  // 512 <= n < 1024: steps of 128
  CHECK(size_class(1025) == 1280);  // 1024 <= n < 2048: steps of 256
  CHECK(size_class(3 << 20) == size_t(3) << 20);  // already a class
  CHECK(size_class((32 << 20) + 1) == size_t(40) << 20);
  // Every class holds the request and wastes under 25%.
  for (size_t n = 1; n < (1 << 16); n = n * 5 / 4 + 1) {
    CAPTURE(n);
    size_t c = size_class(n);
    CHECK(c >= n);
    if (n > 64) CHECK(double(c - n) < 0.25 * double(n));
    CHECK(size_class(c) == c);  // classes are fixed points
  }
}

TEST_CASE("allocator: freed blocks are reused for requests of the same class") {
  const size_t bytes = 12345 * sizeof(float);
  void* p = cached_alloc(bytes);
  CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
  AllocatorStats s0 = allocator_stats();
  cached_free(p, bytes);
  AllocatorStats s1 = allocator_stats();
  CHECK(s1.bytes_in_use == s0.bytes_in_use - int64_t(size_class(bytes)));
  CHECK(s1.bytes_cached == s0.bytes_cached + int64_t(size_class(bytes)));
  // A slightly different request in the same class gets the same block back, from the cache.
  void* q = cached_alloc(bytes - 40);
  AllocatorStats s2 = allocator_stats();
  CHECK(q == p);
  CHECK(s2.fresh_allocs == s1.fresh_allocs);
  CHECK(s2.cached_allocs == s1.cached_allocs + 1);
  CHECK(s2.peak_bytes_in_use >= s2.bytes_in_use);
  cached_free(q, bytes - 40);

  // Tensors go through the same cache.
  { Tensor t = empty({12345}); }
  AllocatorStats s3 = allocator_stats();
  { Tensor t = empty({12345}); }
  CHECK(allocator_stats().fresh_allocs == s3.fresh_allocs);

  // empty_cache hands everything back; the next request is fresh again.
  empty_cache();
  CHECK(allocator_stats().bytes_cached == 0);
  AllocatorStats s4 = allocator_stats();
  { Tensor t = empty({12345}); }
  CHECK(allocator_stats().fresh_allocs == s4.fresh_allocs + 1);
}

TEST_CASE("allocator: a request with no block of its class borrows one up to twice as large") {
  empty_cache();
  const size_t big = 1 << 20;  // class 1 MiB
  void* p = cached_alloc(big);
  cached_free(p, big);
  const AllocatorStats s0 = allocator_stats();
  // 600 KB (class 640 KiB) finds no block of its own class: it gets the 1 MiB block.
  void* q = cached_alloc(600000);
  const AllocatorStats s1 = allocator_stats();
  CHECK(q == p);
  CHECK(s1.fresh_allocs == s0.fresh_allocs);
  CHECK(s1.bytes_in_use == s0.bytes_in_use + int64_t(big));  // accounted at the block's real size
  // Freed under its small size, it still returns to the 1 MiB list.
  cached_free(q, 600000);
  CHECK(allocator_stats().bytes_cached == s0.bytes_cached);
  void* r = cached_alloc(big);
  CHECK(r == p);
  CHECK(allocator_stats().fresh_allocs == s0.fresh_allocs);
  cached_free(r, big);
  // More than twice as small: a fresh block, the big one stays cached.
  void* t = cached_alloc(400000);
  CHECK(t != p);
  CHECK(allocator_stats().fresh_allocs == s0.fresh_allocs + 1);
  cached_free(t, 400000);
  empty_cache();
}

TEST_CASE("allocator: a training loop makes no fresh allocations after its first step") {
  // A 2-32-32-1 MLP fit to y = x0 * x1 by plain SGD, as in `norma demo`.
  manual_seed(5);
  Tensor x = uniform({128, 2}, -1, 1);
  Tensor y = (x.select(1, 0) * x.select(1, 1)).unsqueeze(1);
  auto param = [](Shape s, float fan_in) {
    return uniform(s, -1 / std::sqrt(fan_in), 1 / std::sqrt(fan_in)).requires_grad_();
  };
  std::vector<Tensor> params{param({2, 32}, 2), param({32}, 2), param({32, 32}, 32), param({32}, 32),
                             param({32, 1}, 32), param({1}, 32)};
  auto step = [&] {
    Tensor h = relu(matmul(x, params[0]) + params[1]);
    h = relu(matmul(h, params[2]) + params[3]);
    Tensor loss = (matmul(h, params[4]) + params[5] - y).pow(2).mean();
    loss.backward();
    NoGradGuard g;
    for (Tensor& p : params) {
      p.sub_(p.grad() * 0.1f);
      p.zero_grad();
    }
    return loss.item();
  };
  const float first_loss = step();
  const AllocatorStats after_first = allocator_stats();
  float last_loss = first_loss;
  for (int i = 2; i <= 100; ++i) last_loss = step();
  const AllocatorStats after_last = allocator_stats();
  INFO("fresh allocations after step 1: " << after_first.fresh_allocs << ", after step 100: "
                                          << after_last.fresh_allocs << "; loss " << first_loss << " -> "
                                          << last_loss);
  CHECK(after_last.fresh_allocs == after_first.fresh_allocs);
  CHECK(after_last.cached_allocs > after_first.cached_allocs + 99 * 20);  // every step did allocate, from the cache
  CHECK(after_last.bytes_in_use == after_first.bytes_in_use);  // and leaked nothing
  CHECK(last_loss < 0.5f * first_loss);  // the loop really trained
}

// broadcast_state and allreduce_gradients.
#include "data_parallel.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "../autograd.h"

namespace norma::dist {

namespace {

// FNV-1a over names and shapes: two models with the same signature have the same layout.
int64_t layout_hash(const NamedTensors& state) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const void* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const unsigned char*>(p)[i]) * 1099511628211ull;
  };
  for (const auto& [name, t] : state) {
    mix(name.data(), name.size());
    for (int64_t s : t.shape()) mix(&s, sizeof s);
  }
  return int64_t(h >> 1);
}

}  // namespace

void broadcast_state(const NamedTensors& state, ProcessGroup& pg, int root) {
  if (root < 0 || root >= pg.size())
    fail("broadcast_state: root {} is not a rank of the group (size {})", root, pg.size());
  int64_t total = 0;
  for (const auto& [name, t] : state) total += t.numel();
  // Root's layout against each rank's, then one verdict for all (no rank may
  // leave while the others wait in the broadcast).
  int64_t mine[3] = {int64_t(state.size()), total, layout_hash(state)}, roots[3] = {mine[0], mine[1], mine[2]};
  pg.broadcast(roots, 3, root);
  int64_t mismatched = std::equal(mine, mine + 3, roots) ? 0 : 1;
  pg.allreduce_sum(&mismatched, 1);
  if (mismatched)
    fail("broadcast_state: the model differs across ranks ({} of {} differ from root {}): rank {} has {} tensors "
         "and {} values, root has {} tensors and {} values{}",
         mismatched, pg.size(), root, pg.rank(), mine[0], mine[1], roots[0], roots[1],
         mine[0] == roots[0] && mine[1] == roots[1] ? " (names or shapes differ)" : "");
  std::vector<float> flat(static_cast<size_t>(total));
  size_t at = 0;
  for (const auto& [name, t] : state) {
    Tensor c = t.contiguous();
    std::memcpy(flat.data() + at, c.data_ptr(), sizeof(float) * size_t(t.numel()));
    at += size_t(t.numel());
  }
  pg.broadcast(flat.data(), flat.size(), root);
  if (pg.rank() == root) return;
  NoGradGuard g;
  at = 0;
  for (const auto& [name, t] : state) {
    Tensor src = from_vector(std::vector<float>(flat.begin() + at, flat.begin() + at + t.numel()), t.shape());
    t.detach().copy_(src);  // bumps the version counter
    at += size_t(t.numel());
  }
}

void allreduce_gradients(const std::vector<Tensor>& params, ProcessGroup& pg, size_t bucket_bytes) {
  if (bucket_bytes < sizeof(float))
    fail("allreduce_gradients: bucket_bytes must hold at least one float (4 bytes), got {}", bucket_bytes);
  std::vector<std::pair<float*, size_t>> grads;
  for (const Tensor& p : params) {
    if (!p.requires_grad()) continue;
    if (!p.grad().defined()) {
      Tensor handle = p;
      handle.set_grad(zeros_like(p));
    }
    grads.emplace_back(p.grad().data_ptr(), size_t(p.numel()));
  }
  if (pg.size() == 1) return;
  // One buffer, reused across buckets and calls; a tensor may straddle buckets.
  thread_local std::vector<float> bucket;
  const size_t cap = bucket_bytes / sizeof(float);
  bucket.resize(cap);
  const float scale = 1.0f / float(pg.size());
  std::vector<std::pair<float*, size_t>> pending;  // where the bucket's pieces go back
  size_t filled = 0;
  auto flush = [&] {
    pg.allreduce_sum(bucket.data(), filled);
    size_t at = 0;
    for (auto [dst, n] : pending) {
      for (size_t i = 0; i < n; ++i) dst[i] = bucket[at + i] * scale;
      at += n;
    }
    pending.clear();
    filled = 0;
  };
  for (auto [src, n] : grads) {
    while (n > 0) {
      const size_t take = std::min(n, cap - filled);
      std::memcpy(bucket.data() + filled, src, take * sizeof(float));
      pending.emplace_back(src, take);
      filled += take;
      src += take;
      n -= take;
      if (filled == cap) flush();
    }
  }
  if (filled > 0) flush();
}

}  // namespace norma::dist

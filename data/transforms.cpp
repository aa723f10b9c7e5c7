// Crop, flip and normalisation kernels and the counter-based hash behind them.
#include "transforms.h"

#include <cstring>

namespace norma::data {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Chained so that every argument passes through the mixer before the next is
// folded in: nearby (epoch, index) pairs give unrelated values.
uint64_t hash_u64(uint64_t seed, uint64_t epoch, uint64_t index, uint64_t stream) {
  return splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ index) ^ stream);
}

uint64_t hash_below(uint64_t h, uint64_t n) { return uint64_t((unsigned __int128)h * n >> 64); }

Augment draw_augment(uint64_t seed, uint64_t epoch, uint64_t index, int pad) {
  uint64_t h = hash_u64(seed, epoch, index, /*stream=*/1);
  Augment a;
  a.dy = int(hash_below(h, uint64_t(2 * pad + 1))) - pad;
  a.dx = int(hash_below(splitmix64(h), uint64_t(2 * pad + 1))) - pad;
  a.flip = splitmix64(h ^ 0x5bd1e995ull) >> 63;
  return a;
}

void crop_flip(uint8_t* out, const uint8_t* in, int64_t C, int64_t H, int64_t W, int dy, int dx, bool flip) {
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < H; ++y) {
      uint8_t* o = out + (c * H + y) * W;
      int64_t sy = y + dy;
      if (sy < 0 || sy >= H) {
        std::memset(o, 0, size_t(W));
        continue;
      }
      const uint8_t* row = in + (c * H + sy) * W;
      for (int64_t x = 0; x < W; ++x) {
        int64_t sx = (flip ? W - 1 - x : x) + dx;
        o[x] = sx >= 0 && sx < W ? row[sx] : 0;
      }
    }
}

void to_float(float* out, const uint8_t* in, int64_t C, int64_t HW, const float* mean, const float* std) {
  for (int64_t c = 0; c < C; ++c) {
    // A table of the 256 possible values, each computed in float32 exactly as
    // torchvision's ToTensor then Normalize do (divide, subtract, divide).
    float table[256];
    for (int p = 0; p < 256; ++p) table[p] = mean ? (float(p) / 255.0f - mean[c]) / std[c] : float(p) / 255.0f;
    for (int64_t i = 0; i < HW; ++i) out[c * HW + i] = table[in[c * HW + i]];
  }
}

}  // namespace norma::data

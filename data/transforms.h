// Image transforms for the loader: random crop with zero padding, horizontal
// flip, per-channel normalisation; plus the counter-based random numbers that
// drive them. Kernels on raw pointers, one image at a time.
//
// Dimension letters: C channels, H height, W width (images are CHW).
//
// Randomness is a pure function of (seed, epoch, sample index, stream): no
// generator state, so a worker thread, a different batch size or a different
// rank draws exactly the same crop and flip for the same sample.
#pragma once
#include <cstdint>

namespace norma::data {

// CIFAR-10 per-channel statistics of the training set (RGB), as used by the
// usual PyTorch recipes: x = (pixel / 255 - mean[c]) / std[c].
inline constexpr float kCifar10Mean[3] = {0.4914f, 0.4822f, 0.4465f};
inline constexpr float kCifar10Std[3] = {0.2470f, 0.2435f, 0.2616f};

// SplitMix64's finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
uint64_t splitmix64(uint64_t x);
// A 64-bit random value determined by its four arguments alone.
uint64_t hash_u64(uint64_t seed, uint64_t epoch, uint64_t index, uint64_t stream);
// Uniform integer in [0, n) from a 64-bit hash (multiply-shift; bias below n / 2^64).
uint64_t hash_below(uint64_t h, uint64_t n);

// One sample's augmentation: crop offset (dy, dx) in [-pad, pad] and a flip.
struct Augment {
  int dy = 0, dx = 0;
  bool flip = false;
};
// Draws a crop offset for zero padding `pad` and a horizontal flip with p = 0.5.
Augment draw_augment(uint64_t seed, uint64_t epoch, uint64_t index, int pad);

// out[c][y][x] = in[c][y + dy][x' + dx] with x' = flip ? W-1-x : x, and 0 where
// that falls outside the image. Equal to padding by max(|dy|, |dx|) zeros,
// cropping HxW at (pad + dy, pad + dx), then flipping, as torchvision's
// RandomCrop(32, padding=4) followed by RandomHorizontalFlip does.
void crop_flip(uint8_t* out, const uint8_t* in, int64_t C, int64_t H, int64_t W, int dy, int dx, bool flip);

// out = (in / 255 - mean[c]) / std[c] over C planes of HW pixels, in float32
// with the same rounding as torchvision's ToTensor + Normalize; mean and std
// null gives plain in / 255 (ToTensor alone).
void to_float(float* out, const uint8_t* in, int64_t C, int64_t HW, const float* mean, const float* std);

}  // namespace norma::data

// Synthetic CIFAR files for the data and download tests: a few records per
// file with labels and pixels that are known functions of their position,
// written in a fresh temporary directory.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <norma/norma.h>

#include "temp_dir.h"

namespace norma::test {


// Pixel byte `p` (0..3071) of record `r` in file number `f`, and its label.
inline uint8_t synth_pixel(int f, int64_t r, int64_t p) { return uint8_t((f * 31 + r * 7 + p * 3) % 256); }
inline uint8_t synth_label(int f, int64_t r, int classes) { return uint8_t((f * 3 + r) % classes); }

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// CIFAR-10 layout: files 0..4 are data_batch_1..5, file 5 test_batch; `records` records each.
inline void write_synth_cifar10(const std::string& dir, int64_t records) {
  std::filesystem::create_directories(dir);
  for (int f = 0; f < 6; ++f) {
    std::vector<uint8_t> bytes;
    for (int64_t r = 0; r < records; ++r) {
      bytes.push_back(synth_label(f, r, 10));
      for (int64_t p = 0; p < 3072; ++p) bytes.push_back(synth_pixel(f, r, p));
    }
    std::string name = f < 5 ? fmt::format("data_batch_{}.bin", f + 1) : "test_batch.bin";
    write_bytes(dir + "/" + name, bytes);
  }
}

// CIFAR-100 layout: file 0 is train.bin, file 1 test.bin; coarse label = fine / 5.
inline void write_synth_cifar100(const std::string& dir, int64_t records) {
  std::filesystem::create_directories(dir);
  for (int f = 0; f < 2; ++f) {
    std::vector<uint8_t> bytes;
    for (int64_t r = 0; r < records; ++r) {
      uint8_t fine = synth_label(f, r, 100);
      bytes.push_back(uint8_t(fine / 5));
      bytes.push_back(fine);
      for (int64_t p = 0; p < 3072; ++p) bytes.push_back(synth_pixel(f, r, p));
    }
    write_bytes(dir + "/" + (f == 0 ? "train.bin" : "test.bin"), bytes);
  }
}

// A CIFAR-10 directory a CNN learns in a few steps (the CLI tests train on
// it): every class has its own colour plus seeded noise in [-20, 20].
// data_batch_1..5.bin with `per_file` records each, test_batch.bin with `test`.
inline std::vector<uint8_t> learnable_records(int64_t n, uint64_t seed) {
  std::vector<uint8_t> out;
  out.reserve(size_t(n) * 3073);
  uint64_t s = seed * 2654435761u + 1;
  auto noise = [&] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((s >> 33) % 41) - 20;
  };
  for (int64_t i = 0; i < n; ++i) {
    const int label = static_cast<int>((uint64_t(i) * 7 + seed) % 10);
    out.push_back(static_cast<uint8_t>(label));
    const int base[3] = {25 * label, 255 - 25 * label, (label % 2) * 200 + 20};
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p) out.push_back(static_cast<uint8_t>(std::clamp(base[c] + noise(), 0, 255)));
  }
  return out;
}
inline void write_learnable_cifar10(const std::string& dir, int64_t per_file, int64_t test) {
  std::filesystem::create_directories(dir);
  for (int b = 1; b <= 5; ++b)
    write_bytes(fmt::format("{}/data_batch_{}.bin", dir, b), learnable_records(per_file, uint64_t(b)));
  write_bytes(dir + "/test_batch.bin", learnable_records(test, 99));
}

// The message of the norma::Error that fn throws ("" when it throws none).
template <class F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const norma::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace norma::test

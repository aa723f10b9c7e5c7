// Synthetic CIFAR files for the data and download tests: a few records per
// file with labels and pixels that are known functions of their position,
// written in a fresh temporary directory.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <norma/norma.h>

namespace norma::test {

// A directory under the system temp dir, emptied on creation and removed on destruction.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag)
      : path(std::filesystem::temp_directory_path() / fmt::format("norma_{}_{}", tag, getpid())) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string str(const std::string& name = "") const { return (name.empty() ? path : path / name).string(); }
};

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

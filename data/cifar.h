// CIFAR-10 and CIFAR-100 in the official binary layout, read into memory as
// uint8 (all of CIFAR-10 is 184 MB); images become float only per batch, in
// the loader. https://www.cs.toronto.edu/~kriz/cifar.html
//
// Record layouts (images are CHW: 1024 red, 1024 green, 1024 blue bytes, each
// plane 32x32 row-major):
//   CIFAR-10:  data_batch_1.bin .. data_batch_5.bin (train), test_batch.bin (test);
//              3073-byte records: label (0-9), pixels.
//   CIFAR-100: train.bin, test.bin;
//              3074-byte records: coarse label (0-19), fine label (0-99), pixels.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace norma::data {

enum class Split { train, test };
enum class CifarKind { cifar10, cifar100 };

inline constexpr int64_t kCifarChannels = 3, kCifarHeight = 32, kCifarWidth = 32;
inline constexpr int64_t kCifarImageBytes = kCifarChannels * kCifarHeight * kCifarWidth;  // 3072

class CifarDataset {
 public:
  // Reads `dir`. limit >= 0 keeps the first `limit` records (train: across the
  // files in order; files past the limit are checked for existence and size
  // but not read). Fails, naming the file, on: a missing directory or file;
  // a size that is not a whole number of records (file, size, record size);
  // a label out of range (file, record index, value). When a SHA256SUMS file
  // (sha256sum's format) sits in `dir`, every file read that it lists must
  // match (file, expected, got); files it does not list are not checked.
  static CifarDataset load(const std::string& dir, Split split, CifarKind kind = CifarKind::cifar10,
                           int64_t limit = -1);

  int64_t size() const { return int64_t(labels_.size()); }
  CifarKind kind() const { return kind_; }
  int num_classes() const;                // 10, or 100 (fine labels)
  const uint8_t* image(int64_t i) const;  // 3*32*32 bytes, CHW
  int label(int64_t i) const;             // the fine label for CIFAR-100
  int coarse_label(int64_t i) const;      // CIFAR-100 only (an error for CIFAR-10)

 private:
  void check_index(int64_t i, const char* op) const;
  CifarKind kind_ = CifarKind::cifar10;
  std::vector<uint8_t> images_;  // (N, 3, 32, 32)
  std::vector<uint8_t> labels_;  // (N)
  std::vector<uint8_t> coarse_;  // (N), CIFAR-100 only
};

}  // namespace norma::data

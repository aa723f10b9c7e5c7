// MD5 and SHA-256, small and dependency-free: the data pipeline checks the
// CIFAR-10 archive (md5, as published) and the unpacked files (SHA256SUMS).
// MD5 follows RFC 1321, SHA-256 FIPS 180-4; digests are lowercase hex, like
// md5sum and sha256sum print them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace norma::data {

// Streaming use: update() any number of times, then hex() once.
class Md5 {
 public:
  Md5();
  void update(const void* data, size_t n);
  std::string hex();  // finishes the digest; the object is spent afterwards

 private:
  void block(const uint8_t* p);
  uint32_t h_[4];
  uint8_t buf_[64];
  uint64_t bytes_ = 0;  // total message length so far
};

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::string hex();

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  uint64_t bytes_ = 0;
};

std::string md5_hex(const void* data, size_t n);
std::string sha256_hex(const void* data, size_t n);
// Digest of a whole file; errors name the path.
std::string md5_file(const std::string& path);
std::string sha256_file(const std::string& path);

}  // namespace norma::data

// MD5 (RFC 1321): `norma download` checks the CIFAR-10 archive against the
// digest its authors publish. Digests are lowercase hex, as md5sum prints them.
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

std::string md5_hex(const void* data, size_t n);
std::string md5_file(const std::string& path);

}  // namespace norma::data

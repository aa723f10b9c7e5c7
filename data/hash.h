// SHA-256 (FIPS 180-4), small and dependency-free: the CIFAR-10 loader checks
// the unpacked files against SHA256SUMS. Digests are lowercase hex, as
// sha256sum prints them. detail:: holds the block buffering and padding that
// MD-style hashes share (MD5, for the downloaded archive, is apps/md5.h).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "../core/error.h"

namespace norma::data {

// Streaming use: update() any number of times, then hex() once.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::string hex();  // finishes the digest; the object is spent afterwards

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  uint64_t bytes_ = 0;  // total message length so far
};

std::string sha256_hex(const void* data, size_t n);
std::string sha256_file(const std::string& path);

namespace detail {

// Buffers input into 64-byte blocks; both hashes share it.
template <class F>
void absorb(uint8_t* buf, uint64_t& bytes, const uint8_t* p, size_t n, F&& block) {
  size_t have = bytes % 64;
  bytes += n;
  if (have) {
    size_t take = std::min(64 - have, n);
    std::memcpy(buf + have, p, take);
    p += take, n -= take;
    if (have + take < 64) return;
    block(buf);
  }
  for (; n >= 64; p += 64, n -= 64) block(p);
  std::memcpy(buf, p, n);
}

// Final padding: 0x80, zeros, then the message length in bits as 64 bits
// (little-endian for MD5, big-endian for SHA-256).
template <class F>
void finish(uint8_t* buf, uint64_t bytes, bool big_endian, F&& block) {
  size_t have = bytes % 64;
  buf[have++] = 0x80;
  if (have > 56) {
    std::memset(buf + have, 0, 64 - have);
    block(buf);
    have = 0;
  }
  std::memset(buf + have, 0, 56 - have);
  uint64_t bits = bytes * 8;
  for (int i = 0; i < 8; ++i) buf[56 + i] = uint8_t(bits >> (big_endian ? 56 - 8 * i : 8 * i));
  block(buf);
}

inline std::string to_hex(const uint8_t* p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (size_t i = 0; i < n; ++i) s[2 * i] = digits[p[i] >> 4], s[2 * i + 1] = digits[p[i] & 15];
  return s;
}

template <class H>
std::string hash_file(const std::string& path, const char* op) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open '{}'", op, path);
  H h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), std::streamsize(buf.size()));
    h.update(buf.data(), size_t(in.gcount()));
  }
  if (in.bad()) fail("{}: read error in '{}'", op, path);
  return h.hex();
}

}  // namespace detail

}  // namespace norma::data

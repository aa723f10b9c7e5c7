// MD5 (RFC 1321) and SHA-256 (FIPS 180-4).
#include "hash.h"

#include <cstring>
#include <fstream>
#include <vector>

#include "../core/error.h"

namespace norma::data {

namespace {

uint32_t rotl(uint32_t x, int s) { return (x << s) | (x >> (32 - s)); }
uint32_t rotr(uint32_t x, int s) { return (x >> s) | (x << (32 - s)); }

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

std::string to_hex(const uint8_t* p, size_t n) {
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

}  // namespace

// ---- MD5

Md5::Md5() : h_{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476} {}

void Md5::block(const uint8_t* p) {
  static const uint32_t K[64] = {
      0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
      0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
      0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
      0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
      0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
      0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
      0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
      0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
  static const int S[16] = {7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21};
  uint32_t M[16];
  for (int i = 0; i < 16; ++i)
    M[i] = uint32_t(p[4 * i]) | uint32_t(p[4 * i + 1]) << 8 | uint32_t(p[4 * i + 2]) << 16 | uint32_t(p[4 * i + 3]) << 24;
  uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3];
  for (int i = 0; i < 64; ++i) {
    uint32_t f;
    int g;
    if (i < 16) f = (b & c) | (~b & d), g = i;
    else if (i < 32) f = (d & b) | (~d & c), g = (5 * i + 1) % 16;
    else if (i < 48) f = b ^ c ^ d, g = (3 * i + 5) % 16;
    else f = c ^ (b | ~d), g = (7 * i) % 16;
    uint32_t t = d;
    d = c;
    c = b;
    b = b + rotl(a + f + K[i] + M[g], S[(i / 16) * 4 + i % 4]);
    a = t;
  }
  h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d;
}

void Md5::update(const void* data, size_t n) {
  absorb(buf_, bytes_, static_cast<const uint8_t*>(data), n, [this](const uint8_t* p) { block(p); });
}

std::string Md5::hex() {
  finish(buf_, bytes_, false, [this](const uint8_t* p) { block(p); });
  uint8_t out[16];
  for (int i = 0; i < 16; ++i) out[i] = uint8_t(h_[i / 4] >> (8 * (i % 4)));
  return to_hex(out, 16);
}

// ---- SHA-256

Sha256::Sha256()
    : h_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19} {}

void Sha256::block(const uint8_t* p) {
  static const uint32_t K[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  uint32_t w[64];
  for (int i = 0; i < 16; ++i)
    w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 | uint32_t(p[4 * i + 3]);
  for (int i = 16; i < 64; ++i) {
    uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
  for (int i = 0; i < 64; ++i) {
    uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
  }
  h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
}

void Sha256::update(const void* data, size_t n) {
  absorb(buf_, bytes_, static_cast<const uint8_t*>(data), n, [this](const uint8_t* p) { block(p); });
}

std::string Sha256::hex() {
  finish(buf_, bytes_, true, [this](const uint8_t* p) { block(p); });
  uint8_t out[32];
  for (int i = 0; i < 32; ++i) out[i] = uint8_t(h_[i / 4] >> (24 - 8 * (i % 4)));
  return to_hex(out, 32);
}

// ---- one-shot helpers

std::string md5_hex(const void* data, size_t n) {
  Md5 h;
  h.update(data, n);
  return h.hex();
}

std::string sha256_hex(const void* data, size_t n) {
  Sha256 h;
  h.update(data, n);
  return h.hex();
}

std::string md5_file(const std::string& path) { return hash_file<Md5>(path, "md5_file"); }
std::string sha256_file(const std::string& path) { return hash_file<Sha256>(path, "sha256_file"); }

}  // namespace norma::data

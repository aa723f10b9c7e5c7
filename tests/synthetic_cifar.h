// Writes a tiny CIFAR-10 directory in the official binary layout for tests:
// every class has its own colour, plus seeded noise, so a CNN learns it in a
// few steps. Records: label byte, then 1024 R, 1024 G, 1024 B bytes.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace norma::test {

inline std::vector<uint8_t> synthetic_cifar_records(int64_t n, uint64_t seed) {
  std::vector<uint8_t> out;
  out.reserve(n * 3073);
  uint64_t s = seed * 2654435761u + 1;
  auto noise = [&] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((s >> 33) % 41) - 20;  // [-20, 20]
  };
  for (int64_t i = 0; i < n; ++i) {
    const int label = static_cast<int>((i * 7 + seed) % 10);
    out.push_back(static_cast<uint8_t>(label));
    const int base[3] = {25 * label, 255 - 25 * label, (label % 2) * 200 + 20};
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p) out.push_back(static_cast<uint8_t>(std::clamp(base[c] + noise(), 0, 255)));
  }
  return out;
}

// dir/data_batch_1..5.bin with `per_file` records each and dir/test_batch.bin with `test` records.
inline void write_synthetic_cifar10(const std::filesystem::path& dir, int64_t per_file, int64_t test) {
  std::filesystem::create_directories(dir);
  auto write = [](const std::filesystem::path& p, const std::vector<uint8_t>& bytes) {
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  };
  for (int b = 1; b <= 5; ++b)
    write(dir / ("data_batch_" + std::to_string(b) + ".bin"), synthetic_cifar_records(per_file, b));
  write(dir / "test_batch.bin", synthetic_cifar_records(test, 99));
}

}  // namespace norma::test

// Fuzzes data::CifarDataset::load: each input becomes a data directory and is
// loaded. The load must either fail with norma::Error or return exactly the
// records the files hold, up to the limit.
//
// Input: byte 0 holds flags (bit 0 CIFAR-100, bit 1 the train split, bit 2 a
// limit follows in byte 1); the rest is the files' bytes separated by
// "NORMAFILE": the split's batch files in order (a file not given is missing),
// then SHA256SUMS.
#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <norma/data/cifar.h>

#include "fuzz_util.h"

using namespace norma;
using namespace norma::data;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool c100 = data[0] & 1, train = data[0] & 2, has_limit = data[0] & 4;
  if (has_limit && size < 2) return 0;
  const int64_t limit = has_limit ? data[1] : -1;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1 + has_limit, size - 1 - has_limit);
  std::vector<std::string_view> parts;
  for (size_t at; (at = rest.find("NORMAFILE")) != std::string_view::npos; rest.remove_prefix(at + 9))
    parts.push_back(rest.substr(0, at));
  parts.push_back(rest);

  std::vector<std::string> names;
  if (c100) names = {train ? "train.bin" : "test.bin"};
  else if (!train) names = {"test_batch.bin"};
  else names = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"};
  const test::TempDir& dir = fuzz::scratch();
  for (const auto& entry : std::filesystem::directory_iterator(dir.path)) std::filesystem::remove(entry.path());
  for (size_t i = 0; i < parts.size() && i <= names.size(); ++i) {
    const std::string name = i < names.size() ? names[i] : "SHA256SUMS";
    fuzz::write_file(dir.file(name), parts[i].data(), parts[i].size());
  }

  CifarDataset ds;
  try {
    const CifarKind kind = c100 ? CifarKind::cifar100 : CifarKind::cifar10;
    ds = CifarDataset::load(dir.str(), train ? Split::train : Split::test, kind, limit);
  } catch (const Error& e) {
    fuzz::expected(e);
    return 0;
  }

  // Loaded: every file was there and whole, and the dataset is their records in order.
  const size_t record = size_t(kCifarImageBytes) + (c100 ? 2 : 1);
  FUZZ_CHECK(parts.size() >= names.size());
  int64_t total = 0;
  for (size_t f = 0; f < names.size(); ++f) {
    FUZZ_CHECK(!parts[f].empty() && parts[f].size() % record == 0);
    total += int64_t(parts[f].size() / record);
  }
  FUZZ_CHECK(ds.size() == (limit >= 0 ? std::min(limit, total) : total));
  FUZZ_CHECK(ds.num_classes() == (c100 ? 100 : 10));
  int64_t i = 0;
  for (size_t f = 0; f < names.size() && i < ds.size(); ++f)
    for (size_t r = 0; r < parts[f].size() / record && i < ds.size(); ++r, ++i) {
      const auto* rec = reinterpret_cast<const uint8_t*>(parts[f].data()) + r * record;
      FUZZ_CHECK(ds.label(i) == rec[c100 ? 1 : 0]);
      if (c100) FUZZ_CHECK(ds.coarse_label(i) == rec[0]);
      FUZZ_CHECK(std::memcmp(ds.image(i), rec + record - kCifarImageBytes, kCifarImageBytes) == 0);
    }
  return 0;
}

// CIFAR-10/100 binary reader with validation, and the data-directory search.
#include "cifar.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "../core/error.h"
#include "hash.h"

namespace fs = std::filesystem;

namespace norma::data {

namespace {

// SHA256SUMS in sha256sum's format: "<64 hex digits>  <name>" ("*<name>" in binary mode).
std::map<std::string, std::string> read_sha256sums(const std::string& path) {
  std::map<std::string, std::string> sums;
  std::ifstream in(path);
  if (!in) fail("cifar: cannot read '{}'", path);
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    bool ok = line.size() > 66 && line[64] == ' ' && (line[65] == ' ' || line[65] == '*');
    for (int i = 0; ok && i < 64; ++i) ok = std::isxdigit(static_cast<unsigned char>(line[i]));
    if (!ok) fail("cifar: {}:{}: expected '<64 hex digits>  <file name>', got '{}'", path, line_no, line);
    std::string hash = line.substr(0, 64), name = line.substr(66);
    if (!name.empty() && name.back() == '\r') name.pop_back();
    for (char& c : hash) c = char(std::tolower(static_cast<unsigned char>(c)));
    sums[name] = hash;
  }
  return sums;
}

// One file's part of a load: its first `take` records go to the arrays at
// images/labels/coarse (coarse null for CIFAR-10). Reads in chunks of whole
// records; when `want` (a SHA-256) is given, the whole file is hashed and compared.
void read_records(const std::string& path, int64_t record, int64_t take, uint8_t* images, uint8_t* labels,
                  uint8_t* coarse, const std::string& want, const std::string& sums_path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cifar: cannot open '{}'", path);
  const int64_t records = int64_t(fs::file_size(path)) / record;
  const int64_t end = want.empty() ? take : records;  // records to read
  const int64_t chunk = 512;
  std::vector<uint8_t> buf(size_t(chunk * record));
  Sha256 sha;
  for (int64_t r0 = 0; r0 < end; r0 += chunk) {
    const int64_t n = std::min(chunk, end - r0);
    in.read(reinterpret_cast<char*>(buf.data()), std::streamsize(n * record));
    if (in.gcount() != std::streamsize(n * record))
      fail("cifar: '{}' ended early: read {} of {} bytes at record {}", path, in.gcount(), n * record, r0);
    if (!want.empty()) sha.update(buf.data(), size_t(n * record));
    for (int64_t r = r0; r < std::min(r0 + n, take); ++r) {
      const uint8_t* rec = buf.data() + (r - r0) * record;
      int fine = rec[coarse ? 1 : 0];
      if (coarse && rec[0] >= 20)
        fail("cifar: '{}' record {} (0-based) has coarse label {}, expected 0..19", path, r, int(rec[0]));
      if (fine >= (coarse ? 100 : 10))
        fail("cifar: '{}' record {} (0-based) has {} {}, expected 0..{}", path, r, coarse ? "fine label" : "label",
             fine, coarse ? 99 : 9);
      if (coarse) coarse[r] = rec[0];
      labels[r] = uint8_t(fine);
      std::copy(rec + record - kCifarImageBytes, rec + record, images + r * kCifarImageBytes);
    }
  }
  if (!want.empty()) {
    std::string got = sha.hex();
    if (got != want)
      fail("cifar: SHA-256 of '{}' is {} but {} expects {} (the file is damaged or not the original)", path, got,
           sums_path, want);
  }
}

}  // namespace

CifarDataset CifarDataset::load(const std::string& dir, Split split, CifarKind kind, int64_t limit) {
  if (split != Split::train && split != Split::test)
    fail("CifarDataset::load: unknown split {} (not a Split value)", int(split));
  if (kind != CifarKind::cifar10 && kind != CifarKind::cifar100)
    fail("CifarDataset::load: unknown kind {} (not a CifarKind value)", int(kind));
  if (limit < -1) fail("CifarDataset::load: limit must be -1 (every record) or >= 0, got {}", limit);
  const bool c100 = kind == CifarKind::cifar100;
  if (!fs::is_directory(dir))
    fail("cifar: data directory '{}' does not exist (expected the {} binary files there)", dir,
         c100 ? "CIFAR-100" : "CIFAR-10");
  std::vector<std::string> names;
  if (c100) names = {split == Split::train ? "train.bin" : "test.bin"};
  else if (split == Split::test) names = {"test_batch.bin"};
  else names = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"};
  const int64_t record = kCifarImageBytes + (c100 ? 2 : 1);

  // Existence and size of every file first: a broken directory fails before the slow part.
  std::vector<std::string> paths;
  std::vector<int64_t> first{0};  // dataset index of each file's first record
  for (const std::string& name : names) {
    paths.push_back((fs::path(dir) / name).string());
    if (!fs::is_regular_file(paths.back())) fail("cifar: missing file '{}'", paths.back());
    int64_t bytes = int64_t(fs::file_size(paths.back()));
    if (bytes == 0 || bytes % record != 0)
      fail("cifar: '{}' has {} bytes, not a whole number of {}-byte records", paths.back(), bytes, record);
    first.push_back(first.back() + bytes / record);
  }
  const int64_t total = limit >= 0 ? std::min(limit, first.back()) : first.back();

  std::map<std::string, std::string> sums;
  std::string sums_path = (fs::path(dir) / "SHA256SUMS").string();
  if (fs::exists(sums_path)) sums = read_sha256sums(sums_path);

  CifarDataset ds;
  ds.kind_ = kind;
  ds.images_.resize(size_t(total * kCifarImageBytes));
  ds.labels_.resize(size_t(total));
  if (c100) ds.coarse_.resize(size_t(total));
  // Files in parallel (hashing 150 MB is most of the time); the first error in
  // file order is reported.
  std::vector<std::string> errors(names.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t f = 0; f < names.size(); ++f) {
    const int64_t take = std::clamp(total - first[f], int64_t(0), first[f + 1] - first[f]);
    if (take == 0) continue;  // past the limit: not read
    auto it = sums.find(names[f]);
    try {
      read_records(paths[f], record, take, ds.images_.data() + first[f] * kCifarImageBytes,
                   ds.labels_.data() + first[f], c100 ? ds.coarse_.data() + first[f] : nullptr,
                   it == sums.end() ? "" : it->second, sums_path);
    } catch (const std::exception& e) {
      errors[f] = e.what();
    }
  }
  for (const std::string& e : errors)
    if (!e.empty()) throw Error(e);
  return ds;
}

int CifarDataset::num_classes() const { return kind_ == CifarKind::cifar100 ? 100 : 10; }

void CifarDataset::check_index(int64_t i, const char* op) const {
  if (i < 0 || i >= size()) fail("CifarDataset::{}: index {} out of range for a dataset of {} images", op, i, size());
}

const uint8_t* CifarDataset::image(int64_t i) const {
  check_index(i, "image");
  return images_.data() + i * kCifarImageBytes;
}

int CifarDataset::label(int64_t i) const {
  check_index(i, "label");
  return labels_[size_t(i)];
}

int CifarDataset::coarse_label(int64_t i) const {
  if (kind_ != CifarKind::cifar100) fail("CifarDataset::coarse_label: only CIFAR-100 has coarse labels");
  check_index(i, "coarse_label");
  return coarse_[size_t(i)];
}

}  // namespace norma::data

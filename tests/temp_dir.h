// A fresh directory for one test, removed with everything in it when the test
// ends (write permission is given back first, for tests that take it away).
#pragma once
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/core.h>

namespace norma::test {

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag = "tmp") {
    static int count = 0;  // several per test and per process
    path = std::filesystem::temp_directory_path() / fmt::format("norma_{}_{}_{}", tag, getpid(), count++);
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all, std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
  std::string str(const std::string& name = "") const { return (name.empty() ? path : path / name).string(); }
  std::vector<std::string> listing() const {  // file names, sorted
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

}  // namespace norma::test

// Reading golden fixtures written by scripts/gen_*.py: JSON tensors
// {"shape": [...], "data": [...]} and safetensors files.
#pragma once
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include <norma/norma.h>

namespace norma::test {

inline std::string fixture_path(const std::string& name) { return std::string(NORMA_SOURCE_DIR) + "/tests/fixtures/" + name; }

inline nlohmann::json load_json_fixture(const std::string& name) {
  std::ifstream f(fixture_path(name));
  if (!f) fail("fixture {} is missing (regenerate it with scripts/)", fixture_path(name));
  return nlohmann::json::parse(f);
}

inline Tensor json_tensor(const nlohmann::json& j) {
  return from_vector(j.at("data").get<std::vector<float>>(), Shape(j.at("shape").get<std::vector<int64_t>>()));
}

}  // namespace norma::test

#include "serialize.h"

namespace norma::nn {

void save(const Module& m, const std::string& path, const std::map<std::string, std::string>& metadata) {
  save_safetensors(path, m.state_dict(), metadata);
}

void load(Module& m, const std::string& path, bool strict) {
  NamedTensors state;
  for (auto& [name, t] : load_safetensors(path).tensors)
    if (!name.starts_with("optimizer/")) state.emplace_back(std::move(name), std::move(t));
  try {
    m.load_state_dict(state, strict);
  } catch (const Error& e) {
    fail("load: '{}': {}", path, e.what());
  }
}

}  // namespace norma::nn

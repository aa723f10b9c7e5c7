// Fuzzes load_safetensors: each input is written as a file and loaded. The
// load must either fail with norma::Error or give tensors that save and load
// again unchanged (names, order, shapes, values, metadata).
#include <cmath>
#include <string>

#include <norma/core/safetensors.h>

#include "fuzz_util.h"

using namespace norma;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in = fuzz::scratch().file("in.safetensors"), again = fuzz::scratch().file("again.safetensors");
  fuzz::write_file(in, data, size);
  SafetensorsFile f;
  try {
    f = load_safetensors(in);
  } catch (const Error& e) {
    fuzz::expected(e);
    return 0;
  }

  for (const auto& [name, t] : f.tensors)
    FUZZ_CHECK(t.defined() && t.is_contiguous() && t.numel() == t.shape().numel());
  try {
    save_safetensors(again, f.tensors, f.metadata);
  } catch (const Error& e) {
    fuzz::expected(e);  // e.g. a fractional F32 value under a name saved as I64 (num_batches_tracked)
    return 0;
  }
  const SafetensorsFile g = load_safetensors(again);  // what Norma wrote must load: no catch
  FUZZ_CHECK(g.metadata == f.metadata);
  FUZZ_CHECK(g.tensors.size() == f.tensors.size());
  for (const auto& [name, t] : f.tensors) {
    const Tensor* u = nullptr;  // the writer orders by dtype, then name: look it up
    for (const auto& [n2, t2] : g.tensors)
      if (n2 == name) u = &t2;
    FUZZ_CHECK(u && u->shape() == t.shape());
    for (int64_t i = 0; i < t.numel(); ++i) {
      const float a = t.data_ptr()[i], b = u->data_ptr()[i];
      FUZZ_CHECK(a == b || (std::isnan(a) && std::isnan(b)));
    }
  }
  return 0;
}

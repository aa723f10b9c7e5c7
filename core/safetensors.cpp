#include "safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "atomic_file.h"

namespace norma {

static_assert(std::endian::native == std::endian::little, "safetensors: Norma assumes a little-endian host");

namespace {

using json = nlohmann::ordered_json;  // keeps the header's key order
constexpr uint64_t kMaxHeader = 100'000'000;  // the reference reader's limit
constexpr double kMaxExactInt = 16777216.0;   // 2^24: integers above it are not exact in float32

std::string errno_text(int e) { return std::error_code(e, std::generic_category()).message(); }

// Bytes per element of the dtypes that load; 0 for the others.
uint64_t dtype_size(const std::string& d) {
  if (d == "F32" || d == "I32") return 4;
  if (d == "F64" || d == "I64") return 8;
  return 0;
}

bool stored_as_i64(const std::string& name) { return name.ends_with("num_batches_tracked"); }

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};

// A load error: names the file, then what is wrong.
template <class... A>
[[noreturn]] void reject(const std::string& path, fmt::format_string<A...> f, A&&... args) {
  fail("load_safetensors: '{}': {}", path, fmt::format(f, std::forward<A>(args)...));
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  struct Entry {
    std::string name;
    Tensor t;  // contiguous
    bool i64;
  };
  std::vector<Entry> entries;
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") fail("save_safetensors: '{}': '__metadata__' is reserved and cannot name a tensor", path);
    if (!names.insert(name).second) fail("save_safetensors: '{}': tensor name '{}' appears twice", path, name);
    if (!t.defined()) fail("save_safetensors: '{}': tensor '{}' is undefined", path, name);
    Entry e{name, t.contiguous(), stored_as_i64(name)};
    if (e.i64)
      for (float v : e.t.to_vector())
        if (!(std::nearbyint(v) == v && std::fabs(v) < 9.2e18f))
          fail("save_safetensors: '{}': tensor '{}' is stored as I64 but holds {}, not a whole number", path, name, v);
    entries.push_back(std::move(e));
  }
  // The reference writer's order: wider (better aligned) dtypes first, then by name.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.i64 != b.i64 ? a.i64 : a.name < b.name; });

  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const Entry& e : entries) {
    uint64_t bytes = uint64_t(e.t.numel()) * (e.i64 ? 8 : 4);
    json info = json::object();
    info["dtype"] = e.i64 ? "I64" : "F32";
    info["shape"] = json::array();
    for (int64_t d : e.t.shape()) info["shape"].push_back(d);
    info["data_offsets"] = json::array({offset, offset + bytes});
    header[e.name] = std::move(info);
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  uint64_t n = text.size();

  AtomicFile out(path, "save_safetensors");
  out.write(&n, 8);
  out.write(text.data(), text.size());
  std::vector<int64_t> ints;
  for (const Entry& e : entries) {
    if (!e.i64) {
      out.write(e.t.data_ptr(), size_t(e.t.numel()) * 4);
      continue;
    }
    ints.clear();
    for (float v : e.t.to_vector()) ints.push_back(int64_t(v));
    out.write(ints.data(), ints.size() * 8);
  }
  out.commit();
}

bool SafetensorsFile::contains(const std::string& name) const {
  return std::any_of(tensors.begin(), tensors.end(), [&](const auto& nt) { return nt.first == name; });
}

const Tensor& SafetensorsFile::at(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  std::vector<std::string> names;
  for (const auto& nt : tensors) names.push_back(nt.first);
  fail("SafetensorsFile::at: no tensor '{}' in '{}'; it holds {}", name, path,
       names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", ")));
}

SafetensorsFile load_safetensors(const std::string& path) {
  auto bad = [&]<class... A>(fmt::format_string<A...> f, A&&... args) { reject(path, f, std::forward<A>(args)...); };
  std::unique_ptr<FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) fail("load_safetensors: cannot open '{}': {}", path, errno_text(errno));
  struct stat st;
  if (fstat(fileno(file.get()), &st) != 0) bad("cannot stat: {}", errno_text(errno));
  if (!S_ISREG(st.st_mode)) bad("not a regular file");
  uint64_t size = uint64_t(st.st_size);
  auto read = [&](void* dst, uint64_t bytes, const char* what) {
    if (bytes && std::fread(dst, 1, bytes, file.get()) != bytes)
      bad("reading {} failed: {}", what, std::ferror(file.get()) ? errno_text(errno) : "unexpected end of file");
  };

  if (size < 8) bad("the file is {} bytes, shorter than the 8-byte header length", size);
  uint64_t n;
  read(&n, 8, "the header length");
  if (n > kMaxHeader) bad("header length {} is over the {}-byte limit (not a safetensors file?)", n, kMaxHeader);
  if (n > size - 8) bad("header length {} runs past the end of the file ({} bytes)", n, size);
  uint64_t buffer_size = size - 8 - n;
  std::string text(n, '\0');
  read(text.data(), n, "the header");

  // Parse, noting a top-level key that appears twice (the parser would keep only one).
  std::set<std::string> keys;
  std::string duplicate;
  json header;
  try {
    header = json::parse(text, [&](int depth, json::parse_event_t ev, json& j) {
      if (ev == json::parse_event_t::key && depth == 1 && !keys.insert(j.get<std::string>()).second)
        duplicate = j.get<std::string>();
      return true;
    });
  } catch (const json::exception& e) {
    bad("the header is not valid JSON: {}", e.what());
  }
  if (!header.is_object()) bad("the header is a JSON {}, not an object", header.type_name());
  if (!duplicate.empty()) bad("tensor '{}' appears twice in the header", duplicate);

  SafetensorsFile out;
  out.path = path;
  struct Entry {
    std::string name, dtype;
    Shape shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) bad("__metadata__ must be an object of strings, got a {}", info.type_name());
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string()) bad("__metadata__ '{}' must be a string, got a {}", k, v.type_name());
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (!info.is_object()) bad("tensor '{}': expected {{dtype, shape, data_offsets}}, got a {}", name, info.type_name());
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!info.contains(field)) bad("tensor '{}': missing field '{}'", name, field);
    for (const auto& [k, v] : info.items())
      if (k != "dtype" && k != "shape" && k != "data_offsets") bad("tensor '{}': unexpected field '{}'", name, k);
    const json& dt = info["dtype"];
    if (!dt.is_string()) bad("tensor '{}': dtype must be a string, got {}", name, dt.dump());
    Entry e{name, dt.get<std::string>(), {}, 0, 0};
    uint64_t elem = dtype_size(e.dtype);
    if (!elem) bad("tensor '{}': dtype '{}' is not supported (Norma loads F32, F64, I64 and I32)", name, e.dtype);

    const json& sh = info["shape"];
    bool ok = sh.is_array();
    uint64_t numel = 1;
    bool zero = false;
    for (const json& d : ok ? sh : json::array()) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t(INT64_MAX)) {
        ok = false;
        break;
      }
      uint64_t v = d.get<uint64_t>();
      e.shape.push_back(int64_t(v));
      zero = zero || v == 0;
      numel = (v && numel > buffer_size / v) ? buffer_size + 1 : numel * v;  // capped: too big either way
    }
    if (!ok) bad("tensor '{}': shape {} must be a list of non-negative integers", name, sh.dump());
    if (zero) numel = 0;

    const json& off = info["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned() ||
        off[0].get<uint64_t>() > off[1].get<uint64_t>())
      bad("tensor '{}': data_offsets {} must be [begin, end] with 0 <= begin <= end", name, off.dump());
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    if (e.end > buffer_size)
      bad("tensor '{}': data_offsets [{}, {}] run past the end of the {}-byte data buffer", name, e.begin, e.end,
          buffer_size);
    if (numel > buffer_size || e.end - e.begin != numel * elem)
      bad("tensor '{}': data_offsets [{}, {}] span {} bytes, but shape {} in {} needs {}", name, e.begin, e.end,
          e.end - e.begin, e.shape, e.dtype, numel > buffer_size ? "more than the file holds" : std::to_string(numel * elem));
    entries.push_back(std::move(e));
  }

  // The tensors must tile the buffer exactly: no overlap, no gap, nothing after.
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return std::pair(a.begin, a.end) < std::pair(b.begin, b.end); });
  uint64_t pos = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.begin < pos)
      bad("tensors '{}' [{}, {}] and '{}' [{}, {}] overlap in the data buffer", entries[i - 1].name,
          entries[i - 1].begin, entries[i - 1].end, e.name, e.begin, e.end);
    if (e.begin > pos) bad("bytes [{}, {}) of the data buffer, before tensor '{}', belong to no tensor", pos, e.begin, e.name);
    pos = e.end;
  }
  if (pos != buffer_size) bad("bytes [{}, {}) at the end of the data buffer belong to no tensor", pos, buffer_size);

  // Everything checks out: read the buffer in order.
  std::vector<unsigned char> raw;
  for (const Entry& e : entries) {
    Tensor t = empty(e.shape);
    float* dst = t.data_ptr();
    uint64_t count = uint64_t(t.numel());
    if (e.dtype == "F32") {
      read(dst, count * 4, "tensor data");
    } else {
      raw.resize(e.end - e.begin);
      read(raw.data(), raw.size(), "tensor data");
      for (uint64_t i = 0; i < count; ++i) {
        const unsigned char* p = raw.data() + i * dtype_size(e.dtype);
        double v;
        if (e.dtype == "F64") {
          std::memcpy(&v, p, 8);
        } else {
          int64_t x = 0;
          if (e.dtype == "I64") {
            std::memcpy(&x, p, 8);
          } else {
            int32_t x32;
            std::memcpy(&x32, p, 4);
            x = x32;
          }
          if (x > int64_t(kMaxExactInt) || x < -int64_t(kMaxExactInt))
            bad("tensor '{}': {} value {} at index {} is beyond 2^24 and has no exact float32", e.name, e.dtype, x, i);
          v = double(x);
        }
        dst[i] = float(v);
      }
    }
    out.tensors.emplace_back(e.name, t);
  }
  return out;
}

}  // namespace norma

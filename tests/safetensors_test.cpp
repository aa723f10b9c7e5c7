// Safetensors checkpoints: bit-exact round trips, the reference writer's
// layout, every corruption the loader must reject, atomic saves, nn::save /
// nn::load, and interop with PyTorch (scripts/gen_safetensors_fixture.py).
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include <norma/layers/activation.h>
#include <norma/layers/linear.h>
#include <norma/layers/sequential.h>

#include "temp_dir.h"
#include "test_util.h"

using namespace norma;
namespace fs = std::filesystem;

using norma::test::TempDir;

using norma::test::check_error;

namespace {


std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

template <class T>
std::string bytes_of(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

std::string u64_bytes(uint64_t n) { return bytes_of(std::vector<uint64_t>{n}); }

// A file from a header text and a data buffer, the header padded as the writer pads it.
std::string st_file(std::string header, const std::string& buffer) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return u64_bytes(header.size()) + header + buffer;
}

std::vector<uint32_t> bits(const Tensor& t) {
  std::vector<float> v = t.to_vector();
  std::vector<uint32_t> out(v.size());
  if (!v.empty()) std::memcpy(out.data(), v.data(), v.size() * 4);  // an empty vector's data() may be null
  return out;
}


// Loading `bytes` as a file must fail with an error naming the file and holding every piece.
void check_rejected(const std::string& bytes, std::vector<std::string> pieces) {
  TempDir dir("safetensors");
  std::string path = dir.file("bad.safetensors");
  write_bytes(path, bytes);
  pieces.push_back(path);
  check_error([&] { load_safetensors(path); }, pieces);
}

// A valid two-tensor file, edited by the corruption tests.
const std::string kGoodHeader =
    R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
const std::string kGoodBuffer = bytes_of(std::vector<float>{1, 2, 3});

std::string with_header(const std::string& header) { return st_file(header, kGoodBuffer); }

std::shared_ptr<nn::Sequential> mlp(int64_t in = 4, int64_t hidden = 3, int64_t out = 2) {
  return std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{
      std::make_shared<nn::Linear>(in, hidden), std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(hidden, out)});
}

struct MlpFixture {
  Tensor input, output;
};

MlpFixture torch_mlp_fixture() {
  std::ifstream f(NORMA_SOURCE_DIR "/tests/fixtures/torch_mlp.json");
  REQUIRE(f.good());
  nlohmann::json j = nlohmann::json::parse(f);
  return {from_vector(j["input"].get<std::vector<float>>(), j["input_shape"].get<std::vector<int64_t>>()),
          from_vector(j["output"].get<std::vector<float>>(), j["output_shape"].get<std::vector<int64_t>>())};
}

}  // namespace

TEST_CASE("safetensors: round trip is bit-exact, with metadata") {
  TempDir dir("safetensors");
  manual_seed(1);
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> special = {std::numeric_limits<float>::quiet_NaN(), inf, -inf, -0.0f,
                                std::numeric_limits<float>::denorm_min(), 1e-40f, std::numeric_limits<float>::max(),
                                std::numeric_limits<float>::min(), 1.0f / 3};
  Tensor nan_payload = from_vector({0}, {1});
  uint32_t payload = 0x7fc12345;  // a NaN with payload bits, kept as is
  std::memcpy(nan_payload.data_ptr(), &payload, 4);
  NamedTensors in = {{"w", randn({3, 4})},
                     {"special", from_vector(special, {3, 3})},
                     {"nan_payload", nan_payload},
                     {"scalar", scalar_tensor(3.5f)},
                     {"empty", zeros({0})},
                     {"empty3d", zeros({2, 0, 3})},
                     {"strided", randn({3, 5}).t()},
                     {"bn.num_batches_tracked", scalar_tensor(42)}};
  std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"norma", R"({"epoch": 3, "note": "quotes \" and \\"})"}, {"unicode", "h\xc3\xa9llo \xe2\x9c\x93"}, {"empty", ""}};
  std::string path = dir.file("model.safetensors");
  save_safetensors(path, in, meta);
  SafetensorsFile out = load_safetensors(path);

  CHECK(out.metadata == meta);
  // Data order: I64 first, then by name.
  std::vector<std::string> names;
  for (auto& [k, t] : out.tensors) names.push_back(k);
  CHECK(names == std::vector<std::string>{"bn.num_batches_tracked", "empty", "empty3d", "nan_payload", "scalar",
                                          "special", "strided", "w"});
  for (const auto& [name, t] : in) {
    // [&name = name]: clang 14 cannot capture a structured binding implicitly.
    auto it = std::find_if(out.tensors.begin(), out.tensors.end(), [&name = name](const auto& kv) { return kv.first == name; });
    REQUIRE(it != out.tensors.end());
    INFO("tensor " << name);
    CHECK(it->second.shape() == t.shape());
    CHECK(bits(it->second) == bits(t));
  }
  // The header is padded with spaces so the data starts on a multiple of 8.
  std::string bytes = read_bytes(path);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  CHECK(dir.listing() == std::vector<std::string>{"model.safetensors"});  // no temporary left behind
}

TEST_CASE("safetensors: writes the reference layout, num_batches_tracked as I64") {
  TempDir dir("safetensors");
  std::string path = dir.file("m.safetensors");
  save_safetensors(path, {{"b", tensor({1})}, {"a", tensor({2, 3})}, {"bn.num_batches_tracked", scalar_tensor(7)}},
                   {{"k", "v"}});
  std::string header =
      R"({"__metadata__":{"k":"v"},"bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"b":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}})";
  std::string want = st_file(header, bytes_of(std::vector<int64_t>{7}) + bytes_of(std::vector<float>{2, 3, 1}));
  CHECK(read_bytes(path) == want);
  CHECK(read_bytes(path).size() % 4 == 0);
  SafetensorsFile f = load_safetensors(path);
  CHECK(f.tensors[0].first == "bn.num_batches_tracked");
  CHECK(f.tensors[0].second.item() == 7);

  // An empty checkpoint is "{}" padded to 8.
  save_safetensors(path, {});
  CHECK(read_bytes(path) == u64_bytes(8) + "{}      ");
  CHECK(load_safetensors(path).tensors.empty());

  // A counter that is not a whole number cannot be stored as I64; the old file stays.
  check_error([&] { save_safetensors(path, {{"bn.num_batches_tracked", scalar_tensor(1.5f)}}); },
              {path, "'bn.num_batches_tracked'", "1.5", "not a whole number"});
  CHECK(read_bytes(path) == u64_bytes(8) + "{}      ");
}

TEST_CASE("safetensors: loads F64, I64 and I32, rejects other dtypes and inexact integers") {
  std::string header =
      R"({"d":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},"l":{"dtype":"I64","shape":[2],"data_offsets":[16,32]},)"
      R"("i":{"dtype":"I32","shape":[2],"data_offsets":[32,40]}})";
  std::string buffer = bytes_of(std::vector<double>{0.1, -2.5}) + bytes_of(std::vector<int64_t>{16777216, -3}) +
                       bytes_of(std::vector<int32_t>{-16777216, 5});
  TempDir dir("safetensors");
  std::string path = dir.file("types.safetensors");
  write_bytes(path, st_file(header, buffer));
  SafetensorsFile f = load_safetensors(path);
  REQUIRE(f.tensors.size() == 3);
  CHECK(f.tensors[0].second.to_vector() == std::vector<float>{0.1f, -2.5f});
  CHECK(f.tensors[1].second.to_vector() == std::vector<float>{16777216.0f, -3});
  CHECK(f.tensors[2].second.to_vector() == std::vector<float>{-16777216.0f, 5});

  check_rejected(st_file(R"({"l":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})",
                         bytes_of(std::vector<int64_t>{16777217})),
                 {"tensor 'l'", "I64 value 16777217", "2^24"});
  check_rejected(st_file(R"({"i":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
                         bytes_of(std::vector<int32_t>{0, -16777217})),
                 {"tensor 'i'", "I32 value -16777217 at index 1"});
  for (std::string dtype : {"F16", "BF16", "U8", "BOOL", "f32"})
    check_rejected(with_header(R"({"a":{"dtype":")" + dtype + R"(","shape":[2],"data_offsets":[0,8]},)"
                                                              R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})"),
                   {"tensor 'a'", "dtype '" + dtype + "' is not supported", "F32, F64, I64 and I32"});
  check_rejected(with_header(R"({"a":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})"),
                 {"tensor 'a'", "dtype must be a string"});
}

TEST_CASE("safetensors: rejects missing, unreadable and truncated files") {
  TempDir dir("safetensors");
  check_error([&] { load_safetensors(dir.file("nope.safetensors")); },
              {"cannot open", dir.file("nope.safetensors"), "No such file or directory"});
  check_error([&] { load_safetensors(dir.path.string()); }, {dir.path.string(), "not a regular file"});

  std::string path = dir.file("good.safetensors");
  save_safetensors(path, {{"w", randn({4, 3})}, {"b", randn({3})}});
  std::string good = read_bytes(path);
  uint64_t n;
  std::memcpy(&n, good.data(), 8);
  REQUIRE(load_safetensors(path).tensors.size() == 2);
  for (size_t cut : {size_t(0), size_t(5), size_t(7)})
    check_rejected(good.substr(0, cut), {fmt::format("the file is {} bytes, shorter than the 8-byte header length", cut)});
  for (size_t cut : {size_t(8), size_t(8 + n / 2), size_t(8 + n - 1)})
    check_rejected(good.substr(0, cut), {fmt::format("header length {} runs past the end of the file ({} bytes)", n, cut)});
  // Cut in the data: the last tensors' offsets now run past the end.
  check_rejected(good.substr(0, 8 + n), {"tensor 'b'", "run past the end of the 0-byte data buffer"});
  check_rejected(good.substr(0, good.size() - 1), {"tensor 'w'", "run past the end of the 59-byte data buffer"});
}

TEST_CASE("safetensors: rejects bad header lengths and invalid JSON") {
  check_rejected(u64_bytes(100'000'001) + std::string(64, ' '), {"header length 100000001 is over the 100000000-byte limit"});
  check_rejected(u64_bytes(~uint64_t(0)) + "{}", {"header length 18446744073709551615 is over the"});
  check_rejected(u64_bytes(17) + std::string(16, ' '), {"header length 17 runs past the end of the file (24 bytes)"});
  check_rejected(st_file(R"({"a": {"dtype": "F32", )", ""), {"the header is not valid JSON"});
  check_rejected(st_file("", ""), {"the header is not valid JSON"});
  check_rejected(st_file("{\"a\xff\": 1}", ""), {"the header is not valid JSON", "UTF-8"});
  check_rejected(st_file("[1, 2]", ""), {"the header is a JSON array, not an object"});
  check_rejected(st_file(R"({"__metadata__": ["x"]})", ""), {"__metadata__ must be an object of strings"});
  check_rejected(st_file(R"({"__metadata__": {"epoch": 3}})", ""), {"__metadata__ 'epoch' must be a string"});
}

TEST_CASE("safetensors: rejects missing and extra fields, bad shapes and duplicate names") {
  check_rejected(with_header(R"({"a":[0,8]})"), {"tensor 'a'", "expected {dtype, shape, data_offsets}, got a array"});
  check_rejected(with_header(R"({"a":{"shape":[2],"data_offsets":[0,8]}})"), {"tensor 'a'", "missing field 'dtype'"});
  check_rejected(with_header(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})"), {"tensor 'a'", "missing field 'shape'"});
  check_rejected(with_header(R"({"a":{"dtype":"F32","shape":[2]}})"), {"tensor 'a'", "missing field 'data_offsets'"});
  check_rejected(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"stride":[1]}})"),
                 {"tensor 'a'", "unexpected field 'stride'"});
  for (std::string shape : {"[-2]", "[2.0]", "[\"2\"]", "2", "[[2]]", "null"})
    check_rejected(with_header(R"({"a":{"dtype":"F32","shape":)" + shape +
                               R"(,"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})"),
                   {"tensor 'a'", "must be a list of non-negative integers"});
  check_rejected(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})"),
                 {"tensor 'a' appears twice in the header"});
}

TEST_CASE("safetensors: rejects offsets that disagree with shapes, overlap, leave gaps or run past the end") {
  auto two = [](const std::string& a, const std::string& b) {
    return with_header(R"({"a":{"dtype":"F32",)" + a + R"(},"b":{"dtype":"F32",)" + b + "}}");
  };
  // Wrong shape for the bytes, both ways.
  check_rejected(two(R"("shape":[3],"data_offsets":[0,8])", R"("shape":[1],"data_offsets":[8,12])"),
                 {"tensor 'a'", "data_offsets [0, 8] span 8 bytes, but shape (3,) in F32 needs 12"});
  {  // the control: 0-d is one element, so this one is valid
    TempDir dir("safetensors");
    write_bytes(dir.file("ok.safetensors"), two(R"("shape":[2],"data_offsets":[0,8])", R"("shape":[],"data_offsets":[8,12])"));
    CHECK(load_safetensors(dir.file("ok.safetensors")).tensors.at(1).second.item() == 3);
  }
  check_rejected(two(R"("shape":[2],"data_offsets":[0,8])", R"("shape":[4611686018427387904,4611686018427387904],"data_offsets":[8,12])"),
                 {"tensor 'b'", "needs more than the file holds"});
  // Past the end, malformed offsets.
  check_rejected(two(R"("shape":[2],"data_offsets":[0,8])", R"("shape":[1],"data_offsets":[12,16])"),
                 {"tensor 'b'", "data_offsets [12, 16] run past the end of the 12-byte data buffer"});
  check_rejected(two(R"("shape":[2],"data_offsets":[8,0])", R"("shape":[1],"data_offsets":[8,12])"),
                 {"tensor 'a'", "must be [begin, end] with 0 <= begin <= end"});
  check_rejected(two(R"("shape":[2],"data_offsets":[0])", R"("shape":[1],"data_offsets":[8,12])"),
                 {"tensor 'a'", "must be [begin, end]"});
  check_rejected(two(R"("shape":[2],"data_offsets":[-4,4])", R"("shape":[1],"data_offsets":[8,12])"),
                 {"tensor 'a'", "must be [begin, end]"});
  // Overlap, gaps, bytes after the last tensor.
  check_rejected(two(R"("shape":[2],"data_offsets":[0,8])", R"("shape":[1],"data_offsets":[4,8])"),
                 {"tensors 'a' [0, 8] and 'b' [4, 8] overlap in the data buffer"});
  check_rejected(two(R"("shape":[1],"data_offsets":[0,4])", R"("shape":[1],"data_offsets":[8,12])"),
                 {"bytes [4, 8) of the data buffer, before tensor 'b', belong to no tensor"});
  check_rejected(two(R"("shape":[1],"data_offsets":[4,8])", R"("shape":[1],"data_offsets":[8,12])"),
                 {"bytes [0, 4) of the data buffer, before tensor 'a', belong to no tensor"});
  check_rejected(two(R"("shape":[2],"data_offsets":[0,8])", R"("shape":[0],"data_offsets":[8,8])"),
                 {"bytes [8, 12) at the end of the data buffer belong to no tensor"});
}

TEST_CASE("safetensors: a failed save leaves the previous file intact and no temporary") {
  TempDir dir("safetensors");
  std::string path = dir.file("model.safetensors");
  save_safetensors(path, {{"w", tensor({1, 2, 3})}});
  const std::string before = read_bytes(path);
  auto intact = [&] {
    CHECK(read_bytes(path) == before);
    CHECK(dir.listing() == std::vector<std::string>{"model.safetensors"});
  };

  SECTION("the write fails midway (file size limit)") {
    // RLIMIT_FSIZE makes write() fail with EFBIG: the one write failure root cannot bypass.
    rlimit old;
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    rlimit low = old;
    low.rlim_cur = 4096;
    auto prev = std::signal(SIGXFSZ, SIG_IGN);
    std::string msg;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &low) == 0);
    try {
      save_safetensors(path, {{"w", zeros({100000})}});
    } catch (const Error& e) {
      msg = e.what();
    }
    setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, prev);
    INFO(msg);
    CHECK_THAT(msg, Catch::Contains(path) && Catch::Contains("File too large") && Catch::Contains(".tmp."));
    intact();
  }
  SECTION("the rename fails (a directory is in the way)") {
    std::string blocked = dir.file("blocked");
    fs::create_directories(fs::path(blocked) / "inside");
    check_error([&] { save_safetensors(blocked, {{"w", tensor({1})}}); }, {blocked, "renaming", "Is a directory"});
    CHECK(fs::is_directory(fs::path(blocked) / "inside"));
    fs::remove_all(blocked);
    intact();
  }
  SECTION("the directory is not writable") {
    if (geteuid() == 0) {
      SUCCEED("running as root, which writes anywhere: covered by the file size limit section");
    } else {
      fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
      check_error([&] { save_safetensors(path, {{"w", tensor({4})}}); }, {path, "Permission denied"});
      fs::permissions(dir.path, fs::perms::owner_all);
      intact();
    }
  }
  SECTION("the directory does not exist") {
    std::string missing = dir.file("no/such/dir/m.safetensors");
    check_error([&] { save_safetensors(missing, {{"w", tensor({1})}}); },
                {"cannot write '" + missing + "'", "No such file or directory"});
    intact();
  }
  SECTION("bad input is refused before anything is written") {
    check_error([&] { save_safetensors(path, {{"w", tensor({1})}, {"w", tensor({2})}}); }, {path, "'w' appears twice"});
    check_error([&] { save_safetensors(path, {{"w", Tensor()}}); }, {path, "tensor 'w' is undefined"});
    check_error([&] { save_safetensors(path, {{"__metadata__", tensor({1})}}); }, {path, "'__metadata__' is reserved"});
    intact();
  }
}

TEST_CASE("checkpoint: nn::save and nn::load round trip a model") {
  TempDir dir("safetensors");
  manual_seed(3);
  auto a = mlp();
  std::string path = dir.file("mlp.safetensors");
  nn::save(*a, path, {{"format", "pt"}});
  CHECK(load_safetensors(path).metadata.at("format") == "pt");
  auto b = mlp();  // other random weights
  CHECK(bits(b->parameters()[0]) != bits(a->parameters()[0]));
  nn::load(*b, path);
  auto pa = a->state_dict(), pb = b->state_dict();
  REQUIRE(pa.size() == pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    INFO(pa[i].first);
    CHECK(pb[i].first == pa[i].first);
    CHECK(bits(pb[i].second) == bits(pa[i].second));
  }
  // A training checkpoint's optimizer state is skipped by nn::load.
  NamedTensors with_opt = a->state_dict();
  with_opt.emplace_back("optimizer/0.weight.momentum", zeros({3, 4}));
  save_safetensors(path, with_opt);
  auto c = mlp();
  nn::load(*c, path);
  CHECK(bits(c->parameters()[0]) == bits(a->parameters()[0]));
}

TEST_CASE("checkpoint: nn::load lists every missing, unexpected and mismatched key in one error") {
  TempDir dir("safetensors");
  std::string path = dir.file("mlp.safetensors");
  NamedTensors state = mlp()->state_dict();  // 0.weight (3,4), 0.bias (3), 2.weight (2,3), 2.bias (2)
  state.erase(state.begin() + 1);            // no 0.bias
  state.emplace_back("9.weight", zeros({2, 2}));
  save_safetensors(path, state);

  auto other = mlp(4, 5, 2);  // hidden 5: 0.weight, 2.weight mismatch
  auto before = bits(other->parameters()[0]);
  check_error([&] { nn::load(*other, path); },
              {"load: '" + path + "'", "missing key: 0.bias", "unexpected key: 9.weight",
               "size mismatch for 0.weight: checkpoint has (3, 4), model has (5, 4)",
               "size mismatch for 2.weight: checkpoint has (2, 3), model has (2, 5)"});
  CHECK(bits(other->parameters()[0]) == before);  // nothing copied
  // Non-strict skips missing and unexpected keys, never a shape mismatch.
  check_error([&] { nn::load(*other, path, false); }, {"size mismatch for 0.weight"});
  auto same = mlp();
  nn::load(*same, path, false);
  CHECK(bits(same->parameters()[0]) == bits(state[0].second));
  check_error([&] { nn::load(*same, path); }, {"missing key: 0.bias", "unexpected key: 9.weight"});
}

TEST_CASE("safetensors: loads torch's MLP and reproduces its output") {
  const std::string path = NORMA_SOURCE_DIR "/tests/fixtures/torch_mlp.safetensors";
  MlpFixture fx = torch_mlp_fixture();
  auto model = mlp();
  nn::load(*model, path);
  Tensor y = model->forward(fx.input);
  NORMA_CHECK_CLOSE(y, fx.output, 0.0, 1e-6);
  // Norma writes the very bytes torch's writer (the reference layout) wrote.
  TempDir dir("safetensors");
  SafetensorsFile f = load_safetensors(path);
  CHECK(f.metadata == std::map<std::string, std::string>{{"format", "pt"}});
  save_safetensors(dir.file("again.safetensors"), f.tensors, f.metadata);
  CHECK(read_bytes(dir.file("again.safetensors")) == read_bytes(path));
}

TEST_CASE("safetensors: writes a Norma MLP for the torch check") {
  // scripts/gen_safetensors_fixture.py --check <build dir>/norma_mlp.safetensors
  // loads this file in torch and compares torch's output with "norma_output".
  MlpFixture fx = torch_mlp_fixture();
  manual_seed(7);
  auto model = mlp();
  Tensor y = model->forward(fx.input);
  const std::string path = NORMA_BINARY_DIR "/norma_mlp.safetensors";
  nn::save(*model, path, {{"format", "pt"}, {"norma_output", nlohmann::json(y.to_vector()).dump()}});
  auto again = mlp();
  nn::load(*again, path);
  CHECK(bits(again->forward(fx.input)) == bits(y));
  CHECK(nlohmann::json::parse(load_safetensors(path).metadata.at("norma_output")).get<std::vector<float>>() ==
        y.to_vector());
}

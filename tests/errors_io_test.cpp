// Error messages of saving and loading (docs/errors.md, "Checkpoints and
// safetensors") spelled out whole: each names the function, the file and what
// is wrong with it.
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>

#include <norma/apps/checkpoint.h>
#include <norma/layers/linear.h>
#include <norma/layers/sequential.h>

#include "temp_dir.h"

using namespace norma;
using namespace norma::test;
using nlohmann::json;
using Catch::Contains;

namespace {

// Writes a safetensors file from a header text and a data buffer.
std::string write_st(const TempDir& dir, const std::string& header, const std::string& data = "") {
  const std::string path = dir.file("bad.safetensors");
  const uint64_t n = header.size();
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << header << data;
  return path;
}

std::shared_ptr<nn::Sequential> small_model(uint64_t seed) {
  manual_seed(seed);
  return std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{std::make_shared<nn::Linear>(4, 3)});
}

}  // namespace

TEST_CASE("errors: save_safetensors and load_safetensors") {
  TempDir dir("errors_st");
  const std::string path = dir.file("a.safetensors");
  CHECK_THROWS_WITH(save_safetensors(path, {{"__metadata__", ones({1})}}),
                    Contains("save_safetensors: '" + path + "': '__metadata__' is reserved and cannot name a tensor"));
  CHECK_THROWS_WITH(save_safetensors(path, {{"bn.num_batches_tracked", scalar_tensor(2.5f)}}),
                    Contains("save_safetensors: '" + path + "': tensor 'bn.num_batches_tracked' is stored as I64 but holds "
                             "2.5, not a whole number"));
  CHECK_THROWS_WITH(save_safetensors(path, {{"w", ones({1})}, {"w", ones({2})}}),
                    Contains("save_safetensors: '" + path + "': tensor name 'w' appears twice"));
  CHECK_THROWS_WITH(save_safetensors(path, {{"w", Tensor()}}), Contains("save_safetensors: '" + path + "': tensor 'w' is undefined"));
  CHECK_THROWS_WITH(load_safetensors(dir.file("none.safetensors")),
                    Contains("load_safetensors: cannot open '" + dir.file("none.safetensors") + "': No such file or directory"));
  CHECK_THROWS_WITH(load_safetensors(dir.str()), Contains("load_safetensors: '" + dir.str() + "': not a regular file"));
  CHECK_FALSE(std::filesystem::exists(path));  // nothing was written

  // Headers a reader must refuse, each message naming the file and the value.
  std::string p = write_st(dir, std::string(8, ' '));
  uint64_t huge = 100'000'001;
  {
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(&huge), 8);
    f << "{}";
  }
  CHECK_THROWS_WITH(load_safetensors(p), Contains("load_safetensors: '" + p + "': header length 100000001 is over the "
                                                  "100000000-byte limit (not a safetensors file?)"));
  p = write_st(dir, R"({"__metadata__": ["x"]})");
  CHECK_THROWS_WITH(load_safetensors(p), Contains("load_safetensors: '" + p + "': __metadata__ must be an object of strings, got a array"));
  p = write_st(dir, R"({"__metadata__": {"epoch": 3}})");
  CHECK_THROWS_WITH(load_safetensors(p), Contains("load_safetensors: '" + p + "': __metadata__ 'epoch' must be a string, got a number"));
  p = write_st(dir, R"({"a": {"dtype": 32, "shape": [1], "data_offsets": [0, 4]}})", std::string(4, '\0'));
  CHECK_THROWS_WITH(load_safetensors(p), Contains("load_safetensors: '" + p + "': tensor 'a': dtype must be a string, got 32"));
  p = write_st(dir, R"({"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}})", std::string(4, '\0'));
  CHECK_THROWS_WITH(load_safetensors(p), Contains("load_safetensors: '" + p + "': tensor 'a': dtype 'F16' is not supported (Norma "
                                                  "loads F32, F64, I64 and I32)"));
  const int64_t beyond = 16777217;  // 2^24 + 1: float32 rounds it
  std::string data(8, '\0');
  std::memcpy(data.data(), &beyond, 8);
  p = write_st(dir, R"({"l": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}})", data);
  CHECK_THROWS_WITH(load_safetensors(p), Contains("load_safetensors: '" + p + "': tensor 'l': I64 value 16777217 at index 0 is "
                                                  "beyond 2^24 and has no exact float32"));
}

TEST_CASE("errors: nn::load wraps the model's error with the file") {
  TempDir dir("errors_load");
  const std::string path = dir.file("m.safetensors");
  nn::save(*small_model(1), path);
  nn::Sequential wide{std::make_shared<nn::Linear>(4, 5)};
  CHECK_THROWS_WITH(nn::load(wide, path), Contains("load: '" + path + "': load_state_dict: cannot load into Sequential:\n"
                                                   "  size mismatch for 0.weight: checkpoint has (3, 4), model has (5, 4)"));
}

TEST_CASE("errors: save_checkpoint and load_checkpoint name the file and what is wrong") {
  TempDir dir("errors_ckpt");
  auto model = small_model(2);
  optim::SGD sgd(model->parameters(), 0.1, 0.9);
  optim::SGD other(small_model(3)->parameters(), 0.1);
  optim::StepLR sched(sgd, 2);
  const std::string path = dir.file("ck.safetensors");

  // Arguments that do not belong together.
  CHECK_THROWS_WITH(nn::save_checkpoint(path, *model, nullptr, &sched, {}),
                    Contains("save_checkpoint: '" + path + "': the scheduler (StepLR) needs its optimizer, which was not given"));
  CHECK_THROWS_WITH(nn::load_checkpoint(path, *model, &other, &sched),
                    Contains("load_checkpoint: '" + path + "': the scheduler (StepLR) belongs to another optimizer than the one given"));
  // A state that JSON cannot hold (a string that is not UTF-8).
  CHECK_THROWS_WITH(nn::save_checkpoint(path, *model, nullptr, nullptr, {.epoch = 0, .step = 0, .extra = json("\xff")}),
                    Contains("save_checkpoint: '" + path + "': the training state cannot be written as JSON ([json.exception"));
  CHECK_FALSE(std::filesystem::exists(path));

  // Weights only: no optimizer state to load, and the model's own error wrapped.
  const std::string weights = dir.file("weights.safetensors");
  nn::save(*model, weights);
  CHECK_THROWS_WITH(nn::load_checkpoint(weights, *model, &sgd, nullptr),
                    Contains("load_checkpoint: '" + weights + "': has no \"norma\" metadata (it holds weights only), so there "
                             "is no optimizer state to load; pass null for the optimizer and scheduler to load just the weights"));
  nn::Sequential wide{std::make_shared<nn::Linear>(4, 5)};
  CHECK_THROWS_WITH(nn::load_checkpoint(weights, wide, nullptr, nullptr),
                    Contains("load_checkpoint: '" + weights + "': load_state_dict: cannot load into Sequential:"));

  // The "norma" metadata, one field at a time.
  nn::save_checkpoint(path, *model, &sgd, &sched, {.epoch = 1, .step = 4, .extra = {}});
  const json good = json::parse(load_safetensors(path).metadata.at("norma"));
  auto with_meta = [&](const std::string& meta) {
    const std::string p = dir.file("edited.safetensors");
    save_safetensors(p, load_safetensors(path).tensors, {{"norma", meta}});
    return p;
  };
  auto load = [&](const std::string& p) { nn::load_checkpoint(p, *model, &sgd, &sched); };
  const std::string e = "load_checkpoint: '" + dir.file("edited.safetensors") + "': ";
  CHECK_THROWS_WITH(load(with_meta("{\"format\": 1, ")), Contains(e + "the \"norma\" metadata is not valid JSON ([json.exception"));
  CHECK_THROWS_WITH(load(with_meta("[1, 2]")), Contains(e + "the \"norma\" metadata must be a JSON object, got array"));
  json m = good;
  m["format"] = 7;
  CHECK_THROWS_WITH(load(with_meta(m.dump())), Contains(e + "checkpoint format 7 is not supported (this Norma reads format 1)"));
  m.erase("format");
  CHECK_THROWS_WITH(load(with_meta(m.dump())), Contains(e + "checkpoint format missing is not supported"));
  m = good;
  m["epoch"] = 1.5;
  CHECK_THROWS_WITH(load(with_meta(m.dump())), Contains(e + "the \"norma\" metadata's epoch must be an integer, got 1.5"));
  m.erase("epoch");
  CHECK_THROWS_WITH(load(with_meta(m.dump())), Contains(e + "the \"norma\" metadata's epoch must be an integer, got nothing"));
  m = good;
  m["rng"] = json{{"seed", 1}};
  CHECK_THROWS_WITH(load(with_meta(m.dump())),
                    Contains(e + "the \"norma\" metadata's rng must be {\"seed\": n, \"draws\": n} with n >= 0, got {\"seed\":1}"));
  m = good;
  m["optimizer"] = nullptr;
  CHECK_THROWS_WITH(load(with_meta(m.dump())), Contains(e + "holds no optimizer state (it was saved without an optimizer)"));
  m = good;
  m["scheduler"] = nullptr;
  CHECK_THROWS_WITH(load(with_meta(m.dump())), Contains(e + "holds no scheduler state (it was saved without a scheduler)"));
  m = good;
  m["optimizer_params"] = json{"0.bias", "0.weight"};
  CHECK_THROWS_WITH(load(with_meta(m.dump())),
                    Contains(e + "the optimizer's parameters are not the ones saved:\n  optimizer parameter 0 is \"0.bias\" in "
                             "the file but \"0.weight\" here"));
  // A load that fails inside the optimizer: the message is wrapped with the file ("{}: {}").
  m = good;
  m["optimizer"]["optimizer"] = "Adam";
  CHECK_THROWS_WITH(load(with_meta(m.dump())), Contains(e + "SGD: load_state_dict: the state is from \"Adam\", not SGD"));
}

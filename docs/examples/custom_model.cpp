// A custom model for docs/custom_models.md: a tiny residual network written as
// a class deriving nn::Module, trained a few steps on random data, saved and
// loaded back. Checks its own numbers and exits non-zero when one is wrong.
#include <cmath>
#include <filesystem>

#include <norma/layers/activation.h>
#include <norma/layers/linear.h>
#include <norma/norma.h>

using namespace norma;

// stem conv -> BasicBlock (16 -> 32 channels, stride 2) -> global average -> linear,
// with one learnable scalar and one buffer of its own.
class TinyResNet : public nn::Module {
 public:
  explicit TinyResNet(int64_t classes) {
    stem = register_module("stem", std::make_shared<nn::Conv2d>(
                                       nn::Conv2dOptions(3, 16, 3).padding(1).bias(false)));
    bn = register_module("bn", std::make_shared<nn::BatchNorm2d>(16));
    block = register_module("block", std::make_shared<nn::BasicBlock>(16, 32, /*stride=*/2));
    fc = register_module("fc", std::make_shared<nn::Linear>(32, classes));
    scale = register_parameter("scale", ones({1}));
    seen = register_buffer("seen", zeros({}));
  }

  Tensor forward(const Tensor& x) override {
    if (is_training()) {
      NoGradGuard g;  // a buffer is state, not part of the graph
      seen.add_(float(x.size(0)));
    }
    Tensor h = relu(bn->forward(stem->forward(x)));  // (N, 16, H, W)
    h = block->forward(h);                           // (N, 32, H/2, W/2)
    h = h.mean({2, 3});                              // (N, 32)
    return fc->forward(h) * scale;                   // (N, classes)
  }
  std::string name() const override { return "TinyResNet"; }

  std::shared_ptr<nn::Conv2d> stem;
  std::shared_ptr<nn::BatchNorm2d> bn;
  std::shared_ptr<nn::BasicBlock> block;
  std::shared_ptr<nn::Linear> fc;
  Tensor scale;  // (1) learnable
  Tensor seen;         // () buffer: training examples seen
};

int failures = 0;
void expect(bool ok, const char* what) {
  if (!ok) {
    fmt::print("WRONG: {}\n", what);
    ++failures;
  }
}

int main() {
  manual_seed(0);
  TinyResNet model(4);

  // Names, as PyTorch's state_dict() would give them.
  int64_t count = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    fmt::print("param  {:<40} {}\n", name, p.shape());
    count += p.numel();
  }
  for (const auto& [name, b] : model.named_buffers()) fmt::print("buffer {:<40} {}\n", name, b.shape());
  fmt::print("{} parameters\n", count);
  // stem 432 + bn 32 + block (4608 + 64 + 9216 + 64 + 512 + 64) + fc 132 + scale 1
  expect(count == 15125, "parameter count");
  NamedTensors sd = model.state_dict();
  expect(sd.size() == 28, "state_dict size");
  // PyTorch's order: the module's own parameters, its own buffers, then each child's.
  expect(sd[0].first == "scale" && sd[1].first == "seen" && sd[2].first == "stem.weight", "state_dict order");

  // Training: one optimizer over parameters(), no weight decay on BN and bias.
  std::vector<Tensor> decay, no_decay;
  for (const auto& [name, p] : model.named_parameters())
    (p.dim() > 1 ? decay : no_decay).push_back(p);
  optim::SGD opt({{.params = decay, .weight_decay = 5e-4}, {.params = no_decay, .weight_decay = 0.0}},
                 /*lr=*/0.05, /*momentum=*/0.9);
  Tensor x = randn({16, 3, 8, 8});
  Tensor y = tensor({0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3});
  model.train();
  float first = 0, last = 0;
  for (int step = 1; step <= 20; ++step) {
    opt.zero_grad();
    Tensor loss = nn::cross_entropy(model.forward(x), y);
    loss.backward();
    opt.step();
    (step == 1 ? first : last) = loss.item();
    if (step == 1 || step == 5 || step == 10 || step == 20) fmt::print("step {:2}  loss {:.2f}\n", step, loss.item());
  }
  expect(std::fabs(first - std::log(4.0f)) < 0.1f, "first loss near log(4), chance for 4 classes");
  expect(last < 0.01f, "the 16 examples are fitted in 20 steps");
  expect(model.seen.item() == 16 * 20, "seen counts training examples");
  expect(model.block->named_buffers()[2].second.item() == 20, "block.bn1.num_batches_tracked");

  // Eval: BatchNorm uses its running statistics and the buffer stays put.
  model.eval();
  Tensor logits;
  {
    NoGradGuard g;
    logits = model.forward(x);
  }
  expect(model.seen.item() == 16 * 20, "eval leaves buffers alone");

  // Save, then load into a model built with another seed: same logits, bit for bit.
  const std::string path = (std::filesystem::temp_directory_path() / "norma_custom_model.safetensors").string();
  nn::save(model, path);
  manual_seed(1);
  TinyResNet copy(4);
  nn::load(copy, path);
  copy.eval();
  NoGradGuard g;
  expect(copy.forward(x).to_vector() == logits.to_vector(), "reloaded model gives the same logits");
  expect(copy.seen.item() == 16 * 20, "buffers are saved");
  std::filesystem::remove(path);
  fmt::print("saved and reloaded: same logits\n");
  return failures == 0 ? 0 : 1;
}

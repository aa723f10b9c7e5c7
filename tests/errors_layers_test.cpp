// Error messages of the layers (docs/errors.md, "Layers and modules" and
// "BatchNorm2d") that their own test files do not provoke: each names the op
// and every shape or value involved.
#include "test_util.h"

#include <cmath>

#include <norma/layers/activation.h>
#include <norma/layers/batchnorm2d.h>
#include <norma/layers/batchnorm_composite.h>
#include <norma/layers/linear.h>
#include <norma/layers/pooling.h>
#include <norma/layers/sequential.h>

using namespace norma;
using namespace norma::nn;
using Catch::Contains;

TEST_CASE("errors: linear and Linear") {
  Tensor w = zeros({3, 4});
  CHECK_THROWS_WITH(linear(Tensor(), w, Tensor()), Contains("linear: input and weight must be defined tensors"));
  CHECK_THROWS_WITH(linear(zeros({2, 4}), Tensor(), Tensor()), Contains("linear: input and weight must be defined tensors"));
  CHECK_THROWS_WITH(linear(zeros({2, 4}), zeros({3, 4, 1}), Tensor()),
                    Contains("linear: weight must be 2-D (out, in), got (3, 4, 1)"));
  CHECK_THROWS_WITH(linear(zeros({2, 5}), w, Tensor()),
                    Contains("linear: input (2, 5) has 5 features in its last dim but weight (3, 4) expects 4"));
  CHECK_THROWS_WITH(linear(scalar_tensor(1), w, Tensor()),
                    Contains("linear: input () has 0 features in its last dim but weight (3, 4) expects 4"));
  CHECK_THROWS_WITH(linear(zeros({2, 4}), w, zeros({4})),
                    Contains("linear: bias (4,) does not match weight (3, 4) (expected (3,))"));
  CHECK_THROWS_WITH(Linear(4, 0), Contains("Linear: in_features 4 and out_features 0 must be positive"));
  CHECK_THROWS_WITH(Linear(-2, 3), Contains("Linear: in_features -2 and out_features 3 must be positive"));
  Linear l(4, 3);
  CHECK_THROWS_WITH(l.forward(zeros({8, 3})), Contains("linear: input (8, 3) has 3 features in its last dim but weight (3, 4) expects 4"));
  // An empty batch is a valid (empty) batch.
  CHECK(l.forward(zeros({0, 4})).shape() == Shape{0, 3});
}

namespace {
// A module with two inputs: Module::forward(x) is not its interface.
struct Pair : Module {
  Tensor forward2(const Tensor& a, const Tensor& b) { return a + b; }
  std::string name() const override { return "Pair"; }
};
}  // namespace

TEST_CASE("errors: Module forward and load_state_dict") {
  Pair p;
  CHECK_THROWS_WITH(p.forward(zeros({2})), Contains("Pair: this module has no single-tensor forward()"));

  Linear l(4, 3);
  NamedTensors sd = l.state_dict();
  sd[0].second = zeros({3, 5});  // weight of the wrong shape
  sd.emplace_back("scale", zeros({1}));
  sd.erase(sd.begin() + 1);  // no bias
  const std::vector<float> before = l.weight.to_vector();
  // The message ("{}" in the catalogue) lists every key that does not fit.
  CHECK_THROWS_WITH(l.load_state_dict(sd),
                    Contains("load_state_dict: cannot load into Linear:\n  missing key: bias\n  unexpected key: scale\n"
                             "  size mismatch for weight: checkpoint has (3, 5), model has (3, 4)"));
  CHECK(l.weight.to_vector() == before);  // nothing was copied
  sd[0].second = Tensor();
  CHECK_THROWS_WITH(l.load_state_dict(sd, /*strict=*/false),
                    Contains("size mismatch for weight: checkpoint has undefined, model has (3, 4)"));
}

TEST_CASE("errors: batch_norm2d, the functional op") {
  BatchNormArgs a;
  Tensor x = zeros({2, 3, 2, 2}), rm = zeros({3}), rv = ones({3});
  CHECK_THROWS_WITH(batch_norm2d(Tensor(), Tensor(), Tensor(), rm, rv, a), Contains("batch_norm2d: input is an undefined tensor"));
  CHECK_THROWS_WITH(batch_norm2d(x, Tensor(), Tensor(), zeros({4}), rv, a),
                    Contains("batch_norm2d: running_mean has shape (4,) but input (2, 3, 2, 2) has 3 channels (layout (N, C, H, W))"));
  a.layout = Layout::NHWC;
  CHECK_THROWS_WITH(batch_norm2d(x, ones({3}), Tensor(), Tensor(), Tensor(), a),
                    Contains("batch_norm2d: weight has shape (3,) but input (2, 3, 2, 2) has 2 channels (layout (N, H, W, C))"));
  a = BatchNormArgs();
  for (double eps : {0.0, -1.0, double(NAN), double(INFINITY)}) {
    a.eps = eps;
    CHECK_THROWS_WITH(batch_norm2d(x, Tensor(), Tensor(), rm, rv, a),
                      Contains(fmt::format("batch_norm2d: eps must be positive and finite, got {}", eps)));
  }
  a = BatchNormArgs();
  a.use_batch_stats = false;
  CHECK_THROWS_WITH(batch_norm2d(x, Tensor(), Tensor(), Tensor(), rv, a),
                    Contains("batch_norm2d: running statistics are needed when not using batch statistics (input (2, 3, 2, 2))"));
  a = BatchNormArgs();
  a.momentum = 0.1;
  CHECK_THROWS_WITH(batch_norm2d(x, Tensor(), Tensor(), rm, Tensor(), a),
                    Contains("batch_norm2d: a running-statistics update needs running_mean and running_var (input (2, 3, 2, 2))"));
  a = BatchNormArgs();
  a.inplace = true;
  Tensor xg = zeros({2, 3, 2, 2}).requires_grad_();
  CHECK_THROWS_WITH(batch_norm2d(xg, Tensor(), Tensor(), rm, rv, a),
                    Contains("batch_norm2d: inplace=true overwrites the input (2, 3, 2, 2), so no gradient can flow through "
                             "it (run inference under NoGradGuard, or set inplace=false)"));
  NoGradGuard g;
  CHECK_THROWS_WITH(batch_norm2d(zeros({2, 2, 3, 3}).permute({0, 2, 1, 3}), Tensor(), Tensor(), rm, rv, a),
                    Contains("batch_norm2d: inplace=true needs a contiguous input, got (2, 3, 2, 3) with strides (18, 3, 9, 1)"));
}

TEST_CASE("errors: batch_norm2d_composite names itself") {
  BatchNormArgs a;
  Tensor rm = zeros({3}), rv = ones({3});
  CHECK_THROWS_WITH(batch_norm2d_composite(zeros({2, 4, 2, 2}), ones({3}), Tensor(), rm, rv, a),
                    Contains("batch_norm2d_composite: weight has shape (3,) but input (2, 4, 2, 2) has 4 channels (layout (N, C, H, W))"));
  BatchNormArgs nan_eps;
  nan_eps.eps = NAN;
  CHECK_THROWS_WITH(batch_norm2d_composite(zeros({2, 3, 2, 2}), Tensor(), Tensor(), rm, rv, nan_eps),
                    Contains("batch_norm2d_composite: eps must be positive and finite, got nan"));
  CHECK_THROWS_WITH(batch_norm2d_composite(zeros({1, 3, 1, 1}), Tensor(), Tensor(), rm, rv, a),
                    Contains("batch_norm2d_composite: expected more than 1 value per channel when training, got input size (1, 3, 1, 1)"));
  CHECK_THROWS_WITH(batch_norm2d_composite(zeros({0, 3, 2, 2}), Tensor(), Tensor(), rm, rv, a),
                    Contains("batch_norm2d_composite: expected more than 1 value per channel when training, got input size (0, 3, 2, 2)"));
  a.momentum = 0.1;
  CHECK_THROWS_WITH(batch_norm2d_composite(zeros({2, 3, 2, 2}), Tensor(), Tensor(), Tensor(), rv, a),
                    Contains("batch_norm2d_composite: running_mean and running_var are needed for a running-statistics "
                             "update (input (2, 3, 2, 2))"));
  a = BatchNormArgs();
  a.inplace = true;
  CHECK_THROWS_WITH(batch_norm2d_composite(zeros({2, 3, 2, 2}).requires_grad_(), Tensor(), Tensor(), rm, rv, a),
                    Contains("batch_norm2d_composite: inplace=true overwrites the input (2, 3, 2, 2), so no gradient can "
                             "flow through it (run inference under NoGradGuard, or set inplace=false)"));
  NoGradGuard g;
  CHECK_THROWS_WITH(batch_norm2d_composite(zeros({2, 2, 3, 3}).permute({0, 2, 1, 3}), Tensor(), Tensor(), rm, rv, a),
                    Contains("batch_norm2d_composite: inplace=true needs a contiguous input, got (2, 3, 2, 3) with strides (18, 3, 9, 1)"));
}

TEST_CASE("errors: pooling of an undefined tensor names the op") {
  CHECK_THROWS_WITH(max_pool2d(Tensor(), 2), Contains("max_pool2d: input is an undefined tensor"));
  CHECK_THROWS_WITH(avg_pool2d(Tensor(), 2), Contains("avg_pool2d: input is an undefined tensor"));
  CHECK_THROWS_WITH(adaptive_avg_pool2d(Tensor(), 1), Contains("adaptive_avg_pool2d: input is an undefined tensor"));
}

TEST_CASE("errors: an in-place ReLU given an undefined tensor names relu") {
  ReLU r(/*inplace=*/true);
  CHECK_THROWS_WITH(r.forward(Tensor()), Contains("relu: argument 'x' is an undefined tensor"));
  Tensor x = tensor({-1, 2});
  CHECK(r.forward(x).to_vector() == std::vector<float>{0, 2});
  CHECK(x.to_vector() == std::vector<float>{0, 2});  // written in place
}

// The process-group API without MPI: the single-process group, the data-parallel
// helpers and SyncBatchNorm driven by fake groups that stand in for K ranks.
// The real multi-process tests are tests/mpi/ (run under mpirun).
#include <norma/core/dist/process_group.h>
#include <norma/layers/batchnorm2d.h>
#include <norma/layers/linear.h>
#include <norma/layers/sequential.h>
#include <norma/core/dist/data_parallel.h>

#include "test_util.h"

using namespace norma;

namespace {

// K ranks that all hold this rank's data: a sum is K times the value. Records
// the size of every float allreduce (the buckets).
class MirrorGroup : public dist::ProcessGroup {
 public:
  explicit MirrorGroup(int k) : k_(k) {}
  int rank() const override { return 0; }
  int size() const override { return k_; }
  std::string name() const override { return "mirror"; }
  void allreduce_sum(double* d, size_t n) override { scale(d, n); }
  void allreduce_sum(float* d, size_t n) override {
    float_calls.push_back(n);
    scale(d, n);
  }
  void allreduce_sum(int64_t* d, size_t n) override { scale(d, n); }
  void broadcast(float*, size_t, int) override {}
  void broadcast(double*, size_t, int) override {}
  void broadcast(int64_t*, size_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int) override { throw Error("abort"); }
  std::vector<size_t> float_calls;

 private:
  template <class T>
  void scale(T* d, size_t n) {
    for (size_t i = 0; i < n; ++i) d[i] *= k_;
  }
  int k_;
};

// Rank 1 of 2 whose root holds `root_state` (floats) and, when `skew` is set,
// a different layout signature.
class FollowerGroup : public MirrorGroup {
 public:
  FollowerGroup() : MirrorGroup(2) {}
  int rank() const override { return 1; }
  void broadcast(float* d, size_t n, int) override {
    REQUIRE(n == root_state.size());
    std::copy(root_state.begin(), root_state.end(), d);
  }
  void broadcast(int64_t* d, size_t, int) override { d[0] += skew; }
  void allreduce_sum(int64_t* d, size_t n) override {  // the root's mismatch flag is 0
    (void)n;
    (void)d;
  }
  std::vector<float> root_state;
  int64_t skew = 0;
};

std::shared_ptr<nn::Sequential> small_model() {
  auto m = std::make_shared<nn::Sequential>();
  m->push_back(std::make_shared<nn::Linear>(3, 4));
  m->push_back(std::make_shared<nn::BatchNorm2d>(4));
  return m;
}

}  // namespace

TEST_CASE("dist: single_process is rank 0 of 1 and its collectives change nothing") {
  auto pg = dist::single_process();
  CHECK(pg->rank() == 0);
  CHECK(pg->size() == 1);
  CHECK(pg->is_root());
  CHECK(pg->name() == "single-process");
  CHECK(pg == dist::single_process());  // one shared group
  std::vector<float> f{1.5f, -2.0f};
  std::vector<double> d{3.25};
  std::vector<int64_t> i{7, 8};
  pg->allreduce_sum(f.data(), f.size());
  pg->allreduce_sum(d.data(), d.size());
  pg->allreduce_sum(i.data(), i.size());
  pg->broadcast(f.data(), f.size(), 0);
  pg->broadcast(d.data(), d.size(), 0);
  pg->broadcast(i.data(), i.size(), 0);
  pg->barrier();
  CHECK(f == std::vector<float>{1.5f, -2.0f});
  CHECK(d == std::vector<double>{3.25});
  CHECK(i == std::vector<int64_t>{7, 8});
  CHECK(dist::allreduce_mean(0.75, *pg) == 0.75);
  CHECK(dist::allreduce_sum(0.75, *pg) == 0.75);
  CHECK(dist::allreduce_sum(int64_t(42), *pg) == 42);
}

TEST_CASE("dist: single_process broadcast from a root other than 0 is an error") {
  float v = 1;
  CHECK_THROWS_WITH(dist::single_process()->broadcast(&v, 1, 1),
                    "broadcast: root 1 is not a rank of the single-process group (only rank 0)");
}

TEST_CASE("dist: scalar helpers sum and average over the ranks") {
  MirrorGroup pg(4);
  CHECK(dist::allreduce_sum(2.5, pg) == 10.0);
  CHECK(dist::allreduce_mean(2.5, pg) == 2.5);
  CHECK(dist::allreduce_sum(int64_t(3), pg) == 12);
}

TEST_CASE("dist: allreduce_gradients averages every trainable gradient in buckets") {
  manual_seed(3);
  auto model = small_model();  // Linear weight 12 + bias 4, BatchNorm weight 4 + bias 4 = 24 floats
  std::vector<Tensor> params = model->parameters();
  params[0].set_grad(randn({4, 3}));
  params[1].set_grad(randn({4}));
  params[2].set_grad(randn({4}));
  // params[3] (BatchNorm bias) has no gradient yet: it must count as zeros.
  const std::vector<float> g0 = params[0].grad().to_vector(), g2 = params[2].grad().to_vector();
  // Three ranks with the same gradient: the mean is the gradient itself.
  MirrorGroup pg(3);
  dist::allreduce_gradients(*model, pg, 7 * sizeof(float));  // 24 floats -> buckets 7, 7, 7, 3
  CHECK(pg.float_calls == std::vector<size_t>{7, 7, 7, 3});
  NORMA_CHECK_CLOSE(params[0].grad(), from_vector(g0, {4, 3}), 1e-6, 0);
  NORMA_CHECK_CLOSE(params[2].grad(), from_vector(g2, {4}), 1e-6, 0);
  REQUIRE(params[3].grad().defined());
  CHECK(params[3].grad().to_vector() == std::vector<float>(4, 0.0f));
  // A frozen parameter is not reduced; the default bucket takes everything at once.
  params[0].requires_grad_(false);
  pg.float_calls.clear();
  dist::allreduce_gradients(*model, pg);
  CHECK(pg.float_calls == std::vector<size_t>{12});
}

TEST_CASE("dist: allreduce_gradients rejects a bucket smaller than one float") {
  auto model = small_model();
  MirrorGroup pg(2);
  CHECK_THROWS_WITH(dist::allreduce_gradients(*model, pg, 3),
                    "allreduce_gradients: bucket_bytes must hold at least one float (4 bytes), got 3");
}

TEST_CASE("dist: broadcast_state copies root's parameters and buffers in state_dict order") {
  manual_seed(1);
  auto root = small_model();
  manual_seed(2);
  auto follower = small_model();
  FollowerGroup pg;
  for (auto& [name, t] : root->state_dict())
    for (float v : t.to_vector()) pg.root_state.push_back(v);
  dist::broadcast_state(*follower, pg);
  auto want = root->state_dict(), got = follower->state_dict();
  REQUIRE(want.size() == got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO(got[i].first);
    CHECK(got[i].second.to_vector() == want[i].second.to_vector());
  }
  CHECK(follower->parameters()[0].requires_grad());
}

TEST_CASE("dist: broadcast_state refuses models that differ across ranks") {
  auto model = small_model();
  FollowerGroup pg;
  pg.skew = 1;  // root reports one tensor more
  CHECK_THROWS_WITH(dist::broadcast_state(*model, pg),
                    Catch::Contains("broadcast_state: the model differs across ranks (1 of 2 differ from root 0): "
                                    "rank 1 has 7 tensors and 33 values, root has 8 tensors and 33 values"));
  CHECK_THROWS_WITH(dist::broadcast_state(*model, pg, 2),
                    "broadcast_state: root 2 is not a rank of the group (size 2)");
}

// K ranks holding the same shard x are one process holding K copies of x: the
// global rule must then equal the plain layer on the concatenation.
TEST_CASE("dist: SyncBatchNorm over mirrored ranks equals BatchNorm2d on the concatenated batch") {
  for (auto layout : {nn::Layout::NCHW, nn::Layout::NHWC}) {
    INFO("layout " << (layout == nn::Layout::NCHW ? "NCHW" : "NHWC"));
    manual_seed(7);
    Tensor x = randn({3, 2, 2, 2}) * 5.0f + 1000.0f, dy = randn({3, 2, 2, 2});
    auto cat2 = [](const Tensor& t) {
      std::vector<float> v = t.to_vector(), w = v;
      w.insert(w.end(), v.begin(), v.end());
      Shape s = t.shape();
      s[0] *= 2;
      return from_vector(w, s);
    };
    auto group = std::make_shared<MirrorGroup>(2);
    nn::BatchNorm2d synced(nn::BatchNorm2dOptions(2).layout(layout).process_group(group));
    nn::BatchNorm2d plain(nn::BatchNorm2dOptions(2).layout(layout));
    Tensor xs = x.clone().requires_grad_(), xp = cat2(x).requires_grad_();
    Tensor ys = synced.forward(xs), yp = plain.forward(xp);
    (ys * dy).sum().backward();
    (yp * cat2(dy)).sum().backward();
    NORMA_CHECK_CLOSE(ys, yp.narrow(0, 0, 3), 1e-5, 1e-5);
    NORMA_CHECK_CLOSE(synced.running_mean, plain.running_mean, 1e-6, 0);
    NORMA_CHECK_CLOSE(synced.running_var, plain.running_var, 1e-6, 0);
    NORMA_CHECK_CLOSE(xs.grad(), xp.grad().narrow(0, 0, 3), 1e-4, 1e-5);
    // This rank's share of dgamma is half the concatenation's (the trainer averages over ranks).
    NORMA_CHECK_CLOSE(synced.weight.grad() * 2.0f, plain.weight.grad(), 1e-4, 1e-5);
  }
}

TEST_CASE("dist: SyncBatchNorm with the single-process group equals the plain layer, both rules") {
  for (auto rule : {nn::SyncRule::global, nn::SyncRule::replica_average}) {
    manual_seed(11);
    Tensor x = randn({4, 3, 2, 2}), dy = randn({4, 3, 2, 2});
    nn::BatchNorm2d synced(nn::BatchNorm2dOptions(3).process_group(dist::single_process()).sync_rule(rule));
    nn::BatchNorm2d plain(3);
    Tensor xs = x.clone().requires_grad_(), xp = x.clone().requires_grad_();
    Tensor ys = synced.forward(xs), yp = plain.forward(xp);
    (ys * dy).sum().backward();
    (yp * dy).sum().backward();
    NORMA_CHECK_CLOSE(ys, yp, 1e-6, 1e-6);
    NORMA_CHECK_CLOSE(synced.running_var, plain.running_var, 1e-6, 0);
    NORMA_CHECK_CLOSE(xs.grad(), xp.grad(), 1e-5, 1e-6);
    // Eval uses the running statistics and no collective.
    synced.eval();
    plain.eval();
    NORMA_CHECK_CLOSE(synced.forward(x), plain.forward(x), 1e-6, 1e-6);
  }
}

TEST_CASE("dist: SyncBatchNorm needs more than one value per channel over the whole group") {
  nn::BatchNorm2d bn(nn::BatchNorm2dOptions(2).process_group(dist::single_process()));
  CHECK_THROWS_WITH(bn.forward(randn({1, 2, 1, 1})),
                    "batch_norm2d: expected more than 1 value per channel when training, got 1 over the process "
                    "group of 1 ranks (input (1, 2, 1, 1) on rank 0)");
  // Over two ranks one value each is enough under the global rule.
  auto two = std::make_shared<MirrorGroup>(2);
  nn::BatchNorm2d g(nn::BatchNorm2dOptions(2).process_group(two));
  CHECK_NOTHROW(g.forward(randn({1, 2, 1, 1})));
}

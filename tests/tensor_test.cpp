// Tensor core, forward only: creation, views and aliasing, broadcasting,
// reductions, matmul, in-place ops, the seeded generator and printing.
// Expected values are worked out by hand in the comments beside them.
#include "test_util.h"

using namespace norma;

namespace {

// (n, k) @ (k, m) in double with at(), batched like matmul: the oracle for sgemm.
Tensor matmul_ref(const Tensor& a, const Tensor& b) {
  const int64_t batch = std::max(a.dim() == 3 ? a.size(0) : 1, b.dim() == 3 ? b.size(0) : 1);
  const int64_t n = a.size(-2), k = a.size(-1), m = b.size(-1);
  std::vector<float> out;
  for (int64_t i = 0; i < batch; ++i)
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < m; ++c) {
        double s = 0;
        for (int64_t j = 0; j < k; ++j)
          s += double(a.dim() == 3 ? a.at({i, r, j}) : a.at({r, j})) *
               double(b.dim() == 3 ? b.at({i, j, c}) : b.at({j, c}));
        out.push_back(float(s));
      }
  return a.dim() == 3 || b.dim() == 3 ? from_vector(out, {batch, n, m}) : from_vector(out, {n, m});
}

}  // namespace

// ---------------------------------------------------------------- creation

TEST_CASE("tensor: creation functions give the right shapes, strides and values") {
  Tensor z = zeros({2, 3});
  CHECK(z.shape() == Shape{2, 3});
  CHECK(z.strides() == Shape{3, 1});
  CHECK(z.numel() == 6);
  CHECK(z.dim() == 2);
  CHECK(z.is_contiguous());
  NORMA_CHECK_CLOSE(z, tensor({0, 0, 0, 0, 0, 0}), 0, 0);
  NORMA_CHECK_CLOSE(ones({2, 2}), tensor({1, 1, 1, 1}), 0, 0);
  NORMA_CHECK_CLOSE(full({3}, 2.5f), tensor({2.5f, 2.5f, 2.5f}), 0, 0);
  CHECK(zeros_like(z).shape() == z.shape());
  NORMA_CHECK_CLOSE(ones_like(z), ones({2, 3}), 0, 0);
  CHECK(empty_like(z).shape() == z.shape());
  CHECK(zeros({2, 3, 4}).strides() == Shape{12, 4, 1});

  Tensor s = scalar_tensor(4.5f);
  CHECK(s.dim() == 0);
  CHECK(s.numel() == 1);
  CHECK(s.shape() == Shape{});
  CHECK(s.item() == 4.5f);

  NORMA_CHECK_CLOSE(arange(4), tensor({0, 1, 2, 3}), 0, 0);
  NORMA_CHECK_CLOSE(arange(0, 1, 0.25f), tensor({0, 0.25f, 0.5f, 0.75f}), 0, 0);
  NORMA_CHECK_CLOSE(arange(5, 0, -2), tensor({5, 3, 1}), 0, 0);  // ceil((0-5)/-2) = 3 values
  CHECK(arange(3, 3).numel() == 0);

  Tensor v = from_vector({1, 2, 3, 4, 5, 6}, {3, 2});
  CHECK(v.at({0, 1}) == 2);
  CHECK(v.at({2, 0}) == 5);
  CHECK(v.to_vector() == std::vector<float>{1, 2, 3, 4, 5, 6});

  Tensor e = zeros({0, 3});  // empty tensors are fine
  CHECK(e.numel() == 0);
  CHECK(e.to_vector().empty());
}

// ---------------------------------------------------------------- views

TEST_CASE("tensor: views share storage with their base and see its writes") {
  Tensor x = arange(6).reshape({2, 3});  // [[0, 1, 2], [3, 4, 5]]
  Tensor t = x.t();
  CHECK(t.shape() == Shape{3, 2});
  CHECK(t.strides() == Shape{1, 3});
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.storage() == x.storage());
  NORMA_CHECK_CLOSE(t, tensor({0, 3, 1, 4, 2, 5}), 0, 0);

  Tensor n = x.narrow(1, 1, 2);  // [[1, 2], [4, 5]]
  CHECK(n.storage_offset() == 1);
  CHECK(n.strides() == Shape{3, 1});
  CHECK_FALSE(n.is_contiguous());
  NORMA_CHECK_CLOSE(n, tensor({1, 2, 4, 5}), 0, 0);

  Tensor r = x.select(0, 1);  // [3, 4, 5]
  CHECK(r.shape() == Shape{3});
  CHECK(r.storage_offset() == 3);
  NORMA_CHECK_CLOSE(r, tensor({3, 4, 5}), 0, 0);
  NORMA_CHECK_CLOSE(x.select(1, -1), tensor({2, 5}), 0, 0);  // negative index counts from the end

  // A write through the base shows in every view, and a write through a view in the base.
  x.fill_(7);
  CHECK(t.at({2, 1}) == 7);
  CHECK(n.at({1, 0}) == 7);
  r.fill_(1);
  NORMA_CHECK_CLOSE(x, tensor({7, 7, 7, 1, 1, 1}), 0, 0);
  n.select(1, 0).fill_(9);  // column 1 of x
  NORMA_CHECK_CLOSE(x, tensor({7, 9, 7, 1, 9, 1}), 0, 0);

  // Views share the version counter (it lives in the storage).
  uint64_t v0 = x.storage()->version;
  t.add_(1.0f);
  CHECK(x.storage()->version == v0 + 1);
  CHECK(x.at({0, 0}) == 8);

  // detach shares storage too; clone does not.
  Tensor d = x.detach();
  CHECK(d.storage() == x.storage());
  Tensor c = x.clone();
  CHECK(c.storage() != x.storage());
  c.fill_(0);
  CHECK(x.at({0, 0}) == 8);
}

TEST_CASE("tensor: permute, transpose, expand, unsqueeze, squeeze, flatten, view and reshape") {
  Tensor x = arange(24).reshape({2, 3, 4});  // x[i][j][k] = 12i + 4j + k
  Tensor p = x.permute({2, 0, 1});
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK(p.strides() == Shape{1, 12, 4});
  CHECK(p.at({3, 1, 2}) == 12 + 8 + 3);
  Tensor tr = x.transpose(0, -1);
  CHECK(tr.shape() == Shape{4, 3, 2});
  CHECK(tr.at({1, 2, 1}) == 12 + 8 + 1);

  Tensor row = tensor({1, 2, 3});
  Tensor e = row.expand({2, 3});
  CHECK(e.strides() == Shape{0, 1});
  CHECK(e.storage() == row.storage());
  NORMA_CHECK_CLOSE(e, tensor({1, 2, 3, 1, 2, 3}), 0, 0);
  Tensor col = from_vector({1, 2}, {2, 1}).expand({-1, 3});  // -1 keeps the size
  CHECK(col.shape() == Shape{2, 3});
  NORMA_CHECK_CLOSE(col, tensor({1, 1, 1, 2, 2, 2}), 0, 0);
  CHECK(row.broadcast_to({4, 3}).shape() == Shape{4, 3});

  CHECK(row.unsqueeze(0).shape() == Shape{1, 3});
  CHECK(row.unsqueeze(-1).shape() == Shape{3, 1});
  Tensor ones3 = zeros({1, 3, 1, 2});
  CHECK(ones3.squeeze().shape() == Shape{3, 2});
  CHECK(ones3.squeeze(2).shape() == Shape{1, 3, 2});
  CHECK(ones3.squeeze(1).shape() == Shape{1, 3, 1, 2});  // size 3: unchanged

  CHECK(x.flatten().shape() == Shape{24});
  CHECK(x.flatten(1).shape() == Shape{2, 12});
  CHECK(x.flatten(0, 1).shape() == Shape{6, 4});
  CHECK(scalar_tensor(1).flatten().shape() == Shape{1});

  // view keeps the storage; -1 is inferred.
  Tensor v = x.view({4, -1});
  CHECK(v.shape() == Shape{4, 6});
  CHECK(v.storage() == x.storage());
  // A narrowed tensor can still be viewed when the narrowed dim is not merged.
  Tensor nv = x.narrow(2, 1, 2).view({6, 2});
  CHECK(nv.strides() == Shape{4, 1});
  NORMA_CHECK_CLOSE(nv, x.narrow(2, 1, 2).contiguous(), 0, 0);
  // reshape of a transposed tensor must copy, and gets the values in logical order.
  Tensor rt = x.transpose(1, 2).reshape({2, 12});
  CHECK(rt.storage() != x.storage());
  CHECK(rt.at({1, 1}) == x.at({1, 1, 0}));  // element 1 of row 1 is (k=0, j=1)
  CHECK(x.reshape({6, 4}).storage() == x.storage());
}

TEST_CASE("tensor: contiguous returns itself when contiguous, else a row-major copy") {
  Tensor x = arange(6).reshape({2, 3});
  CHECK(x.contiguous().is_same(x));
  Tensor c = x.t().contiguous();
  CHECK_FALSE(c.is_same(x));
  CHECK(c.is_contiguous());
  CHECK(c.strides() == Shape{2, 1});
  NORMA_CHECK_CLOSE(c, tensor({0, 3, 1, 4, 2, 5}), 0, 0);
  // Size-1 dims do not count against contiguity.
  CHECK(x.select(1, 0).unsqueeze(1).contiguous().shape() == Shape{2, 1});
  CHECK(x.narrow(0, 1, 1).is_contiguous());
  CHECK_FALSE(x.narrow(1, 0, 2).is_contiguous());
  // A tensor with no elements is contiguous, as in PyTorch (found by tests/fuzz/safetensors_fuzz).
  Tensor e = empty({2, 0, 3});
  CHECK(e.is_contiguous());
  CHECK(e.contiguous().is_same(e));
}

TEST_CASE("tensor: element counts and strides that overflow int64 are errors") {
  // A safetensors header may declare any shape with a 0 in it: counts and strides must not wrap.
  const int64_t big = int64_t(1) << 32;
  Tensor e = empty({big, big, 0});  // no elements, strides (2^32, 1, 1)
  CHECK(e.numel() == 0);
  CHECK(e.strides() == Shape{big, 1, 1});
  test::check_error([&] { empty({0, big, big}); }, {"shape (0, 4294967296, 4294967296)", "strides overflow int64"});
  test::check_error([&] { Shape{big, big}.numel(); },
                    {"numel: shape (4294967296, 4294967296) has more than 2^63 - 1 elements"});
  test::check_error([&] { zeros({4}).view({big, big}); },
                    {"view: shape (4294967296, 4294967296) has more than 2^63 - 1 elements"});
}

// ---------------------------------------------------------------- broadcasting

TEST_CASE("tensor: elementwise ops broadcast like NumPy") {
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor r = tensor({10, 20, 30});
  NORMA_CHECK_CLOSE(a + r, tensor({11, 22, 33, 14, 25, 36}), 0, 0);
  NORMA_CHECK_CLOSE(a - r, tensor({-9, -18, -27, -6, -15, -24}), 0, 0);
  NORMA_CHECK_CLOSE(r / a, tensor({10, 10, 10, 2.5f, 4, 5}), 1e-6, 0);

  // (2, 1) * (1, 3) is an outer product.
  Tensor outer = from_vector({1, 2}, {2, 1}) * from_vector({3, 4, 5}, {1, 3});
  CHECK(outer.shape() == Shape{2, 3});
  NORMA_CHECK_CLOSE(outer, tensor({3, 4, 5, 6, 8, 10}), 0, 0);

  // (3, 1, 2) with (2,) -> (3, 1, 2); with (4, 1) -> (3, 4, 2).
  CHECK(broadcast_shapes({3, 1, 2}, {2}, "t") == Shape{3, 1, 2});
  CHECK(broadcast_shapes({3, 1, 2}, {4, 1}, "t") == Shape{3, 4, 2});
  CHECK(broadcast_shapes({}, {2, 2}, "t") == Shape{2, 2});
  Tensor b3 = arange(6).reshape({3, 1, 2}) + from_vector({100, 200, 300, 400}, {4, 1});
  CHECK(b3.shape() == Shape{3, 4, 2});
  CHECK(b3.at({2, 3, 1}) == 5 + 400);
  CHECK(b3.at({1, 0, 0}) == 2 + 100);

  // Scalars and 0-d tensors.
  NORMA_CHECK_CLOSE(a * 2.0f, tensor({2, 4, 6, 8, 10, 12}), 0, 0);
  NORMA_CHECK_CLOSE(1.0f - a, tensor({0, -1, -2, -3, -4, -5}), 0, 0);
  NORMA_CHECK_CLOSE(12.0f / a, tensor({12, 6, 4, 3, 2.4f, 2}), 1e-6, 0);
  CHECK((scalar_tensor(2) * scalar_tensor(3)).dim() == 0);

  // Non-contiguous operands: a transposed view plus an expanded one.
  Tensor s = a.t() + tensor({1, 2}).unsqueeze(0).expand({3, 2});  // a.t() = [[1,4],[2,5],[3,6]]
  NORMA_CHECK_CLOSE(s, tensor({2, 6, 3, 7, 4, 8}), 0, 0);
}

TEST_CASE("tensor: unary, comparison and where ops give hand-computed values") {
  Tensor x = tensor({-2, -0.5f, 0, 1, 4});
  NORMA_CHECK_CLOSE(neg(x), tensor({2, 0.5f, 0, -1, -4}), 0, 0);
  NORMA_CHECK_CLOSE(x.abs(), tensor({2, 0.5f, 0, 1, 4}), 0, 0);
  NORMA_CHECK_CLOSE(x.relu(), tensor({0, 0, 0, 1, 4}), 0, 0);
  NORMA_CHECK_CLOSE(x.pow(2), tensor({4, 0.25f, 0, 1, 16}), 0, 0);
  Tensor p = tensor({1, 4, 0.25f});
  NORMA_CHECK_CLOSE(p.sqrt(), tensor({1, 2, 0.5f}), 1e-6, 0);
  NORMA_CHECK_CLOSE(p.rsqrt(), tensor({1, 0.5f, 2}), 1e-6, 0);
  NORMA_CHECK_CLOSE(p.log(), tensor({0, 1.3862944f, -1.3862944f}), 1e-6, 1e-7);
  NORMA_CHECK_CLOSE(tensor({0, 1, -1}).exp(), tensor({1, 2.7182818f, 0.36787944f}), 1e-6, 0);
  NORMA_CHECK_CLOSE(p.pow(0.5f), tensor({1, 2, 0.5f}), 1e-6, 0);

  Tensor a = tensor({1, 5, 3}), b = tensor({2, 5, 1});
  NORMA_CHECK_CLOSE(maximum(a, b), tensor({2, 5, 3}), 0, 0);
  NORMA_CHECK_CLOSE(minimum(a, b), tensor({1, 5, 1}), 0, 0);
  NORMA_CHECK_CLOSE(eq(a, b), tensor({0, 1, 0}), 0, 0);
  NORMA_CHECK_CLOSE(ne(a, b), tensor({1, 0, 1}), 0, 0);
  NORMA_CHECK_CLOSE(lt(a, b), tensor({1, 0, 0}), 0, 0);
  NORMA_CHECK_CLOSE(le(a, b), tensor({1, 1, 0}), 0, 0);
  NORMA_CHECK_CLOSE(gt(a, b), tensor({0, 0, 1}), 0, 0);
  NORMA_CHECK_CLOSE(ge(a, b), tensor({0, 1, 1}), 0, 0);
  // where broadcasts all three: a (3,) condition against a 0-d fallback.
  NORMA_CHECK_CLOSE(where(gt(a, b), a, scalar_tensor(-1)), tensor({-1, -1, 3}), 0, 0);
}

// ---------------------------------------------------------------- reductions

TEST_CASE("tensor: sum and mean over all, some and negative dims, with keepdim") {
  Tensor x = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(x.sum().dim() == 0);
  CHECK(x.sum().item() == 21);
  NORMA_CHECK_CLOSE(x.sum({0}), tensor({5, 7, 9}), 0, 0);
  Tensor k = x.sum({1}, /*keepdim=*/true);
  CHECK(k.shape() == Shape{2, 1});
  NORMA_CHECK_CLOSE(k, tensor({6, 15}), 0, 0);
  NORMA_CHECK_CLOSE(x.sum({-1}), tensor({6, 15}), 0, 0);
  CHECK(x.sum({0, 1}, true).shape() == Shape{1, 1});
  CHECK(x.mean().item() == Approx(3.5));
  NORMA_CHECK_CLOSE(x.mean({0}), tensor({2.5f, 3.5f, 4.5f}), 0, 0);
  NORMA_CHECK_CLOSE(x.mean({1}, true), tensor({2, 5}), 0, 0);
  // A transposed input reduces in logical order: x.t() summed over dim 1 = x's column sums.
  NORMA_CHECK_CLOSE(x.t().sum({1}), tensor({5, 7, 9}), 0, 0);

  // x3[i][j][k] = 12i + 4j + k; sum over i and k = 2*4*4j + 4*(0+12) + 2*(0+1+2+3) = 32j + 60.
  Tensor x3 = arange(24).reshape({2, 3, 4});
  NORMA_CHECK_CLOSE(x3.sum({0, 2}), tensor({60, 92, 124}), 0, 0);
  CHECK(x3.sum({2, 0}, true).shape() == Shape{1, 3, 1});
  NORMA_CHECK_CLOSE(x3.mean({0, 2}), tensor({7.5f, 11.5f, 15.5f}), 1e-6, 0);
}

TEST_CASE("tensor: var is unbiased by default and biased on request") {
  Tensor x = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  // mean 3.5; squared deviations 6.25+2.25+0.25 (twice) = 17.5; /5 = 3.5, /6 = 2.9166667.
  CHECK(x.var().item() == Approx(3.5));
  CHECK(x.var({}, /*unbiased=*/false).item() == Approx(17.5 / 6));
  // Rows [1,2,3] and [4,5,6]: deviations 1,0,1 -> 2/2 = 1 unbiased, 2/3 biased.
  NORMA_CHECK_CLOSE(x.var({1}), tensor({1, 1}), 1e-6, 0);
  Tensor vb = x.var({1}, false, /*keepdim=*/true);
  CHECK(vb.shape() == Shape{2, 1});
  NORMA_CHECK_CLOSE(vb, tensor({2.0f / 3, 2.0f / 3}), 1e-6, 0);
  // Columns: (1,4) -> deviations 1.5, 1.5 -> 4.5 unbiased, 2.25 biased.
  NORMA_CHECK_CLOSE(x.var({0}), tensor({4.5f, 4.5f, 4.5f}), 1e-6, 0);
  NORMA_CHECK_CLOSE(x.var({0}, false), tensor({2.25f, 2.25f, 2.25f}), 1e-6, 0);
  // Two passes in double keep a large mean from swamping a small spread.
  Tensor big = tensor({10000.0f, 10001.0f, 10002.0f});
  CHECK(big.var().item() == Approx(1.0).epsilon(1e-6));
}

TEST_CASE("tensor: max and argmax pick the first maximum") {
  Tensor x = from_vector({3, 9, 1, 7, 2, 8}, {2, 3});
  CHECK(x.max().item() == 9);
  NORMA_CHECK_CLOSE(x.max({0}), tensor({7, 9, 8}), 0, 0);
  Tensor mk = x.max({1}, true);
  CHECK(mk.shape() == Shape{2, 1});
  NORMA_CHECK_CLOSE(mk, tensor({9, 8}), 0, 0);
  CHECK(x.argmax().item() == 1);
  NORMA_CHECK_CLOSE(x.argmax(1), tensor({1, 2}), 0, 0);
  NORMA_CHECK_CLOSE(x.argmax(0), tensor({1, 0, 1}), 0, 0);
  CHECK(x.argmax(-1, true).shape() == Shape{2, 1});
  CHECK(tensor({2, 5, 5, 1}).argmax().item() == 1);  // ties: the first one
  // On a transposed view the indices are in the view's logical order.
  NORMA_CHECK_CLOSE(x.t().argmax(0), tensor({1, 2}), 0, 0);
  // A 3-D max over two dims: x3[i][j][k] = 12i + 4j + k is largest at i=1, k=3.
  Tensor x3 = arange(24).reshape({2, 3, 4});
  NORMA_CHECK_CLOSE(x3.max({0, 2}), tensor({15, 19, 23}), 0, 0);
  CHECK(x3.argmax().item() == 23);
}

// ---------------------------------------------------------------- matmul

TEST_CASE("tensor: matmul of 2-D tensors matches a hand-computed product") {
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor b = from_vector({7, 8, 9, 10, 11, 12}, {2, 3});
  // Row i of a times the columns of b: [1*7+2*10, 1*8+2*11, 1*9+2*12] = [27, 30, 33], ...
  Tensor c = matmul(a, b);
  CHECK(c.shape() == Shape{3, 3});
  NORMA_CHECK_CLOSE(c, tensor({27, 30, 33, 61, 68, 75, 95, 106, 117}), 0, 0);
  // b^T a^T = (a b)^T, with both operands transposed views.
  NORMA_CHECK_CLOSE(matmul(b.t(), a.t()), c.t(), 0, 0);
  // (2, 3) @ (3, 2): [[1*1+2*3+3*5, 1*2+2*4+3*6], [4*1+5*3+6*5, 4*2+5*4+6*6]]
  NORMA_CHECK_CLOSE(a.t().matmul(a), tensor({35, 44, 44, 56}), 0, 0);
  // Inner dim 0 gives zeros.
  NORMA_CHECK_CLOSE(matmul(zeros({2, 0}), zeros({0, 3})), zeros({2, 3}), 0, 0);
}

TEST_CASE("tensor: matmul takes any stride layout: transposed, narrowed and strided views") {
  manual_seed(1);
  Tensor a = randn({5, 7}), b = randn({7, 4});
  Tensor at_ = randn({7, 5}), bt = randn({4, 7});
  Tensor wide = randn({5, 10}), strided = randn({7, 8});
  const std::pair<Tensor, Tensor> cases[] = {
      {a, b},                                   // NoTrans, NoTrans
      {at_.t(), b},                             // Trans A
      {a, bt.t()},                              // Trans B
      {at_.t(), bt.t()},                        // both
      {wide.narrow(1, 2, 7), b},                // leading dimension 10 > 7 columns
      {a, strided.narrow(1, 3, 4)},             // B at an offset, leading dimension 8
      {randn({7, 9}).narrow(1, 0, 5).t(), b},   // Trans A with leading dimension 9
  };
  for (size_t i = 0; i < std::size(cases); ++i) {
    CAPTURE(i);
    const auto& [x, y] = cases[i];
    NORMA_CHECK_CLOSE(matmul(x, y), matmul_ref(x, y), 1e-5, 1e-5);
  }
  // Column stride 2 (neither layout sgemm reads): the copy path.
  Tensor every_other = randn({5, 14}).view({5, 7, 2}).select(2, 0);
  CHECK(every_other.strides() == Shape{14, 2});
  NORMA_CHECK_CLOSE(matmul(every_other, b), matmul_ref(every_other, b), 1e-5, 1e-5);
  // A row and a column vector as matrices.
  Tensor row = randn({1, 7}), col = randn({7, 1});
  NORMA_CHECK_CLOSE(matmul(row, col), matmul_ref(row, col), 1e-5, 1e-5);
  NORMA_CHECK_CLOSE(matmul(col, row), matmul_ref(col, row), 1e-5, 1e-5);
  NORMA_CHECK_CLOSE(matmul(col.t(), b), matmul_ref(col.t(), b), 1e-5, 1e-5);  // (1, 7) stored as a column
}

TEST_CASE("tensor: batched matmul, including a 2-D side shared by the batch") {
  // Hand-computed batch: [[1,2]] @ [[1],[1]] = 3 and [[3,4]] @ [[2],[0.5]] = 8.
  Tensor a = from_vector({1, 2, 3, 4}, {2, 1, 2});
  Tensor b = from_vector({1, 1, 2, 0.5f}, {2, 2, 1});
  Tensor c = matmul(a, b);
  CHECK(c.shape() == Shape{2, 1, 1});
  NORMA_CHECK_CLOSE(c, tensor({3, 8}), 0, 0);
  // A shared 2-D right side: both batches times [[1], [-1]] -> [-1, -1].
  NORMA_CHECK_CLOSE(matmul(a, from_vector({1, -1}, {2, 1})), tensor({-1, -1}), 0, 0);

  manual_seed(2);
  Tensor x = randn({3, 4, 5}), y = randn({3, 5, 6}), w = randn({5, 6}), v = randn({4, 5});
  NORMA_CHECK_CLOSE(matmul(x, y), matmul_ref(x, y), 1e-5, 1e-5);
  Tensor xw = matmul(x, w);
  CHECK(xw.shape() == Shape{3, 4, 6});
  NORMA_CHECK_CLOSE(xw, matmul_ref(x, w), 1e-5, 1e-5);
  Tensor vy = matmul(v, y);
  CHECK(vy.shape() == Shape{3, 4, 6});
  NORMA_CHECK_CLOSE(vy, matmul_ref(v, y), 1e-5, 1e-5);
  // Transposed last dims, a batch dim that is not outermost in memory, an expanded batch.
  Tensor yt = randn({3, 6, 5}).transpose(1, 2);
  NORMA_CHECK_CLOSE(matmul(x, yt), matmul_ref(x, yt), 1e-5, 1e-5);
  Tensor xp = randn({4, 3, 5}).permute({1, 0, 2});
  NORMA_CHECK_CLOSE(matmul(xp, y), matmul_ref(xp, y), 1e-5, 1e-5);
  Tensor we = w.unsqueeze(0).expand({3, 5, 6});
  NORMA_CHECK_CLOSE(matmul(x, we), matmul_ref(x, w), 1e-5, 1e-5);
}

// ---------------------------------------------------------------- in place

TEST_CASE("tensor: in-place ops write through, broadcast and bump the version") {
  Tensor x = tensor({1, 2, 3});
  uint64_t v = x.storage()->version;
  x.add_(tensor({10, 20, 30}));
  NORMA_CHECK_CLOSE(x, tensor({11, 22, 33}), 0, 0);
  x.add_(tensor({1, 1, 1}), /*alpha=*/-2.0f);
  NORMA_CHECK_CLOSE(x, tensor({9, 20, 31}), 0, 0);
  x.sub_(scalar_tensor(1));
  NORMA_CHECK_CLOSE(x, tensor({8, 19, 30}), 0, 0);
  x.mul_(tensor({0.5f, 2, 1}));
  NORMA_CHECK_CLOSE(x, tensor({4, 38, 30}), 0, 0);
  x.mul_(0.5f);
  NORMA_CHECK_CLOSE(x, tensor({2, 19, 15}), 0, 0);
  x.div_(2.0f);
  NORMA_CHECK_CLOSE(x, tensor({1, 9.5f, 7.5f}), 0, 0);
  x.add_(1.0f);
  NORMA_CHECK_CLOSE(x, tensor({2, 10.5f, 8.5f}), 0, 0);
  CHECK(x.storage()->version == v + 7);
  x.zero_();
  NORMA_CHECK_CLOSE(x, tensor({0, 0, 0}), 0, 0);
  x.fill_(-1);
  NORMA_CHECK_CLOSE(x, tensor({-1, -1, -1}), 0, 0);
  CHECK(x.storage()->version == v + 9);

  // Broadcasting source; writing into a transposed view.
  Tensor m = zeros({2, 3});
  m.copy_(tensor({1, 2, 3}));
  NORMA_CHECK_CLOSE(m, tensor({1, 2, 3, 1, 2, 3}), 0, 0);
  m.t().add_(from_vector({10, 20}, {1, 2}));  // m.t() is (3, 2): column j of it is row j of m
  NORMA_CHECK_CLOSE(m, tensor({11, 12, 13, 21, 22, 23}), 0, 0);
  m.narrow(1, 1, 1).mul_(0.0f);
  NORMA_CHECK_CLOSE(m, tensor({11, 0, 13, 21, 0, 23}), 0, 0);

  // An overlapping source is read before it is overwritten: shifting right by
  // one, and transposing in place (a strided read of the memory being written).
  Tensor s = tensor({1, 2, 3, 4});
  s.narrow(0, 1, 3).copy_(s.narrow(0, 0, 3));
  NORMA_CHECK_CLOSE(s, tensor({1, 1, 2, 3}), 0, 0);
  Tensor sq = from_vector({1, 2, 3, 4}, {2, 2});
  sq.copy_(sq.t());
  NORMA_CHECK_CLOSE(sq, tensor({1, 3, 2, 4}), 0, 0);
}

// ---------------------------------------------------------------- random

TEST_CASE("tensor: manual_seed makes every random draw reproducible") {
  manual_seed(42);
  Tensor a = randn({100}), b = rand({50}), c = uniform({10}, -3, 3), d = normal({10}, 5, 0.1f);
  manual_seed(42);
  CHECK(randn({100}).to_vector() == a.to_vector());
  CHECK(rand({50}).to_vector() == b.to_vector());
  CHECK(uniform({10}, -3, 3).to_vector() == c.to_vector());
  CHECK(normal({10}, 5, 0.1f).to_vector() == d.to_vector());
  manual_seed(43);
  CHECK(randn({100}).to_vector() != a.to_vector());

  // Saving and restoring the generator state resumes the same stream.
  manual_seed(7);
  rand({13});
  GeneratorState st = get_rng_state();
  CHECK(st.seed == 7);
  CHECK(st.draws == 13);
  std::vector<float> next = randn({20}).to_vector();
  rand({5});
  set_rng_state(st);
  CHECK(randn({20}).to_vector() == next);
}

TEST_CASE("tensor: random distributions have the requested range and moments") {
  manual_seed(3);
  std::vector<float> u = uniform({20000}, -2, 6).to_vector();
  double lo = 1e9, hi = -1e9, su = 0;
  for (float v : u) {
    lo = std::min<double>(lo, v);
    hi = std::max<double>(hi, v);
    su += v;
  }
  CHECK(lo >= -2);
  CHECK(hi < 6);
  CHECK(su / u.size() == Approx(2.0).margin(0.1));  // mean 2, std 8/sqrt(12) / sqrt(20000) = 0.016
  Tensor n = normal({20000}, 1.5f, 2.0f);
  CHECK(n.mean().item() == Approx(1.5).margin(0.06));  // std of the mean 2/sqrt(20000) = 0.014
  CHECK(std::sqrt(n.var().item()) == Approx(2.0).margin(0.06));
  std::vector<float> r = rand({1000}).to_vector();
  CHECK(*std::min_element(r.begin(), r.end()) >= 0.0f);
  CHECK(*std::max_element(r.begin(), r.end()) < 1.0f);
}

// ---------------------------------------------------------------- printing

TEST_CASE("tensor: fmt formats shapes and tensors") {
  CHECK(fmt::format("{}", Shape{8, 3, 32, 32}) == "(8, 3, 32, 32)");
  CHECK(fmt::format("{}", Shape{5}) == "(5,)");
  CHECK(fmt::format("{}", Shape{}) == "()");
  CHECK(shape_str({2, 3}) == "(2, 3)");

  CHECK(fmt::format("{}", from_vector({1, 2, 3, 4}, {2, 2})) == "tensor([[1, 2], [3, 4]], shape=(2, 2))");
  CHECK(fmt::format("{}", scalar_tensor(2.5f)) == "tensor(2.5, shape=())");
  CHECK(fmt::format("{}", tensor({0.5f, -1.25f})) == "tensor([0.5, -1.25], shape=(2,))");
  CHECK(fmt::format("{}", from_vector({1, 2, 3, 4}, {2, 2}).t()) == "tensor([[1, 3], [2, 4]], shape=(2, 2))");
  CHECK(fmt::format("{}", zeros({0})) == "tensor([], shape=(0,))");
  CHECK(fmt::format("{}", Tensor()) == "tensor(undefined)");
  Tensor w = tensor({1, 2}).requires_grad_();
  CHECK(fmt::format("{}", w) == "tensor([1, 2], shape=(2,), requires_grad)");
  CHECK(fmt::format("{}", w * 2.0f) == "tensor([2, 4], shape=(2,), grad_fn=mul)");
  CHECK(to_string(arange(3)) == "tensor([0, 1, 2], shape=(3,))");
}

TEST_CASE("tensor: large tensors are elided in the middle of each dim") {
  CHECK(fmt::format("{}", arange(2000)) == "tensor([0, 1, 2, ..., 1997, 1998, 1999], shape=(2000,))");
  // 1000 elements is not large: printed in full.
  std::string full_print = fmt::format("{}", arange(1000));
  CHECK(full_print.find("...") == std::string::npos);
  CHECK(full_print.find(", 500, ") != std::string::npos);
  // 2-D: rows and columns both elided.
  std::string s = fmt::format("{}", arange(1600).reshape({40, 40}));
  CHECK(s.rfind("tensor([[0, 1, 2, ..., 37, 38, 39], [40, 41, 42, ..., 77, 78, 79], [80, 81, 82, ..., 117, 118, 119], ..., "
                "[1480, 1481, 1482, ..., 1517, 1518, 1519], ",
                0) == 0);
  CHECK(s.size() > 200);
  CHECK(s.size() < 400);
  CHECK(s.find("[1560, 1561, 1562, ..., 1597, 1598, 1599]], shape=(40, 40))") != std::string::npos);
  // A small dim is never elided, even in a large tensor.
  std::string t = fmt::format("{}", zeros({2000, 2}));
  CHECK(t.find("[[0, 0], [0, 0], [0, 0], ..., [0, 0], [0, 0], [0, 0]]") == 7);
}

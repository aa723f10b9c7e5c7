// Every error message the core promises (each fail() in core/), provoked once:
// the message must name the op and every shape or value involved.
#include "test_util.h"

#include <cmath>

using namespace norma;

using Catch::Contains;

TEST_CASE("errors: are norma::Error, a std::runtime_error") {
  CHECK_THROWS_AS(matmul(zeros({8, 3}), zeros({4, 5})), norma::Error);
  CHECK_THROWS_AS(zeros({2}).view({3}), std::runtime_error);
  CHECK_THROWS_AS(Tensor().shape(), norma::Error);
}

TEST_CASE("errors: shapes, dims and broadcasting") {
  Tensor x = zeros({2, 3});
  CHECK_THROWS_WITH(x.sum({2}), Contains("sum: dim 2 is out of range for a tensor of rank 2 (expected -2 to 1)"));
  CHECK_THROWS_WITH(x.size(-3), Contains("size: dim -3 is out of range for a tensor of rank 2 (expected -2 to 1)"));
  CHECK_THROWS_WITH(x.transpose(0, 2), Contains("transpose: dim 2 is out of range for a tensor of rank 2"));
  CHECK_THROWS_WITH(x + zeros({4}), Contains("add: shapes (2, 3) and (4,) cannot be broadcast together (dim 1: 3 vs 4)"));
  CHECK_THROWS_WITH(zeros({5, 2, 3}) * zeros({4, 1, 1}),
                    Contains("mul: shapes (5, 2, 3) and (4, 1, 1) cannot be broadcast together (dim 0: 5 vs 4)"));
  CHECK_THROWS_WITH(where(zeros({2}), zeros({3}), zeros({3})),
                    Contains("where: shapes (2,) and (3,) cannot be broadcast together (dim 0: 2 vs 3)"));
  CHECK_THROWS_WITH(scalar_tensor(1).size(0), Contains("size: a 0-d tensor has no dim 0"));
  CHECK_THROWS_WITH(scalar_tensor(1).stride(0), Contains("stride: a 0-d tensor has no dim 0"));
  CHECK_THROWS_WITH(x.item(), Contains("item: tensor of shape (2, 3) has 6 elements, expected exactly 1"));
  CHECK_THROWS_WITH(x.at({1}), Contains("at: 1 indices given for a tensor of shape (2, 3)"));
  CHECK_THROWS_WITH(x.at({1, 3}), Contains("at: index 3 is out of range for dim 1 of shape (2, 3)"));
}

TEST_CASE("errors: undefined tensors") {
  Tensor u;
  CHECK_THROWS_WITH(u.shape(), Contains("shape: called on an undefined tensor"));
  CHECK_THROWS_WITH(u.numel(), Contains("numel: called on an undefined tensor"));
  CHECK_THROWS_WITH(u.view({1}), Contains("view: called on an undefined tensor"));
  CHECK_THROWS_WITH(u.backward(), Contains("backward: called on an undefined tensor"));
  CHECK_THROWS_WITH(add(u, ones({2})), Contains("add: argument 'a' is an undefined tensor"));
  CHECK_THROWS_WITH(matmul(ones({2, 2}), u), Contains("matmul: argument 'b' is an undefined tensor"));
  CHECK_THROWS_WITH(exp(u), Contains("exp: argument 'x' is an undefined tensor"));
  CHECK_THROWS_WITH(sum(u), Contains("sum: argument 'x' is an undefined tensor"));
  CHECK_THROWS_WITH(argmax(u), Contains("argmax: argument 'x' is an undefined tensor"));
  CHECK_THROWS_WITH(argmax(u, 0), Contains("argmax: argument 'x' is an undefined tensor"));
  CHECK_THROWS_WITH(max(u), Contains("max: argument 'x' is an undefined tensor"));
  CHECK_THROWS_WITH(where(u, ones({1}), ones({1})), Contains("where: argument 'cond' is an undefined tensor"));
  CHECK_THROWS_WITH(u.add_(1.0f), Contains("add_: called on an undefined tensor"));
  CHECK_THROWS_WITH(u.fill_(1.0f), Contains("fill_: called on an undefined tensor"));
  CHECK_THROWS_WITH(ones({2}).copy_(u), Contains("copy_: source is an undefined tensor"));
}

TEST_CASE("errors: creation and the random generator") {
  CHECK_THROWS_WITH(zeros({2, -1}), Contains("empty: negative size in shape (2, -1)"));
  CHECK_THROWS_WITH(arange(0, 1, 0), Contains("arange: start 0, end 1 and step 0 must be finite with a non-zero step"));
  CHECK_THROWS_WITH(arange(0, INFINITY), Contains("arange: start 0, end inf and step 1"));
  CHECK_THROWS_WITH(from_vector({1, 2, 3}, {2, 2}), Contains("from_vector: 3 values cannot fill shape (2, 2) (4 elements)"));
  CHECK_THROWS_WITH(uniform({2}, 1, 0), Contains("uniform: need finite low <= high, got low 1 and high 0"));
  CHECK_THROWS_WITH(normal({2}, 0, -1), Contains("normal: need a finite mean and std >= 0, got mean 0 and std -1"));
  CHECK_THROWS_WITH(set_num_threads(0), Contains("set_num_threads: need at least 1 thread, got 0"));
  // 2^60 floats: no system has 4 EiB to give.
  CHECK_THROWS_WITH(empty({int64_t(1) << 60}), Contains("allocator: out of memory allocating 4611686018427387904 bytes"));
  // Element counts that overflow are refused before anything is allocated.
  CHECK_THROWS_WITH(zeros({int64_t(1) << 32, int64_t(1) << 32}),
                    Contains("empty: shape (4294967296, 4294967296) has more than 2^60 elements"));
  CHECK_THROWS_WITH(empty({2, int64_t(1) << 60}), Contains("empty: shape (2, 1152921504606846976) has more than 2^60 elements"));
  CHECK(zeros({int64_t(1) << 40, int64_t(1) << 20, 0}).numel() == 0);  // an empty shape is not too large
  CHECK_THROWS_WITH(empty({0, int64_t(1) << 32, int64_t(1) << 32}),
                    Contains("shape (0, 4294967296, 4294967296) is too large: its row-major strides overflow int64"));
  CHECK_THROWS_WITH(Shape({int64_t(1) << 62, 4}).numel("reshape"),
                    Contains("reshape: shape (4611686018427387904, 4) has more than 2^63 - 1 elements"));
  CHECK_THROWS_WITH(arange(0, 1e30f), Contains("arange: start 0, end 1e+30 and step 1 give 1.0000000150474662e+30 elements, "
                                                "more than the 2^60 a tensor can hold"));
}

TEST_CASE("errors: views") {
  Tensor x = zeros({2, 3});
  CHECK_THROWS_WITH(x.view({-1, -1}), Contains("view: only one dim can be -1 in (-1, -1)"));
  CHECK_THROWS_WITH(x.reshape({2, -2}), Contains("reshape: invalid size -2 in (2, -2)"));
  CHECK_THROWS_WITH(x.view({4, -1}), Contains("view: shape (4, -1) is invalid for input of shape (2, 3) (6 elements)"));
  CHECK_THROWS_WITH(x.reshape({4, 2}), Contains("reshape: shape (4, 2) is invalid for input of shape (2, 3) (6 elements)"));
  CHECK_THROWS_WITH(x.t().view({6}),
                    Contains("view: cannot view a tensor of shape (3, 2) and strides (1, 3) as (6,); use reshape() (which copies)"));
  CHECK_THROWS_WITH(x.permute({0}), Contains("permute: 1 dims given for a tensor of shape (2, 3)"));
  CHECK_THROWS_WITH(x.permute({1, -1}), Contains("permute: dim 1 repeated in the permutation of shape (2, 3)"));
  CHECK_THROWS_WITH(zeros({2, 3, 4}).t(), Contains("t: expects a 2-D tensor, got shape (2, 3, 4)"));
  CHECK_THROWS_WITH(scalar_tensor(0).narrow(0, 0, 1), Contains("narrow: cannot narrow a 0-d tensor"));
  CHECK_THROWS_WITH(x.narrow(1, 2, 2), Contains("narrow: start 2 and length 2 are out of range for dim 1 of size 3 (shape (2, 3))"));
  CHECK_THROWS_WITH(x.narrow(0, -1, 1), Contains("narrow: start -1 and length 1 are out of range for dim 0 of size 2 (shape (2, 3))"));
  CHECK_THROWS_WITH(scalar_tensor(0).select(0, 0), Contains("select: cannot select from a 0-d tensor"));
  CHECK_THROWS_WITH(x.select(1, 3), Contains("select: index 3 is out of range for dim 1 of size 3 (shape (2, 3))"));
  CHECK_THROWS_WITH(x.select(0, -3), Contains("select: index -3 is out of range for dim 0 of size 2 (shape (2, 3))"));
  CHECK_THROWS_WITH(x.expand({3}), Contains("expand: target shape (3,) has fewer dims than the tensor's shape (2, 3)"));
  CHECK_THROWS_WITH(x.expand({-1, 2, 3}), Contains("expand: size -1 is not allowed for the new leading dim 0 of (-1, 2, 3)"));
  CHECK_THROWS_WITH(x.expand({4, 3}), Contains("expand: the size 2 at dim 0 of shape (2, 3) cannot be expanded to 4 (target (4, 3))"));
  CHECK_THROWS_WITH(x.broadcast_to({-1, 3}), Contains("broadcast_to: invalid size -1 in target shape (-1, 3)"));
  CHECK_THROWS_WITH(zeros({2, 3, 4}).flatten(2, 1), Contains("flatten: start_dim 2 comes after end_dim 1 (shape (2, 3, 4))"));
}

TEST_CASE("errors: elementwise ops, reductions and matmul") {
  Tensor x = zeros({2, 3});
  CHECK_THROWS_WITH(x.pow(INFINITY), Contains("pow: exponent must be finite, got inf"));
  CHECK_THROWS_WITH(x.sum({1, -1}), Contains("sum: dim -1 appears twice in the reduction dims of shape (2, 3)"));
  CHECK_THROWS_WITH(x.var({0, 0}), Contains("var: dim 0 appears twice in the reduction dims of shape (2, 3)"));
  CHECK_THROWS_WITH(x.mean({5}), Contains("mean: dim 5 is out of range for a tensor of rank 2"));
  CHECK_THROWS_WITH(zeros({0, 3}).max({0}), Contains("max: cannot reduce over an empty dim of shape (0, 3)"));
  CHECK_THROWS_WITH(zeros({0}).argmax(), Contains("argmax: cannot reduce over an empty dim of shape (0,)"));
  CHECK_THROWS_WITH(zeros({3, 0}).argmax(1), Contains("argmax: cannot reduce over an empty dim of shape (3, 0)"));

  CHECK_THROWS_WITH(matmul(zeros({8, 3}), zeros({4, 5})),
                    Contains("matmul: cannot multiply (8, 3) by (4, 5): inner dimensions 3 and 4 differ"));
  CHECK_THROWS_WITH(matmul(zeros({2, 8, 3}), zeros({4, 5})),
                    Contains("matmul: cannot multiply (2, 8, 3) by (4, 5): inner dimensions 3 and 4 differ"));
  CHECK_THROWS_WITH(matmul(zeros({3}), zeros({3, 2})), Contains("matmul: expects 2-D or 3-D tensors, got (3,) and (3, 2)"));
  CHECK_THROWS_WITH(matmul(zeros({2, 2}), zeros({1, 1, 2, 2})),
                    Contains("matmul: expects 2-D or 3-D tensors, got (2, 2) and (1, 1, 2, 2)"));
  CHECK_THROWS_WITH(matmul(zeros({2, 3, 4}), zeros({3, 4, 5})), Contains("matmul: batch sizes of (2, 3, 4) and (3, 4, 5) differ"));
}

TEST_CASE("errors: in-place ops") {
  Tensor w = zeros({2, 3}).requires_grad_();
  CHECK_THROWS_WITH(w.fill_(1), Contains("fill_: in-place operation on a tensor of shape (2, 3) that requires grad; "
                                         "wrap it in NoGradGuard (as optimizers do) or use the out-of-place op"));
  CHECK_THROWS_WITH(w.mul_(2.0f), Contains("mul_: in-place operation on a tensor of shape (2, 3) that requires grad"));
  CHECK_THROWS_WITH(w.sub_(ones({3})), Contains("sub_: in-place operation on a tensor of shape (2, 3) that requires grad"));
  CHECK_THROWS_WITH(w.div_(2.0f), Contains("div_: in-place operation on a tensor of shape (2, 3) that requires grad"));

  Tensor x = zeros({3});
  CHECK_THROWS_WITH(x.copy_(zeros({2, 3})), Contains("copy_: source of shape (2, 3) cannot be broadcast to destination shape (3,)"));
  CHECK_THROWS_WITH(x.copy_(zeros({4})), Contains("copy_: shapes (4,) and (3,) cannot be broadcast together (dim 0: 4 vs 3)"));
  CHECK_THROWS_WITH(x.add_(zeros({2, 3})), Contains("add_: other of shape (2, 3) cannot be broadcast to shape (3,)"));
  CHECK_THROWS_WITH(x.add_(zeros({4})), Contains("add_: other of shape (4,) cannot be broadcast to shape (3,)"));
  CHECK_THROWS_WITH(x.sub_(zeros({2, 3})), Contains("sub_: other of shape (2, 3) cannot be broadcast to shape (3,)"));
  CHECK_THROWS_WITH(x.sub_(zeros({4})), Contains("sub_: other of shape (4,) cannot be broadcast to shape (3,)"));
  CHECK_THROWS_WITH(x.mul_(zeros({2, 3})), Contains("mul_: other of shape (2, 3) cannot be broadcast to shape (3,)"));
  CHECK_THROWS_WITH(x.mul_(zeros({4})), Contains("mul_: other of shape (4,) cannot be broadcast to shape (3,)"));
  CHECK_THROWS_WITH(x.add_(Tensor()), Contains("add_: other is an undefined tensor"));
  CHECK_THROWS_WITH(x.sub_(Tensor()), Contains("sub_: other is an undefined tensor"));
  CHECK_THROWS_WITH(x.mul_(Tensor()), Contains("mul_: other is an undefined tensor"));
  NORMA_CHECK_CLOSE(x, zeros({3}), 0, 0);  // failed in-place ops write nothing
  CHECK(x.storage()->version == 0);
}

TEST_CASE("errors: autograd") {
  Tensor w = tensor({1, 2}).requires_grad_();
  Tensor c = tensor({3, 4});
  CHECK_THROWS_WITH((c * 2.0f).sum().backward(), Contains("backward: tensor of shape () does not require grad and has no grad_fn"));
  CHECK_THROWS_WITH((w * c).backward(), Contains("backward: grad can be implicitly created only for one-element outputs, got shape (2,); "
                                                 "pass a gradient of that shape"));
  CHECK_THROWS_WITH((w * c).backward(ones({3})), Contains("backward: gradient of shape (3,) does not match the output's shape (2,)"));
  Tensor y = (w * w).sum();
  y.backward();
  CHECK_THROWS_WITH(y.backward(), Contains("backward: trying to backward through the graph a second time (node 'sum' was freed by "
                                           "the first backward); call backward with retain_graph=true the first time"));
  Tensor z = (w * c).sum();
  c.mul_(2.0f);
  CHECK_THROWS_WITH(z.backward(), Contains("backward: a tensor of shape (2,) saved by 'mul' for its backward was modified in place "
                                           "(version 1, saved at version 0); clone it before modifying it"));

  CHECK_THROWS_WITH((w * 2.0f).requires_grad_(false),
                    Contains("requires_grad_: cannot turn off requires_grad of a non-leaf tensor of shape (2,); use detach()"));
  CHECK_THROWS_WITH(w.set_grad(zeros({3})), Contains("set_grad: gradient of shape (3,) does not match tensor of shape (2,)"));
  CHECK_THROWS_WITH(c.retain_grad(), Contains("retain_grad: tensor of shape (2,) does not require grad"));

  // A custom op whose backward hands accumulate a gradient of the wrong shape.
  Tensor out = zeros({2});
  autograd::record(out, "bad_shape", {w}, [w](const Tensor&) { autograd::accumulate(w, zeros({3})); });
  CHECK_THROWS_WITH(out.sum().backward(),
                    Contains("autograd::accumulate: gradient of shape (3,) does not match input of shape (2,)"));
}

TEST_CASE("errors: gradcheck") {
  auto id = [](const std::vector<Tensor>& in) { return in[0] * 1.0f; };
  Tensor x = tensor({1, 2}).requires_grad_();
  GradcheckOptions bad;
  bad.eps = 0;
  CHECK_THROWS_WITH(gradcheck(id, {x}, bad), Contains("gradcheck: need eps > 0, atol >= 0 and rtol >= 0, got eps 0, atol 0.001, rtol 0.01"));
  bad.eps = 1e-2;
  bad.rtol = -1;
  CHECK_THROWS_WITH(gradcheck(id, {x}, bad), Contains("rtol -1"));
  CHECK_THROWS_WITH(gradcheck(id, {x, Tensor()}), Contains("gradcheck: input 1 is an undefined tensor"));
  CHECK_THROWS_WITH(gradcheck(id, {tensor({1, 2})}),
                    Contains("gradcheck: the function's output does not require grad (did it use the inputs?)"));
}

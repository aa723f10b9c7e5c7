// Data-parallel training over a ProcessGroup: every rank holds the whole model,
// trains on its own shard of each batch, and the ranks agree on the update.
//
//   auto pg = dist::mpi_world();
//   auto model = nn::cifar_small([&](int64_t c) {
//     return std::make_shared<nn::BatchNorm2d>(nn::BatchNorm2dOptions(c).process_group(pg)); });
//   dist::broadcast_state(*model, *pg);          // identical start on every rank
//   for (...) {                                  // x, y: this rank's shard
//     opt.zero_grad();
//     Tensor loss = nn::cross_entropy((*model)(x), y);
//     loss.backward();
//     dist::allreduce_gradients(*model, *pg);    // every rank now holds the mean gradient
//     opt.step();                                // same update everywhere
//     double global_loss = dist::allreduce_mean(loss.item(), *pg);
//   }
//
// With equal shards and a mean loss, the averaged gradient is the gradient of
// the mean loss over the concatenated batch (BatchNorm2d with a process group
// makes the statistics global too; see docs/distributed.md).
#pragma once
#include <concepts>
#include <vector>

#include "../tensor.h"
#include "process_group.h"

namespace norma::dist {

// Copies root's parameters and buffers (state_dict order) to every rank, in
// one collective. Fails on every rank, before copying anything, when the
// ranks' models differ in tensor count, names or shapes.
void broadcast_state(const NamedTensors& state, ProcessGroup& pg, int root = 0);
// The same for a model's state_dict() (an nn::Module): broadcast_state(*model, *pg).
template <class Model>
  requires requires(const Model& m) { { m.state_dict() } -> std::convertible_to<NamedTensors>; }
void broadcast_state(const Model& model, ProcessGroup& pg, int root = 0) {
  broadcast_state(model.state_dict(), pg, root);
}

// Replaces each trainable parameter's gradient by its mean over the ranks.
// Gradients are flattened into one reused buffer of bucket_bytes (4 MiB by
// default) and summed bucket by bucket with allreduce_sum, then divided by
// size(). A trainable parameter without a gradient counts as zeros (every
// rank must reduce the same tensors). bucket_bytes below 4 is an error.
void allreduce_gradients(const std::vector<Tensor>& params, ProcessGroup& pg, size_t bucket_bytes = 4 << 20);
// The same for a model's parameters() (an nn::Module): allreduce_gradients(*model, *pg).
template <class Model>
  requires requires(const Model& m) { { m.parameters() } -> std::convertible_to<std::vector<Tensor>>; }
void allreduce_gradients(const Model& model, ProcessGroup& pg, size_t bucket_bytes = 4 << 20) {
  allreduce_gradients(model.parameters(), pg, bucket_bytes);
}

}  // namespace norma::dist

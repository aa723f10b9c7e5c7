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
#include "../core/process_group.h"
#include "../core/tensor.h"

namespace norma::nn {
class Module;
}

namespace norma::dist {

// Copies root's parameters and buffers (state_dict order) to every rank, in
// one collective. Fails on every rank, before copying anything, when the
// ranks' models differ in tensor count, names or shapes.
void broadcast_state(nn::Module& model, ProcessGroup& pg, int root = 0);

// Replaces each trainable parameter's gradient by its mean over the ranks.
// Gradients are flattened into one reused buffer of bucket_bytes (4 MiB by
// default) and summed bucket by bucket with allreduce_sum, then divided by
// size(). A trainable parameter without a gradient counts as zeros (every
// rank must reduce the same tensors). bucket_bytes below 4 is an error.
void allreduce_gradients(nn::Module& model, ProcessGroup& pg, size_t bucket_bytes = 4 << 20);
// The same for an explicit list (e.g. an optimizer's parameters).
void allreduce_gradients(const std::vector<Tensor>& params, ProcessGroup& pg, size_t bucket_bytes = 4 << 20);

}  // namespace norma::dist

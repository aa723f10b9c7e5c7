// This ISA level's copy of the fast kernels as one table (kernels.h).
#include "kernels.h"

#include "../batchnorm2d_op.h"
#include "batchnorm2d.h"
#include "conv2d.h"
#include "maxpool2x2.h"

namespace norma::nn::fast::NORMA_ISA {

namespace {

constexpr BatchNorm2dKernels kBatchNorm2d{
    .stats = batchnorm2d_stats,
    .forward = batchnorm2d_forward,
    .forward_train = batchnorm2d_forward_train,
    .backward = batchnorm2d_backward,
    .backward_reduce = batchnorm2d_backward_reduce,
    .backward_dx = batchnorm2d_backward_dx,
    .pool_forward = batchnorm2d_pool_forward,
    .pool_forward_train = batchnorm2d_pool_forward_train,
    .pool_backward = batchnorm2d_pool_backward};

constexpr Kernels kTable{
    .batchnorm2d = &kBatchNorm2d,
    .conv2d_im2col_forward = conv2d_im2col_forward,
    .conv2d_im2col_backward = conv2d_im2col_backward,
    .winograd_row_tile = winograd_row_tile,
    .conv2d_winograd_forward = conv2d_winograd_forward,
    .conv2d_winograd_backward = conv2d_winograd_backward,
    .conv2d_direct_forward = conv2d_direct_forward,
    .conv2d_direct_backward_weight = conv2d_direct_backward_weight,
    .maxpool2x2_applies = maxpool2x2_applies,
    .maxpool2x2_forward = maxpool2x2_forward,
    .maxpool2x2_backward = maxpool2x2_backward};

}  // namespace

const Kernels& table() { return kTable; }

}  // namespace norma::nn::fast::NORMA_ISA

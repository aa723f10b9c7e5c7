// Initialisation functions (torch.nn.init), in place and without gradient.
// fan_in of a weight (out, in, kh, kw) is in*kh*kw; fan_out is out*kh*kw.
// kaiming_uniform_(w, a): bound = gain(a) * sqrt(3 / fan), gain(a) = sqrt(2 / (1 + a^2)).
// PyTorch's default for Conv2d and Linear is kaiming_uniform_(w, a = sqrt(5)),
// i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
#pragma once
#include <string>
#include <utility>

#include "../core/tensor.h"

namespace norma::nn::init {

enum class FanMode { fan_in, fan_out };
enum class Nonlinearity { linear, relu, leaky_relu, tanh, sigmoid, selu };

// (fan_in, fan_out) of a weight of rank >= 2; an error for rank < 2.
std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& w);
// PyTorch's gains: linear, conv and sigmoid 1; tanh 5/3; relu sqrt(2);
// leaky_relu sqrt(2 / (1 + param^2)) (param is the negative slope); selu 3/4.
double calculate_gain(Nonlinearity nl, double param = 0.01);
// By PyTorch's name: "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
// "conv_transpose2d", "conv_transpose3d", "sigmoid", "tanh", "relu",
// "leaky_relu", "selu"; any other name is an error listing these.
double calculate_gain(const std::string& nonlinearity, double param = 0.01);

Tensor& uniform_(Tensor& t, double low = 0.0, double high = 1.0);
Tensor& normal_(Tensor& t, double mean = 0.0, double std = 1.0);
Tensor& constant_(Tensor& t, double value);
Tensor& zeros_(Tensor& t);
Tensor& ones_(Tensor& t);
Tensor& kaiming_uniform_(Tensor& t, double a = 0.0, FanMode mode = FanMode::fan_in,
                         Nonlinearity nl = Nonlinearity::leaky_relu);
Tensor& kaiming_normal_(Tensor& t, double a = 0.0, FanMode mode = FanMode::fan_in,
                        Nonlinearity nl = Nonlinearity::leaky_relu);
Tensor& xavier_uniform_(Tensor& t, double gain = 1.0);
Tensor& xavier_normal_(Tensor& t, double gain = 1.0);

}  // namespace norma::nn::init

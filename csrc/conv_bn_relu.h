// Fused convolution + BatchNorm (batch statistics) + ReLU: the math and checks shared by the
// CPU and CUDA kernels. The convolution itself is at::convolution / at::convolution_backward
// (oneDNN, cuDNN); the fusion is around it.
//
// Training forward, with z = conv(x), per channel over M = N*H*W elements and a shift K (the
// channel's first value when finite, else 0; see channel_shift):
//   mean = K + sum(z - K)/M, var = sum((z - K)^2)/M - (mean - K)^2 (biased; sums in double for
//   float inputs). Shifted sums keep one pass without the cancellation of E[z^2] - E[z]^2 when the
//   data sit far from 0, and a NaN or inf reaches mean and var as in native BatchNorm.
//   y = relu((z - mean) * scale + beta), scale = gamma / sqrt(var + eps)
// Inference (running statistics) is the same normalize + ReLU pass, in place on z.
// Backward, with x_hat = (z - mean) * invstd and dv = dy where the recomputed pre-ReLU value is not
// <= 0 (so NaN passes, as native's threshold_backward):
//   dbeta = sum(dv), dgamma = sum(dv * x_hat)
//   dz = gamma * invstd * (dv - dbeta / M - x_hat * dgamma / M), then the convolution's backward.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>
#include <c10/util/Optional.h>

#include <array>
#include <cstdint>
#include <tuple>

#include "common.h"

namespace cnnrepro::conv_bn_relu {

struct ConvParams {
  at::IntArrayRef stride, padding, dilation;
  int64_t groups;
};

// The convolution's output seen as [N, C, S], in the layout oneDNN/cuDNN returned it.
inline Geometry geometry_of(const at::Tensor& z) { return geometry(z, kernel_memory_format(z)); }

// A per-output-channel tensor: 1-D with one value per channel, on the input's device and dtype.
inline void check_per_channel(const at::Tensor& t, int64_t channels, const at::Tensor& like, const char* op,
                              const char* name) {
  TORCH_CHECK(t.dim() == 1, op, ": ", name, " must be 1-D with ", channels, " elements (out_channels), got shape ",
              t.sizes());
  TORCH_CHECK(t.size(0) == channels, op, ": ", name, " has ", t.size(0), " elements, expected ", channels,
              " (out_channels)");
  check_same_device_dtype(t, like, op, name, "input");
}

inline void check_per_channel(const c10::optional<at::Tensor>& t, int64_t channels, const at::Tensor& like,
                              const char* op, const char* name) {
  if (present(t)) check_per_channel(*t, channels, like, op, name);
}

inline void check_args(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                       const c10::optional<at::Tensor>& bn_weight, const c10::optional<at::Tensor>& bn_bias,
                       const ConvParams& conv, double eps, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": expected a 4-D input (N, C, H, W), got ", x.dim(), "-D input of shape ", x.sizes());
  TORCH_CHECK(weight.dim() == 4, op, ": expected a 4-D weight (out_channels, in_channels/groups, kH, kW), got shape ",
              weight.sizes());
  check_floating(x, op, "input");
  check_same_device_dtype(weight, x, op, "weight", "input");
  TORCH_CHECK(conv.groups >= 1, op, ": groups must be >= 1, got ", conv.groups);
  TORCH_CHECK(weight.size(0) % conv.groups == 0, op, ": groups (", conv.groups,
              ") must divide out_channels, the weight's first dimension (weight of shape ", weight.sizes(), ")");
  TORCH_CHECK(x.size(1) % conv.groups == 0, op, ": groups (", conv.groups, ") must divide in_channels (", x.size(1),
              ")");
  TORCH_CHECK(weight.size(1) * conv.groups == x.size(1), op, ": weight expects ", weight.size(1) * conv.groups,
              " input channels (", weight.size(1), " per group x ", conv.groups, " groups), but the input has ",
              x.size(1));
  TORCH_CHECK(eps > 0, op, ": eps must be > 0, got ", eps);
  const int64_t channels = weight.size(0);
  check_per_channel(bias, channels, x, op, "bias");
  check_per_channel(bn_weight, channels, x, op, "bn_weight");
  check_per_channel(bn_bias, channels, x, op, "bn_bias");
}

inline at::Tensor convolution(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                              const ConvParams& conv) {
  return at::convolution(x, weight, bias, conv.stride, conv.padding, conv.dilation, /*transposed=*/false,
                         /*output_padding=*/{0, 0}, conv.groups);
}

// Training needs a batch statistic from more than one value per channel, as nn.BatchNorm2d.
inline void check_batch(const at::Tensor& z, const char* op) {
  TORCH_CHECK(z.size(0) * z.size(2) * z.size(3) > 1, op,
              ": expected more than 1 value per channel when training, got a convolution output of shape ", z.sizes());
}

// A training call's tensors, prepared the same way on every device: arguments checked, the
// convolution run, outputs allocated in the convolution output's layout.
struct ForwardCall {
  at::Tensor z, y, mean, var;
  Geometry g;
};

inline ForwardCall prepare_forward(const at::Tensor& input, const at::Tensor& weight,
                                   const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& bn_weight,
                                   const c10::optional<at::Tensor>& bn_bias, const ConvParams& conv, double eps) {
  const char* op = "cnnrepro::conv_bn_relu_train";
  check_args(input, weight, bias, bn_weight, bn_bias, conv, eps, op);
  at::Tensor z = convolution(input, weight, bias, conv).contiguous(kernel_memory_format(input));
  check_batch(z, op);
  const Geometry g = geometry_of(z);
  return {z, at::empty_like(z), at::empty({g.C}, z.options()), at::empty({g.C}, z.options()), g};
}

// An inference call: arguments and running statistics checked, the convolution run; the kernel
// normalizes z in place. Any batch size, an empty one included, as native BatchNorm in eval.
inline at::Tensor prepare_eval(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                               const c10::optional<at::Tensor>& bn_weight, const c10::optional<at::Tensor>& bn_bias,
                               const at::Tensor& running_mean, const at::Tensor& running_var, const ConvParams& conv,
                               double eps) {
  const char* op = "cnnrepro::conv_bn_relu_eval";
  check_args(input, weight, bias, bn_weight, bn_bias, conv, eps, op);
  check_per_channel(running_mean, weight.size(0), input, op, "running_mean");
  check_per_channel(running_var, weight.size(0), input, op, "running_var");
  return convolution(input, weight, bias, conv).contiguous(kernel_memory_format(input));
}

struct BackwardCall {
  at::Tensor z, dy, dz, grad_gamma, grad_beta;
  Geometry g;
};

inline BackwardCall prepare_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                                     const at::Tensor& conv_out, const at::Tensor& mean, const at::Tensor& var,
                                     const c10::optional<at::Tensor>& bn_weight,
                                     const c10::optional<at::Tensor>& bn_bias, const ConvParams& conv, double eps) {
  const char* op = "cnnrepro::conv_bn_relu_train_backward";
  check_args(input, weight, c10::nullopt, bn_weight, bn_bias, conv, eps, op);
  TORCH_CHECK(conv_out.dim() == 4 && conv_out.size(0) == input.size(0) && conv_out.size(1) == weight.size(0), op,
              ": conv_out must be the convolution's output, of shape [", input.size(0), ", ", weight.size(0),
              ", H, W], got ", conv_out.sizes());
  check_same_device_dtype(conv_out, input, op, "conv_out", "input");
  check_same_shape(grad_output, conv_out, op, "grad_output", "conv_out");
  check_same_device_dtype(grad_output, input, op, "grad_output", "input");
  check_per_channel(mean, weight.size(0), input, op, "mean");
  check_per_channel(var, weight.size(0), input, op, "var");
  at::Tensor z = conv_out.contiguous(kernel_memory_format(conv_out));
  at::Tensor dy = grad_output.contiguous(kernel_memory_format(z));
  const Geometry g = geometry_of(z);
  return {z, dy, at::empty_like(z), at::empty({g.C}, z.options()), at::empty({g.C}, z.options()), g};
}

// The convolution's part of the backward, from dz: grad_input and grad_weight from
// at::convolution_backward, each only if output_mask asks (empty otherwise). The conv bias's
// gradient (dz summed per channel) comes from the caller's own deterministic reduction: oneDNN's
// convolution_backward computes the weight gradient even when only the bias's is wanted.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_backward(
    const at::Tensor& dz, const at::Tensor& input, const at::Tensor& weight, const ConvParams& conv,
    std::array<bool, 3> output_mask, at::Tensor grad_bias, const at::Tensor& grad_gamma, const at::Tensor& grad_beta) {
  at::Tensor dx = at::empty({0}, input.options()), dw = at::empty({0}, weight.options());
  if (output_mask[0] || output_mask[1]) {
    auto grads = at::convolution_backward(dz, input, weight, c10::nullopt, conv.stride, conv.padding, conv.dilation,
                                          /*transposed=*/false, /*output_padding=*/{0, 0}, conv.groups,
                                          {output_mask[0], output_mask[1], false});
    if (output_mask[0]) dx = std::get<0>(grads);
    if (output_mask[1]) dw = std::get<1>(grads);
  }
  if (!output_mask[2]) grad_bias = at::empty({0}, dz.options());
  return {dx, dw, grad_bias, grad_gamma, grad_beta};
}

// gamma, or 1 where the BatchNorm has no affine parameters.
template <typename T>
C10_HOST_DEVICE inline T gamma_of(const T* gamma, int64_t c) {
  return gamma ? gamma[c] : T(1);
}

template <typename T>
C10_HOST_DEVICE inline T beta_of(const T* beta, int64_t c) {
  return beta ? beta[c] : T(0);
}

// ReLU as torch.relu: negative values become 0; NaN stays NaN.
template <typename T>
C10_HOST_DEVICE inline T relu(T v) {
  return v < T(0) ? T(0) : v;
}

// Whether ReLU's gradient passes at pre-ReLU value v: as native's threshold_backward, everywhere
// but v <= 0, so a NaN passes it.
template <typename T>
C10_HOST_DEVICE inline bool relu_passes(T v) {
  return !(v <= T(0));
}

// The per-channel shift of the statistics' sums: the channel's first value, or 0 when that is
// not finite (an inf shift would turn every finite value's term into NaN, where native keeps inf).
template <typename T>
C10_HOST_DEVICE inline T channel_shift(T first) {
  return (first - first == T(0)) ? first : T(0);
}

// The biased variance from shifted sums (mean of z - K and of (z - K)^2); a rounding-negative
// result is 0, and NaN stays NaN (std::max / fmax would drop it).
template <typename T>
C10_HOST_DEVICE inline T shifted_variance(T mean_shifted, T mean_sq_shifted) {
  const T v = mean_sq_shifted - mean_shifted * mean_shifted;
  return v < T(0) ? T(0) : v;
}

}  // namespace cnnrepro::conv_bn_relu

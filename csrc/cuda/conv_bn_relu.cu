// Fused conv + BatchNorm + ReLU on CUDA, around at::convolution / at::convolution_backward (cuDNN).
//
// Per-channel reductions: one block per channel, each thread summing a fixed, strided share of the
// channel's elements in double, then a fixed-shape tree in shared memory: no atomics, so the bits
// repeat. Elementwise passes are one thread per element in memory order (either layout).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../conv_bn_relu.h"

namespace cnnrepro::conv_bn_relu {
namespace {

constexpr int kReduceThreads = 512;
constexpr int kThreads = 256;

unsigned int blocks_for(int64_t numel) { return static_cast<unsigned int>((numel + kThreads - 1) / kThreads); }

// Offset of the k-th element (k over N*S in (n, s) order) of channel c.
__device__ inline int64_t element_offset(const Geometry& g, int64_t c, int64_t k) {
  const int64_t n = k / g.S, s = k % g.S;
  return g.channels_last ? (n * g.S + s) * g.C + c : (n * g.C + c) * g.S + s;
}

__device__ inline int64_t channel_of(const Geometry& g, int64_t i) {
  return g.channels_last ? i % g.C : (i / g.S) % g.C;
}

// Sums (a, b) over the block's threads in a fixed tree; the result is in a[0], b[0].
__device__ inline void block_sum(double* a, double* b) {
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    __syncthreads();
    if (threadIdx.x < stride) {
      a[threadIdx.x] += a[threadIdx.x + stride];
      b[threadIdx.x] += b[threadIdx.x + stride];
    }
  }
  __syncthreads();
}

// Per channel (one block each): the batch mean and biased variance.
template <typename scalar_t>
__global__ void statistics_kernel(const scalar_t* __restrict__ z, scalar_t* __restrict__ mean,
                                  scalar_t* __restrict__ var, Geometry g) {
  __shared__ double sum[kReduceThreads], sum_sq[kReduceThreads];
  const int64_t c = blockIdx.x, count = g.N * g.S;
  double a = 0, b = 0;
  for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
    const double v = static_cast<double>(z[element_offset(g, c, k)]);
    a += v;
    b += v * v;
  }
  sum[threadIdx.x] = a;
  sum_sq[threadIdx.x] = b;
  block_sum(sum, sum_sq);
  if (threadIdx.x == 0) {
    const double m = sum[0] / count;
    mean[c] = static_cast<scalar_t>(m);
    var[c] = static_cast<scalar_t>(fmax(0.0, sum_sq[0] / count - m * m));
  }
}

// Per channel: scale, shift and invstd of the normalization, from the stored statistics, so the
// forward and the backward (which recomputes the ReLU mask) see the very same numbers.
template <typename scalar_t>
__global__ void affine_kernel(const scalar_t* __restrict__ mean, const scalar_t* __restrict__ var,
                              const scalar_t* __restrict__ gamma, const scalar_t* __restrict__ beta,
                              float* __restrict__ affine, int64_t C, double eps) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const double invstd = 1.0 / sqrt(static_cast<double>(var[c]) + eps);
  const double scale = static_cast<double>(gamma_of(gamma, c)) * invstd;
  affine[c] = static_cast<float>(scale);
  affine[C + c] = static_cast<float>(static_cast<double>(beta_of(beta, c)) - static_cast<double>(mean[c]) * scale);
  affine[2 * C + c] = static_cast<float>(invstd);
}

template <typename scalar_t>
__global__ void normalize_relu_kernel(const scalar_t* __restrict__ z, const float* __restrict__ affine,
                                      scalar_t* __restrict__ y, int64_t numel, Geometry g) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= numel) return;
  const int64_t c = channel_of(g, i);
  y[i] = static_cast<scalar_t>(relu(static_cast<float>(z[i]) * affine[c] + affine[g.C + c]));
}

// dv = dy where the recomputed pre-ReLU value is positive.
template <typename scalar_t>
__device__ inline float grad_past_relu(const scalar_t* z, const scalar_t* dy, const float* affine, int64_t C,
                                       int64_t c, int64_t i) {
  const float v = static_cast<float>(z[i]) * affine[c] + affine[C + c];
  return v > 0.f ? static_cast<float>(dy[i]) : 0.f;
}

// Per channel: dbeta = sum(dv), dgamma = sum(dv * x_hat), and the dz coefficients.
template <typename scalar_t>
__global__ void backward_reduce_kernel(const scalar_t* __restrict__ z, const scalar_t* __restrict__ dy,
                                       const scalar_t* __restrict__ mean, const scalar_t* __restrict__ gamma,
                                       const float* __restrict__ affine, scalar_t* __restrict__ grad_gamma,
                                       scalar_t* __restrict__ grad_beta, float* __restrict__ coef, Geometry g) {
  __shared__ double sum_dv[kReduceThreads], sum_dv_xhat[kReduceThreads];
  const int64_t c = blockIdx.x, count = g.N * g.S;
  const float mu = static_cast<float>(mean[c]), invstd = affine[2 * g.C + c];
  double a = 0, b = 0;
  for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
    const int64_t i = element_offset(g, c, k);
    const double dv = grad_past_relu(z, dy, affine, g.C, c, i);
    a += dv;
    b += dv * ((static_cast<double>(z[i]) - mu) * invstd);
  }
  sum_dv[threadIdx.x] = a;
  sum_dv_xhat[threadIdx.x] = b;
  block_sum(sum_dv, sum_dv_xhat);
  if (threadIdx.x == 0) {
    grad_beta[c] = static_cast<scalar_t>(sum_dv[0]);
    grad_gamma[c] = static_cast<scalar_t>(sum_dv_xhat[0]);
    coef[c] = static_cast<float>(gamma_of(gamma, c)) * invstd;  // dz = coef0 * (dv - coef1 - x_hat * coef2)
    coef[g.C + c] = static_cast<float>(sum_dv[0] / count);
    coef[2 * g.C + c] = static_cast<float>(sum_dv_xhat[0] / count);
  }
}

template <typename scalar_t>
__global__ void grad_conv_out_kernel(const scalar_t* __restrict__ z, const scalar_t* __restrict__ dy,
                                     const scalar_t* __restrict__ mean, const float* __restrict__ affine,
                                     const float* __restrict__ coef, scalar_t* __restrict__ dz, int64_t numel,
                                     Geometry g) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= numel) return;
  const int64_t c = channel_of(g, i);
  const float x_hat = (static_cast<float>(z[i]) - static_cast<float>(mean[c])) * affine[2 * g.C + c];
  const float dv = grad_past_relu(z, dy, affine, g.C, c, i);
  dz[i] = static_cast<scalar_t>(coef[c] * (dv - coef[g.C + c] - x_hat * coef[2 * g.C + c]));
}

template <typename scalar_t>
const scalar_t* optional_ptr(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->const_data_ptr<scalar_t>() : nullptr;
}

// scale, shift, invstd per channel (3 x C floats), from mean and var.
at::Tensor channel_affine(const at::Tensor& mean, const at::Tensor& var, const c10::optional<at::Tensor>& bn_weight,
                          const c10::optional<at::Tensor>& bn_bias, double eps) {
  const int64_t C = mean.size(0);
  at::Tensor affine = at::empty({3 * C}, mean.options().dtype(at::kFloat));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mean.scalar_type(), "cnnrepro::conv_bn_relu affine", [&] {
    affine_kernel<scalar_t><<<blocks_for(C), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        mean.const_data_ptr<scalar_t>(), var.const_data_ptr<scalar_t>(), optional_ptr<scalar_t>(bn_weight),
        optional_ptr<scalar_t>(bn_bias), affine.mutable_data_ptr<float>(), C, eps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return affine;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_bn_relu_train_cuda(
    const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& bn_weight, const c10::optional<at::Tensor>& bn_bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, double eps) {
  const c10::cuda::CUDAGuard guard(input.device());
  ForwardCall call = prepare_forward(input, weight, bias, bn_weight, bn_bias, {stride, padding, dilation, groups}, eps);
  at::Tensor &z = call.z, &y = call.y, &mean = call.mean, &var = call.var;
  const Geometry& g = call.g;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "cnnrepro::conv_bn_relu_train", [&] {
    statistics_kernel<scalar_t><<<g.C, kReduceThreads, 0, stream>>>(
        z.const_data_ptr<scalar_t>(), mean.mutable_data_ptr<scalar_t>(), var.mutable_data_ptr<scalar_t>(), g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const at::Tensor affine = channel_affine(mean, var, bn_weight, bn_bias, eps);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "cnnrepro::conv_bn_relu_train", [&] {
    normalize_relu_kernel<scalar_t><<<blocks_for(z.numel()), kThreads, 0, stream>>>(
        z.const_data_ptr<scalar_t>(), affine.const_data_ptr<float>(), y.mutable_data_ptr<scalar_t>(), z.numel(), g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, z, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_bn_relu_train_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& conv_out,
    const at::Tensor& mean, const at::Tensor& var, const c10::optional<at::Tensor>& bn_weight,
    const c10::optional<at::Tensor>& bn_bias, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, double eps, std::array<bool, 3> output_mask) {
  const c10::cuda::CUDAGuard guard(input.device());
  const ConvParams conv{stride, padding, dilation, groups};
  BackwardCall call = prepare_backward(grad_output, input, weight, conv_out, bn_weight, bn_bias, conv, eps);
  at::Tensor &z = call.z, &dy = call.dy, &dz = call.dz, &grad_gamma = call.grad_gamma, &grad_beta = call.grad_beta;
  const Geometry& g = call.g;
  const at::Tensor affine = channel_affine(mean, var, bn_weight, bn_bias, eps);
  at::Tensor coef = at::empty({3 * g.C}, z.options().dtype(at::kFloat));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "cnnrepro::conv_bn_relu_train_backward", [&] {
    backward_reduce_kernel<scalar_t><<<g.C, kReduceThreads, 0, stream>>>(
        z.const_data_ptr<scalar_t>(), dy.const_data_ptr<scalar_t>(), mean.const_data_ptr<scalar_t>(),
        optional_ptr<scalar_t>(bn_weight), affine.const_data_ptr<float>(), grad_gamma.mutable_data_ptr<scalar_t>(),
        grad_beta.mutable_data_ptr<scalar_t>(), coef.mutable_data_ptr<float>(), g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    grad_conv_out_kernel<scalar_t><<<blocks_for(z.numel()), kThreads, 0, stream>>>(
        z.const_data_ptr<scalar_t>(), dy.const_data_ptr<scalar_t>(), mean.const_data_ptr<scalar_t>(),
        affine.const_data_ptr<float>(), coef.const_data_ptr<float>(), dz.mutable_data_ptr<scalar_t>(), z.numel(), g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return conv_backward(dz, input, weight, conv, output_mask, output_mask[2] ? dz.sum({0, 2, 3}) : at::Tensor(),
                       grad_gamma, grad_beta);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnrepro, CUDA, m) {
  m.impl("conv_bn_relu_train", &conv_bn_relu_train_cuda);
  m.impl("conv_bn_relu_train_backward", &conv_bn_relu_train_backward_cuda);
}

}  // namespace cnnrepro::conv_bn_relu

// Fused conv + BatchNorm + ReLU on CUDA, around at::convolution / at::convolution_backward (cuDNN).
//
// Per-channel reductions: one block per channel, each thread summing a fixed, strided share of the
// channel's elements in double, then a fixed-shape tree in shared memory: no atomics, so the bits
// repeat. Elementwise passes are one thread per element in memory order (either layout); their
// per-channel tables are in the op math type (float, or double for float64), as on the CPU.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../conv_bn_relu.h"
#include "launch.h"

namespace cnnrepro::conv_bn_relu {
namespace {

using cuda::blocks_for;
using cuda::kThreads;

constexpr int kReduceThreads = 512;
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

// Per channel (one block each): the batch mean and biased variance, from sums of z - K with the
// channel's shift K (see conv_bn_relu.h).
template <typename scalar_t>
__global__ void statistics_kernel(const scalar_t* __restrict__ z, scalar_t* __restrict__ mean,
                                  scalar_t* __restrict__ var, Geometry g) {
  __shared__ double sum[kReduceThreads], sum_sq[kReduceThreads];
  const int64_t c = blockIdx.x, count = g.N * g.S;
  const double shift = channel_shift(static_cast<double>(z[element_offset(g, c, 0)]));
  double a = 0, b = 0;
  for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
    const double v = static_cast<double>(z[element_offset(g, c, k)]) - shift;
    a += v;
    b += v * v;
  }
  sum[threadIdx.x] = a;
  sum_sq[threadIdx.x] = b;
  block_sum(sum, sum_sq);
  if (threadIdx.x == 0) {
    const double m = sum[0] / count;
    mean[c] = static_cast<scalar_t>(shift + m);
    var[c] = static_cast<scalar_t>(shifted_variance(m, sum_sq[0] / count));
  }
}

// Per channel: scale, beta, invstd and mean of the normalization in the op math type (double for
// float64), from the statistics given, so the forward and the backward (which recomputes the ReLU
// mask) see the very same numbers.
template <typename scalar_t, typename opmath_t>
__global__ void affine_kernel(const scalar_t* __restrict__ mean, const scalar_t* __restrict__ var,
                              const scalar_t* __restrict__ gamma, const scalar_t* __restrict__ beta,
                              opmath_t* __restrict__ affine, int64_t C, double eps) {
  const int64_t c = cuda::thread_item();
  if (c >= C) return;
  const double invstd = 1.0 / sqrt(static_cast<double>(var[c]) + eps);
  const double scale = static_cast<double>(gamma_of(gamma, c)) * invstd;
  affine[c] = static_cast<opmath_t>(scale);
  affine[C + c] = static_cast<opmath_t>(beta_of(beta, c));
  affine[2 * C + c] = static_cast<opmath_t>(invstd);
  affine[3 * C + c] = static_cast<opmath_t>(mean[c]);
}

// y = relu((z - mean) * scale + beta); y may be z (inference normalizes in place), so no __restrict__.
template <typename scalar_t, typename opmath_t>
__global__ void normalize_relu_kernel(const scalar_t* z, const opmath_t* __restrict__ affine, scalar_t* y,
                                      int64_t numel, Geometry g) {
  const int64_t i = cuda::thread_item();
  if (i >= numel) return;
  const int64_t c = channel_of(g, i);
  y[i] = static_cast<scalar_t>(relu((static_cast<opmath_t>(z[i]) - affine[3 * g.C + c]) * affine[c] + affine[g.C + c]));
}

// dv = dy where the recomputed pre-ReLU value lets ReLU's gradient pass.
template <typename scalar_t, typename opmath_t>
__device__ inline opmath_t grad_past_relu(const scalar_t* z, const scalar_t* dy, const opmath_t* affine, int64_t C,
                                          int64_t c, int64_t i) {
  const opmath_t v = (static_cast<opmath_t>(z[i]) - affine[3 * C + c]) * affine[c] + affine[C + c];
  return relu_passes(v) ? static_cast<opmath_t>(dy[i]) : opmath_t(0);
}

// Per channel: dbeta = sum(dv), dgamma = sum(dv * x_hat), and the dz coefficients.
template <typename scalar_t, typename opmath_t>
__global__ void backward_reduce_kernel(const scalar_t* __restrict__ z, const scalar_t* __restrict__ dy,
                                       const scalar_t* __restrict__ mean, const scalar_t* __restrict__ gamma,
                                       const opmath_t* __restrict__ affine, scalar_t* __restrict__ grad_gamma,
                                       scalar_t* __restrict__ grad_beta, opmath_t* __restrict__ coef, Geometry g) {
  __shared__ double sum_dv[kReduceThreads], sum_dv_xhat[kReduceThreads];
  const int64_t c = blockIdx.x, count = g.N * g.S;
  const double mu = static_cast<double>(mean[c]), invstd = static_cast<double>(affine[2 * g.C + c]);
  double a = 0, b = 0;
  for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
    const int64_t i = element_offset(g, c, k);
    const double dv = static_cast<double>(grad_past_relu(z, dy, affine, g.C, c, i));
    a += dv;
    b += dv * ((static_cast<double>(z[i]) - mu) * invstd);
  }
  sum_dv[threadIdx.x] = a;
  sum_dv_xhat[threadIdx.x] = b;
  block_sum(sum_dv, sum_dv_xhat);
  if (threadIdx.x == 0) {
    grad_beta[c] = static_cast<scalar_t>(sum_dv[0]);
    grad_gamma[c] = static_cast<scalar_t>(sum_dv_xhat[0]);
    // dz = coef0 * (dv - coef1 - x_hat * coef2)
    coef[c] = static_cast<opmath_t>(static_cast<double>(gamma_of(gamma, c)) * invstd);
    coef[g.C + c] = static_cast<opmath_t>(sum_dv[0] / count);
    coef[2 * g.C + c] = static_cast<opmath_t>(sum_dv_xhat[0] / count);
  }
}

template <typename scalar_t, typename opmath_t>
__global__ void grad_conv_out_kernel(const scalar_t* __restrict__ z, const scalar_t* __restrict__ dy,
                                     const scalar_t* __restrict__ mean, const opmath_t* __restrict__ affine,
                                     const opmath_t* __restrict__ coef, scalar_t* __restrict__ dz, int64_t numel,
                                     Geometry g) {
  const int64_t i = cuda::thread_item();
  if (i >= numel) return;
  const int64_t c = channel_of(g, i);
  const opmath_t x_hat = (static_cast<opmath_t>(z[i]) - static_cast<opmath_t>(mean[c])) * affine[2 * g.C + c];
  const opmath_t dv = grad_past_relu(z, dy, affine, g.C, c, i);
  dz[i] = static_cast<scalar_t>(coef[c] * (dv - coef[g.C + c] - x_hat * coef[2 * g.C + c]));
}

template <typename scalar_t>
const scalar_t* optional_ptr(const c10::optional<at::Tensor>& t) {
  return present(t) ? t->const_data_ptr<scalar_t>() : nullptr;
}

// scale, beta, invstd, mean per channel (4 x C values of the op math type), from mean and var.
at::Tensor channel_affine(const at::Tensor& mean, const at::Tensor& var, const c10::optional<at::Tensor>& bn_weight,
                          const c10::optional<at::Tensor>& bn_bias, double eps) {
  const int64_t C = mean.size(0);
  at::Tensor affine = at::empty({4 * C}, mean.options().dtype(at::toOpMathType(mean.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mean.scalar_type(), "cnnrepro::conv_bn_relu affine", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    CNNREPRO_LAUNCH(blocks_for(C), kThreads, 0, at::cuda::getCurrentCUDAStream(), affine_kernel<scalar_t, opmath_t>)(
        mean.const_data_ptr<scalar_t>(), var.const_data_ptr<scalar_t>(), optional_ptr<scalar_t>(bn_weight),
        optional_ptr<scalar_t>(bn_bias), affine.mutable_data_ptr<opmath_t>(), C, eps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return affine;
}

// y = relu((z - mean) * scale + beta) with the table of channel_affine; y may be z.
void normalize_relu(const at::Tensor& z, const at::Tensor& affine, at::Tensor& y) {
  if (z.numel() == 0) return;
  const Geometry g = geometry_of(z);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "cnnrepro::conv_bn_relu normalize", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    CNNREPRO_LAUNCH(blocks_for(z.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream(),
                    normalize_relu_kernel<scalar_t, opmath_t>)(
        z.const_data_ptr<scalar_t>(), affine.const_data_ptr<opmath_t>(), y.mutable_data_ptr<scalar_t>(), z.numel(), g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
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
    CNNREPRO_LAUNCH(g.C, kReduceThreads, 0, stream, statistics_kernel<scalar_t>)(
        z.const_data_ptr<scalar_t>(), mean.mutable_data_ptr<scalar_t>(), var.mutable_data_ptr<scalar_t>(), g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  normalize_relu(z, channel_affine(mean, var, bn_weight, bn_bias, eps), y);
  return {y, z, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_bn_relu_train_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& conv_out,
    const at::Tensor& mean, const at::Tensor& var, const c10::optional<at::Tensor>& bn_weight,
    const c10::optional<at::Tensor>& bn_bias, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    int64_t groups, double eps, std::array<bool, 3> output_mask) {
  const c10::cuda::CUDAGuard guard(input.device());
  const ConvParams conv{stride, padding, dilation, groups};
  BackwardCall call = prepare_backward(grad_output, input, weight, conv_out, mean, var, bn_weight, bn_bias, conv, eps);
  at::Tensor &z = call.z, &dy = call.dy, &dz = call.dz, &grad_gamma = call.grad_gamma, &grad_beta = call.grad_beta;
  const Geometry& g = call.g;
  const at::Tensor affine = channel_affine(mean, var, bn_weight, bn_bias, eps);
  at::Tensor coef = at::empty({3 * g.C}, affine.options());
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, z.scalar_type(), "cnnrepro::conv_bn_relu_train_backward", [&] {
        using opmath_t = at::opmath_type<scalar_t>;
        CNNREPRO_LAUNCH(g.C, kReduceThreads, 0, stream, backward_reduce_kernel<scalar_t, opmath_t>)(
            z.const_data_ptr<scalar_t>(), dy.const_data_ptr<scalar_t>(), mean.const_data_ptr<scalar_t>(),
            optional_ptr<scalar_t>(bn_weight), affine.const_data_ptr<opmath_t>(),
            grad_gamma.mutable_data_ptr<scalar_t>(), grad_beta.mutable_data_ptr<scalar_t>(),
            coef.mutable_data_ptr<opmath_t>(), g);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        CNNREPRO_LAUNCH(blocks_for(z.numel()), kThreads, 0, stream, grad_conv_out_kernel<scalar_t, opmath_t>)(
            z.const_data_ptr<scalar_t>(), dy.const_data_ptr<scalar_t>(), mean.const_data_ptr<scalar_t>(),
            affine.const_data_ptr<opmath_t>(), coef.const_data_ptr<opmath_t>(), dz.mutable_data_ptr<scalar_t>(),
            z.numel(), g);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return conv_backward(dz, input, weight, conv, output_mask, output_mask[2] ? dz.sum({0, 2, 3}) : at::Tensor(),
                       grad_gamma, grad_beta);
}

at::Tensor conv_bn_relu_eval_cuda(const at::Tensor& input, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& bn_weight,
                                  const c10::optional<at::Tensor>& bn_bias, const at::Tensor& running_mean,
                                  const at::Tensor& running_var, at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation, int64_t groups, double eps) {
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor z = prepare_eval(input, weight, bias, bn_weight, bn_bias, running_mean, running_var,
                              {stride, padding, dilation, groups}, eps);
  normalize_relu(z, channel_affine(running_mean, running_var, bn_weight, bn_bias, eps), z);
  return z;
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnrepro, CUDA, m) {
  m.impl("conv_bn_relu_train", &conv_bn_relu_train_cuda);
  m.impl("conv_bn_relu_train_backward", &conv_bn_relu_train_backward_cuda);
  m.impl("conv_bn_relu_eval", &conv_bn_relu_eval_cuda);
}

}  // namespace cnnrepro::conv_bn_relu

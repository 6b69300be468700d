// LRN on CUDA: one thread per element, in memory order, so neighbouring threads touch
// neighbouring addresses in both layouts (contiguous: along space; channels-last: along channels)
// and the window's extra reads hit the cache. The backward is two kernels, both gathers: the
// first writes each element's ratio dy*x/(scale^beta*scale), the second sums them over the
// mirrored window. No atomics, fixed summation order: deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../lrn.h"
#include "launch.h"

namespace cnnrepro::lrn {
namespace {

using cuda::blocks_for;
using cuda::kThreads;

// Channel of the element at memory offset i, and the distance between channels, in one layout.
struct ChannelIndexer {
  int64_t C, cstride;  // cstride: S when contiguous, 1 when channels-last
  __device__ int64_t channel(int64_t i) const { return (i / cstride) % C; }
};

template <typename scalar_t, typename acc_t>
__device__ acc_t window_sum_squares(const scalar_t* x, int64_t i, int64_t c, ChannelIndexer ix, const Params& p) {
  const Channels w = p.window(c, ix.C);
  acc_t sum = 0;
  for (int64_t j = w.first; j <= w.last; ++j) {
    const acc_t v = static_cast<acc_t>(x[i + (j - c) * ix.cstride]);
    sum += v * v;
  }
  return sum;
}

template <BetaKind kind, typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t numel,
                               ChannelIndexer ix, Params p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t i = cuda::thread_item();
  if (i >= numel) return;
  const int64_t c = ix.channel(i);
  const acc_t scale = scale_from_sum<acc_t>(window_sum_squares<scalar_t, acc_t>(x, i, c, ix, p), p.size, p.alpha, p.k);
  y[i] = static_cast<scalar_t>(static_cast<acc_t>(x[i]) / pow_beta<kind, acc_t>(scale, p.beta));
}

template <BetaKind kind, typename scalar_t>
__global__ void ratio_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                             at::opmath_type<scalar_t>* __restrict__ ratio, int64_t numel, ChannelIndexer ix,
                             Params p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t i = cuda::thread_item();
  if (i >= numel) return;
  const int64_t c = ix.channel(i);
  const acc_t scale = scale_from_sum<acc_t>(window_sum_squares<scalar_t, acc_t>(x, i, c, ix, p), p.size, p.alpha, p.k);
  ratio[i] = static_cast<acc_t>(dy[i]) * static_cast<acc_t>(x[i]) / (pow_beta<kind, acc_t>(scale, p.beta) * scale);
}

template <BetaKind kind, typename scalar_t>
__global__ void grad_input_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                                  const at::opmath_type<scalar_t>* __restrict__ ratio, scalar_t* __restrict__ dx,
                                  int64_t numel, ChannelIndexer ix, Params p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t i = cuda::thread_item();
  if (i >= numel) return;
  const int64_t c = ix.channel(i);
  const acc_t scale = scale_from_sum<acc_t>(window_sum_squares<scalar_t, acc_t>(x, i, c, ix, p), p.size, p.alpha, p.k);
  const Channels mirrored = p.mirrored_window(c, ix.C);
  acc_t collected = 0;
  for (int64_t j = mirrored.first; j <= mirrored.last; ++j) collected += ratio[i + (j - c) * ix.cstride];
  const acc_t coef = acc_t(2) * static_cast<acc_t>(p.alpha) * static_cast<acc_t>(p.beta) / static_cast<acc_t>(p.size);
  dx[i] = static_cast<scalar_t>(static_cast<acc_t>(dy[i]) / pow_beta<kind, acc_t>(scale, p.beta) -
                                coef * static_cast<acc_t>(x[i]) * collected);
}

ChannelIndexer indexer(const Geometry& g) { return {g.C, g.channels_last ? 1 : g.S}; }

at::Tensor lrn_forward_cuda(const at::Tensor& input, int64_t size, double alpha, double beta, double k) {
  const c10::cuda::CUDAGuard guard(input.device());
  const Params p{size, alpha, beta, k};
  const ForwardCall call = prepare_forward(input, p);
  const int64_t numel = call.x.numel();
  if (numel == 0) return call.y;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, call.x.scalar_type(), "cnnrepro::lrn", [&] {
    dispatch_beta(beta, [&](auto kind) {
      CNNREPRO_LAUNCH(blocks_for(numel), kThreads, 0, stream, forward_kernel<kind.value, scalar_t>)(
          call.x.const_data_ptr<scalar_t>(), call.y.mutable_data_ptr<scalar_t>(), numel, indexer(call.g), p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return call.y;
}

at::Tensor lrn_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input, int64_t size, double alpha,
                             double beta, double k) {
  const c10::cuda::CUDAGuard guard(input.device());
  const Params p{size, alpha, beta, k};
  const BackwardCall call = prepare_backward(grad_output, input, p);
  const int64_t numel = call.x.numel();
  if (numel == 0) return call.dx;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, call.x.scalar_type(), "cnnrepro::lrn_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor ratio = at::empty({numel}, call.x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    const scalar_t *dy = call.dy.const_data_ptr<scalar_t>(), *x = call.x.const_data_ptr<scalar_t>();
    dispatch_beta(beta, [&](auto kind) {
      CNNREPRO_LAUNCH(blocks_for(numel), kThreads, 0, stream, ratio_kernel<kind.value, scalar_t>)(
          dy, x, ratio.mutable_data_ptr<acc_t>(), numel, indexer(call.g), p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      CNNREPRO_LAUNCH(blocks_for(numel), kThreads, 0, stream, grad_input_kernel<kind.value, scalar_t>)(
          dy, x, ratio.const_data_ptr<acc_t>(), call.dx.mutable_data_ptr<scalar_t>(), numel, indexer(call.g), p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return call.dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnrepro, CUDA, m) {
  m.impl("lrn", &lrn_forward_cuda);
  m.impl("lrn_backward", &lrn_backward_cuda);
}

}  // namespace cnnrepro::lrn

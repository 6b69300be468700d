// LRN on CUDA: one thread per element (grid-stride loops past 2^31 - 1 blocks), in memory order, so
// neighbouring threads touch neighbouring addresses in both layouts (contiguous: along space;
// channels-last: along channels) and the window's extra reads hit the cache. The backward is two
// kernels, both gathers: the first writes each element's ratio dy*x/(scale^beta*scale), the second
// sums them over the mirrored window. No atomics, fixed summation order: deterministic. Index
// arithmetic is 32-bit below 2^31 elements (index.h): an element's channel is two multiply-high
// divisions, not two 64-bit ones.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../lrn.h"
#include "index.h"
#include "launch.h"

namespace cnnrepro::lrn {
namespace {

using cuda::blocks_for;
using cuda::dispatch_index;
using cuda::kThreads;

template <typename index_t>
using Indexer = cuda::ChannelIndexer<index_t>;

// Sum of x^2 over channel c's window W(c), from the element at offset i = base + c * cstride.
template <typename scalar_t, typename acc_t, typename index_t>
__device__ acc_t window_sum_squares(const scalar_t* x, index_t base, index_t c, const Indexer<index_t>& ix,
                                    const Params& p) {
  const Channels w = p.window(c, ix.C);
  acc_t sum = 0;
  for (index_t j = static_cast<index_t>(w.first); j <= static_cast<index_t>(w.last); ++j) {
    const acc_t v = static_cast<acc_t>(x[base + j * ix.cstride]);
    sum += v * v;
  }
  return sum;
}

template <BetaKind kind, typename scalar_t, typename index_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t numel,
                               Indexer<index_t> ix, Params p) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t item = cuda::thread_item(); item < numel; item += cuda::grid_stride()) {
    const index_t i = static_cast<index_t>(item), c = ix.channel(i), base = i - c * ix.cstride;
    const acc_t sum = window_sum_squares<scalar_t, acc_t>(x, base, c, ix, p);
    const acc_t scale = scale_from_sum<acc_t>(sum, p.size, p.alpha, p.k);
    y[i] = static_cast<scalar_t>(static_cast<acc_t>(x[i]) / pow_beta<kind, acc_t>(scale, p.beta));
  }
}

template <BetaKind kind, typename scalar_t, typename index_t>
__global__ void ratio_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                             at::opmath_type<scalar_t>* __restrict__ ratio, int64_t numel, Indexer<index_t> ix,
                             Params p) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t item = cuda::thread_item(); item < numel; item += cuda::grid_stride()) {
    const index_t i = static_cast<index_t>(item), c = ix.channel(i), base = i - c * ix.cstride;
    const acc_t sum = window_sum_squares<scalar_t, acc_t>(x, base, c, ix, p);
    const acc_t scale = scale_from_sum<acc_t>(sum, p.size, p.alpha, p.k);
    ratio[i] = static_cast<acc_t>(dy[i]) * static_cast<acc_t>(x[i]) / (pow_beta<kind, acc_t>(scale, p.beta) * scale);
  }
}

template <BetaKind kind, typename scalar_t, typename index_t>
__global__ void grad_input_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                                  const at::opmath_type<scalar_t>* __restrict__ ratio, scalar_t* __restrict__ dx,
                                  int64_t numel, Indexer<index_t> ix, Params p) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t coef = acc_t(2) * static_cast<acc_t>(p.alpha) * static_cast<acc_t>(p.beta) / static_cast<acc_t>(p.size);
  for (int64_t item = cuda::thread_item(); item < numel; item += cuda::grid_stride()) {
    const index_t i = static_cast<index_t>(item), c = ix.channel(i), base = i - c * ix.cstride;
    const acc_t sum = window_sum_squares<scalar_t, acc_t>(x, base, c, ix, p);
    const acc_t scale = scale_from_sum<acc_t>(sum, p.size, p.alpha, p.k);
    const Channels mirrored = p.mirrored_window(c, ix.C);
    acc_t collected = 0;
    for (index_t j = static_cast<index_t>(mirrored.first); j <= static_cast<index_t>(mirrored.last); ++j) {
      collected += ratio[base + j * ix.cstride];
    }
    dx[i] = static_cast<scalar_t>(static_cast<acc_t>(dy[i]) / pow_beta<kind, acc_t>(scale, p.beta) -
                                  coef * static_cast<acc_t>(x[i]) * collected);
  }
}

at::Tensor lrn_forward_cuda(const at::Tensor& input, int64_t size, double alpha, double beta, double k) {
  const c10::cuda::CUDAGuard guard(input.device());
  const Params p{size, alpha, beta, k};
  const ForwardCall call = prepare_forward(input, p);
  const int64_t numel = call.x.numel();
  if (numel == 0) return call.y;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, call.x.scalar_type(), "cnnrepro::lrn", [&] {
    dispatch_beta(beta, [&](auto kind) {
      dispatch_index(numel - 1, [&](auto index) {
        using index_t = decltype(index);
        CNNREPRO_LAUNCH(blocks_for(numel), kThreads, 0, stream, forward_kernel<kind.value, scalar_t, index_t>)(
            call.x.const_data_ptr<scalar_t>(), call.y.mutable_data_ptr<scalar_t>(), numel, Indexer<index_t>(call.g), p);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
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
    const at::Tensor &dy = call.dy, &x = call.x;
    dispatch_beta(beta, [&](auto kind) {
      dispatch_index(numel - 1, [&](auto index) {
        using index_t = decltype(index);
        const Indexer<index_t> ix(call.g);
        CNNREPRO_LAUNCH(blocks_for(numel), kThreads, 0, stream, ratio_kernel<kind.value, scalar_t, index_t>)(
            dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), ratio.mutable_data_ptr<acc_t>(), numel, ix, p);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        CNNREPRO_LAUNCH(blocks_for(numel), kThreads, 0, stream, grad_input_kernel<kind.value, scalar_t, index_t>)(
            dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), ratio.const_data_ptr<acc_t>(),
            call.dx.mutable_data_ptr<scalar_t>(), numel, ix, p);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
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

// 2-D max pooling with argmax on CUDA. The forward is one thread per output element, in the
// output's memory order (contiguous or channels-last), scanning its window in row-major order.
// The backward is a gather, one thread per input element: it sums, in output order, the
// gradients of the covering windows whose argmax it is. No atomics: deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

#include "../max_pool.h"
#include "launch.h"

namespace cnnrepro::max_pool {
namespace {

using cuda::blocks_for;
using cuda::kThreads;

// (n, c, h, w) of a linear offset in an N x C x H x W tensor stored contiguous or channels-last.
struct Position {
  int64_t n, c, h, w;
};

__device__ inline Position position_of(int64_t i, int64_t C, int64_t H, int64_t W, bool channels_last) {
  if (channels_last) {
    const int64_t c = i % C, w = (i / C) % W, h = (i / (C * W)) % H;
    return {i / (C * W * H), c, h, w};
  }
  const int64_t w = i % W, h = (i / W) % H, c = (i / (W * H)) % C;
  return {i / (W * H * C), c, h, w};
}

// Offset of (n, c, h, w) in the same layout.
__device__ inline int64_t offset_of(Position p, int64_t C, int64_t H, int64_t W, bool channels_last) {
  return channels_last ? ((p.n * H + p.h) * W + p.w) * C + p.c : ((p.n * C + p.c) * H + p.h) * W + p.w;
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t* __restrict__ idx,
                               int64_t numel, PoolGeometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t i = cuda::thread_item();
  if (i >= numel) return;
  const Position o = position_of(i, g.C, g.OH, g.OW, g.channels_last);
  const Window& w = g.win;
  const int64_t h0 = o.h * w.sh - w.ph, w0 = o.w * w.sw - w.pw;
  const int64_t h1 = min(h0 + (w.kh - 1) * w.dh + 1, g.H), w1 = min(w0 + (w.kw - 1) * w.dw + 1, g.W);
  const int64_t hs = first_tap(h0, w.dh), ws = first_tap(w0, w.dw);
  int64_t best = hs * g.W + ws;
  acc_t best_value = -std::numeric_limits<acc_t>::infinity();
  for (int64_t ih = hs; ih < h1; ih += w.dh) {
    for (int64_t iw = ws; iw < w1; iw += w.dw) {
      const acc_t value = static_cast<acc_t>(x[offset_of({o.n, o.c, ih, iw}, g.C, g.H, g.W, g.channels_last)]);
      if (takes_max(value, best_value)) {
        best_value = value;
        best = ih * g.W + iw;
      }
    }
  }
  y[i] = static_cast<scalar_t>(best_value);
  idx[i] = best;
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ dy, const int64_t* __restrict__ idx,
                                scalar_t* __restrict__ dx, int64_t numel, PoolGeometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t i = cuda::thread_item();
  if (i >= numel) return;
  const Position p = position_of(i, g.C, g.H, g.W, g.channels_last);
  const Window& w = g.win;
  const Range rows = covering_outputs(p.h, w.sh, w.ph, w.kh, w.dh, g.OH);
  const Range cols = covering_outputs(p.w, w.sw, w.pw, w.kw, w.dw, g.OW);
  const int64_t pos = p.h * g.W + p.w;
  acc_t sum = 0;
  for (int64_t oh = rows.first; oh <= rows.last; ++oh) {
    for (int64_t ow = cols.first; ow <= cols.last; ++ow) {
      const int64_t o = offset_of({p.n, p.c, oh, ow}, g.C, g.OH, g.OW, g.channels_last);
      if (idx[o] == pos) sum += static_cast<acc_t>(dy[o]);
    }
  }
  dx[i] = static_cast<scalar_t>(sum);
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_with_argmax_cuda(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                               at::IntArrayRef stride, at::IntArrayRef padding,
                                                               at::IntArrayRef dilation, bool ceil_mode) {
  const c10::cuda::CUDAGuard guard(input.device());
  const ForwardCall call = prepare_forward(input, kernel_size, stride, padding, dilation, ceil_mode);
  const int64_t numel = call.values.numel();
  if (numel == 0) return finish_forward(input, call);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, call.x.scalar_type(), "cnnrepro::max_pool2d_with_argmax", [&] {
        CNNREPRO_LAUNCH(blocks_for(numel), kThreads, 0, at::cuda::getCurrentCUDAStream(), forward_kernel<scalar_t>)(
            call.x.const_data_ptr<scalar_t>(), call.values.mutable_data_ptr<scalar_t>(),
            call.indices.mutable_data_ptr<int64_t>(), numel, call.g);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return finish_forward(input, call);
}

at::Tensor max_pool2d_with_argmax_backward_cuda(const at::Tensor& grad_output, const at::Tensor& indices,
                                                at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                                at::IntArrayRef stride, at::IntArrayRef padding,
                                                at::IntArrayRef dilation, bool ceil_mode) {
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const BackwardCall call =
      prepare_backward(grad_output, indices, input_size, kernel_size, stride, padding, dilation, ceil_mode);
  const PoolGeometry& g = call.g;
  const auto format = g.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor dx = at::empty({g.N, g.C, g.H, g.W}, call.grad_output.options().memory_format(format));
  const int64_t numel = dx.numel();
  if (numel == 0) return finish_backward(grad_output, dx);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, dx.scalar_type(), "cnnrepro::max_pool2d_with_argmax_backward", [&] {
        CNNREPRO_LAUNCH(blocks_for(numel), kThreads, 0, at::cuda::getCurrentCUDAStream(), backward_kernel<scalar_t>)(
            call.grad_output.const_data_ptr<scalar_t>(), call.indices.const_data_ptr<int64_t>(),
            dx.mutable_data_ptr<scalar_t>(), numel, g);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return finish_backward(grad_output, dx);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnrepro, CUDA, m) {
  m.impl("max_pool2d_with_argmax", &max_pool2d_with_argmax_cuda);
  m.impl("max_pool2d_with_argmax_backward", &max_pool2d_with_argmax_backward_cuda);
}

}  // namespace cnnrepro::max_pool

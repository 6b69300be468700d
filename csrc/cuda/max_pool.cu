// 2-D max pooling with argmax on CUDA. The forward is one thread per output element, in the
// output's memory order (contiguous or channels-last), scanning its window in row-major order.
// The backward is a gather, one thread per input element: it sums, in output order, the
// gradients of the covering windows whose argmax it is. No atomics: deterministic. Grid-stride
// loops past 2^31 - 1 blocks; 32-bit index arithmetic where every offset and window coordinate of
// the call fits (index_extent): an element's (n, c, h, w) is three multiply-high divisions.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "../max_pool.h"
#include "index.h"
#include "launch.h"

namespace cnnrepro::max_pool {
namespace {

using cuda::blocks_for;
using cuda::dispatch_index;
using cuda::kThreads;

// The window in the index type (it fits: see index_extent).
template <typename index_t>
struct WindowOf {
  index_t kh, kw, sh, sw, ph, pw, dh, dw;
  explicit WindowOf(const Window& w)
      : kh(static_cast<index_t>(w.kh)),
        kw(static_cast<index_t>(w.kw)),
        sh(static_cast<index_t>(w.sh)),
        sw(static_cast<index_t>(w.sw)),
        ph(static_cast<index_t>(w.ph)),
        pw(static_cast<index_t>(w.pw)),
        dh(static_cast<index_t>(w.dh)),
        dw(static_cast<index_t>(w.dw)) {}
};

// What a kernel needs of a call: the input's and the output's layouts and the window.
template <typename index_t>
struct Pool {
  cuda::Layout4<index_t> in, out;
  WindowOf<index_t> win;
  explicit Pool(const PoolGeometry& g)
      : in(g.C, g.H, g.W, g.channels_last), out(g.C, g.OH, g.OW, g.channels_last), win(g.win) {}
};

// a * b and a + b, or the largest int64 where they overflow (an absurd window: it takes the 64-bit path).
int64_t times(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? std::numeric_limits<int64_t>::max() : r;
}
int64_t plus(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_add_overflow(a, b, &r) ? std::numeric_limits<int64_t>::max() : r;
}

// The largest magnitude of any offset, coordinate or sum of them the kernels form for a call: the
// tensors' last offsets; along each axis, a window's reach (its start, its last tap and one step
// past either); and a window's first tap as an index into the plane (first_tap < max(H, dh)).
int64_t index_extent(const PoolGeometry& g) {
  const Window& w = g.win;
  const int64_t planes = times(g.N, g.C);
  const auto reach = [](int64_t in, int64_t out, int64_t k, int64_t s, int64_t p, int64_t d) {
    return plus(plus(plus(times(out, s), times(k, d)), in), p);
  };
  return std::max({times(planes, times(g.H, g.W)), times(planes, times(g.OH, g.OW)),
                   reach(g.H, g.OH, w.kh, w.sh, w.ph, w.dh), reach(g.W, g.OW, w.kw, w.sw, w.pw, w.dw),
                   times(plus(std::max(g.H, w.dh), 1), plus(std::max(g.W, w.dw), 1))});
}

template <typename scalar_t, typename index_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t* __restrict__ idx,
                               int64_t numel, Pool<index_t> g) {
  using acc_t = at::opmath_type<scalar_t>;
  const WindowOf<index_t>& w = g.win;
  for (int64_t item = cuda::thread_item(); item < numel; item += cuda::grid_stride()) {
    const index_t i = static_cast<index_t>(item);
    const cuda::Position<index_t> o = g.out.position(i);
    const index_t h0 = o.h * w.sh - w.ph, w0 = o.w * w.sw - w.pw;
    const index_t h1 = min(h0 + (w.kh - 1) * w.dh + 1, g.in.H), w1 = min(w0 + (w.kw - 1) * w.dw + 1, g.in.W);
    const index_t hs = static_cast<index_t>(first_tap(h0, w.dh)), ws = static_cast<index_t>(first_tap(w0, w.dw));
    index_t best = hs * g.in.W + ws;
    acc_t best_value = -std::numeric_limits<acc_t>::infinity();
    for (index_t ih = hs; ih < h1; ih += w.dh) {
      for (index_t iw = ws; iw < w1; iw += w.dw) {
        const acc_t value = static_cast<acc_t>(x[g.in.offset(o.n, o.c, ih, iw)]);
        if (takes_max(value, best_value)) {
          best_value = value;
          best = ih * g.in.W + iw;
        }
      }
    }
    y[i] = static_cast<scalar_t>(best_value);
    idx[i] = best;
  }
}

template <typename scalar_t, typename index_t>
__global__ void backward_kernel(const scalar_t* __restrict__ dy, const int64_t* __restrict__ idx,
                                scalar_t* __restrict__ dx, int64_t numel, Pool<index_t> g) {
  using acc_t = at::opmath_type<scalar_t>;
  const WindowOf<index_t>& w = g.win;
  for (int64_t item = cuda::thread_item(); item < numel; item += cuda::grid_stride()) {
    const index_t i = static_cast<index_t>(item);
    const cuda::Position<index_t> p = g.in.position(i);
    const Range rows = covering_outputs(p.h, w.sh, w.ph, w.kh, w.dh, g.out.H);
    const Range cols = covering_outputs(p.w, w.sw, w.pw, w.kw, w.dw, g.out.W);
    const int64_t pos = p.h * g.in.W + p.w;
    acc_t sum = 0;
    for (index_t oh = static_cast<index_t>(rows.first); oh <= static_cast<index_t>(rows.last); ++oh) {
      for (index_t ow = static_cast<index_t>(cols.first); ow <= static_cast<index_t>(cols.last); ++ow) {
        const index_t o = g.out.offset(p.n, p.c, oh, ow);
        if (idx[o] == pos) sum += static_cast<acc_t>(dy[o]);
      }
    }
    dx[i] = static_cast<scalar_t>(sum);
  }
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_with_argmax_cuda(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                               at::IntArrayRef stride, at::IntArrayRef padding,
                                                               at::IntArrayRef dilation, bool ceil_mode) {
  const c10::cuda::CUDAGuard guard(input.device());
  const ForwardCall call = prepare_forward(input, kernel_size, stride, padding, dilation, ceil_mode);
  const int64_t numel = call.values.numel();
  if (numel == 0) return finish_forward(input, call);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, call.x.scalar_type(), "cnnrepro::max_pool2d_with_argmax",
                                  [&] {
                                    dispatch_index(index_extent(call.g), [&](auto index) {
                                      using index_t = decltype(index);
                                      CNNREPRO_LAUNCH(blocks_for(numel), kThreads, 0, at::cuda::getCurrentCUDAStream(),
                                                      forward_kernel<scalar_t, index_t>)(
                                          call.x.const_data_ptr<scalar_t>(), call.values.mutable_data_ptr<scalar_t>(),
                                          call.indices.mutable_data_ptr<int64_t>(), numel, Pool<index_t>(call.g));
                                      C10_CUDA_KERNEL_LAUNCH_CHECK();
                                    });
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
        dispatch_index(index_extent(g), [&](auto index) {
          using index_t = decltype(index);
          CNNREPRO_LAUNCH(blocks_for(numel), kThreads, 0, at::cuda::getCurrentCUDAStream(),
                          backward_kernel<scalar_t, index_t>)(call.grad_output.const_data_ptr<scalar_t>(),
                                                              call.indices.const_data_ptr<int64_t>(),
                                                              dx.mutable_data_ptr<scalar_t>(), numel, Pool<index_t>(g));
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
  return finish_backward(grad_output, dx);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnrepro, CUDA, m) {
  m.impl("max_pool2d_with_argmax", &max_pool2d_with_argmax_cuda);
  m.impl("max_pool2d_with_argmax_backward", &max_pool2d_with_argmax_backward_cuda);
}

}  // namespace cnnrepro::max_pool

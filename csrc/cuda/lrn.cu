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

namespace cnnrepro::lrn {
namespace {

constexpr int kThreads = 256;

// Channel of the element at memory offset i, and the distance between channels, in one layout.
struct ChannelIndexer {
  int64_t C, cstride;  // cstride: S when contiguous, 1 when channels-last
  __device__ int64_t channel(int64_t i) const { return (i / cstride) % C; }
};

template <typename scalar_t, typename acc_t>
__device__ acc_t window_sum_squares(const scalar_t* x, int64_t i, int64_t c, ChannelIndexer ix, const Params& p) {
  const int64_t first = c - p.before() < 0 ? 0 : c - p.before();
  const int64_t last = c + p.after() >= ix.C ? ix.C - 1 : c + p.after();
  acc_t sum = 0;
  for (int64_t j = first; j <= last; ++j) {
    const acc_t v = static_cast<acc_t>(x[i + (j - c) * ix.cstride]);
    sum += v * v;
  }
  return sum;
}

template <BetaKind kind, typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t numel,
                               ChannelIndexer ix, Params p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
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
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
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
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= numel) return;
  const int64_t c = ix.channel(i);
  const acc_t scale = scale_from_sum<acc_t>(window_sum_squares<scalar_t, acc_t>(x, i, c, ix, p), p.size, p.alpha, p.k);
  const int64_t first = c - p.after() < 0 ? 0 : c - p.after();
  const int64_t last = c + p.before() >= ix.C ? ix.C - 1 : c + p.before();
  acc_t collected = 0;
  for (int64_t j = first; j <= last; ++j) collected += ratio[i + (j - c) * ix.cstride];
  const acc_t coef = acc_t(2) * static_cast<acc_t>(p.alpha) * static_cast<acc_t>(p.beta) / static_cast<acc_t>(p.size);
  dx[i] = static_cast<scalar_t>(static_cast<acc_t>(dy[i]) / pow_beta<kind, acc_t>(scale, p.beta) -
                                coef * static_cast<acc_t>(x[i]) * collected);
}

unsigned int blocks_for(int64_t numel) { return static_cast<unsigned int>((numel + kThreads - 1) / kThreads); }

at::Tensor lrn_forward_cuda(const at::Tensor& input, int64_t size, double alpha, double beta, double k) {
  const Params p{size, alpha, beta, k};
  check_args(input, p, "cnnrepro::lrn");
  const c10::cuda::CUDAGuard guard(input.device());
  const auto format = kernel_memory_format(input);
  const at::Tensor x = input.contiguous(format);
  at::Tensor y = at::empty_like(x, x.options().memory_format(format));
  const Geometry g = geometry(x, format);
  if (x.numel() == 0) return y;
  const ChannelIndexer ix{g.C, g.channels_last ? 1 : g.S};
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "cnnrepro::lrn", [&] {
    dispatch_beta(beta, [&](auto kind) {
      forward_kernel<kind.value, scalar_t><<<blocks_for(x.numel()), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), x.numel(), ix, p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return y;
}

at::Tensor lrn_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input, int64_t size, double alpha,
                             double beta, double k) {
  const Params p{size, alpha, beta, k};
  check_args(input, p, "cnnrepro::lrn_backward");
  check_same_device_dtype(grad_output, input, "cnnrepro::lrn_backward", "grad_output", "input");
  check_same_shape(grad_output, input, "cnnrepro::lrn_backward", "grad_output", "input");
  const c10::cuda::CUDAGuard guard(input.device());
  const auto format = kernel_memory_format(input);
  const at::Tensor x = input.contiguous(format), dy = grad_output.contiguous(format);
  at::Tensor dx = at::empty_like(x, x.options().memory_format(format));
  const Geometry g = geometry(x, format);
  if (x.numel() == 0) return dx;
  const ChannelIndexer ix{g.C, g.channels_last ? 1 : g.S};
  const int64_t numel = x.numel();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "cnnrepro::lrn_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor ratio = at::empty({numel}, x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    dispatch_beta(beta, [&](auto kind) {
      ratio_kernel<kind.value, scalar_t><<<blocks_for(numel), kThreads, 0, stream>>>(
          dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), ratio.mutable_data_ptr<acc_t>(), numel, ix, p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      grad_input_kernel<kind.value, scalar_t><<<blocks_for(numel), kThreads, 0, stream>>>(
          dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), ratio.const_data_ptr<acc_t>(),
          dx.mutable_data_ptr<scalar_t>(), numel, ix, p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnrepro, CUDA, m) {
  m.impl("lrn", &lrn_forward_cuda);
  m.impl("lrn_backward", &lrn_backward_cuda);
}

}  // namespace cnnrepro::lrn

// Fused conv + BatchNorm + ReLU on CUDA, around at::convolution / at::convolution_backward (cuDNN).
//
// Per-channel reductions (the batch statistics; the backward's dbeta and dgamma) read z in memory
// order in both layouts: contiguous, a block's threads walk one channel's planes; channels-last,
// a warp reads up to 32 neighbouring channels of a row, and the block's rows go down the tensor.
// Each channel is cut into chunks so that even a few channels fill the GPU (about 4096 blocks); each
// thread sums its share in double in a fixed order, a fixed tree in shared memory adds the threads'
// sums, and a second kernel adds the chunks' in chunk order: no atomics, an order set by the shape
// alone, so the bits repeat on any GPU (ReducePlan). Elementwise passes take kUnroll elements a
// thread in memory order (either layout); their per-channel tables are in the op math type (float,
// or double for float64), as on the CPU. Index arithmetic is 32-bit where the tensor allows (index.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../conv_bn_relu.h"
#include "index.h"
#include "launch.h"

// Elements of a channel a reduction block's thread sums at the least (more when the shape would
// otherwise want more than kTargetBlocks blocks). The emulation lowers it so that its small test
// tensors are split into several chunks.
#ifndef CNNREPRO_REDUCE_ITEMS
#define CNNREPRO_REDUCE_ITEMS 16
#endif

namespace cnnrepro::conv_bn_relu {
namespace {

using cuda::blocks_for;
using cuda::dispatch_index;
using cuda::kThreads;
using cuda::kUnroll;

template <typename index_t>
using Indexer = cuda::ChannelIndexer<index_t>;

constexpr int kReduceThreads = 512;
constexpr int kFinishThreads = 32;  // a warp a channel adds its chunks' sums: at most 4096 x 16 bytes in all
constexpr int64_t kMaxLanes = 32;   // channels a channels-last reduction block reads side by side: a warp
// Blocks a reduction aims at: 8 to 16 waves of 512-thread blocks on an H100 (132 SMs, 2 to 4 such
// blocks each: ptxas gives the sm_90 reduction kernels 53 to 72 registers a thread), so that a wave's
// tail costs little; a constant, not the device's count, so that the sums' order, hence their bits,
// is the same on every GPU.
constexpr int64_t kTargetBlocks = 4096;
static_assert(2 * kReduceThreads * sizeof(double) <= cuda::kMaxSharedBytes, "static shared memory");

// How a per-channel reduction over z seen as [N, C, S] (count = N*S elements a channel) is split:
// tiles of `lanes` channels (1 when contiguous; up to a warp's 32 side by side when channels-last,
// so a warp reads one stretch of a row), each cut into `chunks` of chunk_len consecutive elements of
// its channels; one block per (tile, chunk), its threads `lanes` wide and `rows` deep. Partial sums
// per (channel, chunk) are added in chunk order by a second kernel (none when chunks == 1). Decided
// by the shape alone: the same order, hence the same bits, everywhere.
struct ReducePlan {
  int64_t C, S, count, lanes, rows, tiles, chunks, chunk_len;
  bool channels_last;
  unsigned int blocks() const { return static_cast<unsigned int>(tiles * chunks); }
};

ReducePlan reduce_plan(const Geometry& g, int64_t least_items = CNNREPRO_REDUCE_ITEMS) {
  const int64_t count = g.N * g.S;
  const int64_t lanes = g.channels_last ? std::min(g.C, kMaxLanes) : 1;
  const int64_t rows = kReduceThreads / lanes, tiles = (g.C + lanes - 1) / lanes;
  TORCH_CHECK(g.C <= cuda::kMaxGridX, "cnnrepro::conv_bn_relu: ", g.C,
              " channels; the CUDA kernels take at most 2^31 - 1 (a block each)");
  const int64_t least = rows * std::max<int64_t>(least_items, 1);
  const int64_t most_chunks = std::max<int64_t>(1, std::min(kTargetBlocks, cuda::kMaxGridX) / tiles);
  const int64_t wanted = std::clamp<int64_t>((count + least - 1) / least, 1, most_chunks);
  const int64_t chunk_len = std::max((count + wanted - 1) / wanted + rows - 1, rows) / rows * rows;  // whole passes
  const int64_t chunks = std::max<int64_t>(1, (count + chunk_len - 1) / chunk_len);
  return {g.C, g.S, count, lanes, rows, tiles, chunks, chunk_len, g.channels_last};
}

// Sums (a, b) over the `rows` threads of each lane (thread = row * lanes + lane) in a fixed tree; the
// result is in a[lane], b[lane]. Every thread of the block calls it.
__device__ inline void lane_sum(double* a, double* b, int lanes, int rows) {
  int half = 1;
  while (half < rows) half *= 2;
  const int row = threadIdx.x / lanes;
  for (half /= 2; half > 0; half /= 2) {
    __syncthreads();
    if (row < half && row + half < rows) {
      a[threadIdx.x] += a[threadIdx.x + half * lanes];
      b[threadIdx.x] += b[threadIdx.x + half * lanes];
    }
  }
  __syncthreads();
}

// The block's (tile, chunk) of a plan: calls term(offset, a, b) for each element of this thread's
// channel in the chunk, in order, kUnroll at a time (their loads in flight together), and leaves the
// lanes' sums in a[lane], b[lane]. Returns this thread's channel.
template <typename index_t, typename Term>
__device__ inline int64_t chunk_sums(const ReducePlan& r, const cuda::Divider<index_t>& by_s, const Term& term,
                                     double* a_shared, double* b_shared) {
  const int64_t tile = blockIdx.x / r.chunks, chunk = blockIdx.x % r.chunks;
  const int lanes = static_cast<int>(r.lanes), rows = static_cast<int>(r.rows);
  const int lane = threadIdx.x % lanes, row = threadIdx.x / lanes;
  const int64_t c = tile * lanes + lane;
  const int64_t begin = chunk * r.chunk_len + row, end = min(r.count, (chunk + 1) * r.chunk_len);
  double a = 0, b = 0;
  if (row < rows && c < r.C) {
    const index_t C = static_cast<index_t>(r.C), S = static_cast<index_t>(r.S), ch = static_cast<index_t>(c);
    // contiguous: element k of the channel is (n, s) = divmod(k, S) at (n * C + c) * S + s, walked
    // without dividing again: a step of `rows` is step_n planes and step_s positions.
    index_t n = 0, s = 0, step_n = 0, step_s = 0;
    if (!r.channels_last && begin < end) {
      const auto q = by_s.divmod(static_cast<index_t>(begin));
      n = q.quotient;
      s = q.remainder;
      step_n = static_cast<index_t>(rows / r.S);
      step_s = static_cast<index_t>(rows % r.S);
    }
    for (int64_t k = begin; k < end; k += int64_t{rows} * kUnroll) {
      double ta[kUnroll], tb[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (k + int64_t{u} * rows >= end) break;
        index_t offset;
        if (r.channels_last) {
          offset = static_cast<index_t>(k + int64_t{u} * rows) * C + ch;
        } else {
          offset = (n * C + ch) * S + s;
          n += step_n;
          s += step_s;
          if (s >= S) {
            s -= S;
            ++n;
          }
        }
        term(offset, ta[u], tb[u]);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (k + int64_t{u} * rows >= end) break;
        a += ta[u];
        b += tb[u];
      }
    }
  }
  a_shared[threadIdx.x] = a;
  b_shared[threadIdx.x] = b;
  lane_sum(a_shared, b_shared, lanes, rows);
  return c;
}

// After chunk_sums: with one chunk the lanes' sums are final (finish(c, a, b)); else they go to
// partial[(c * chunks + chunk) * 2 + {0, 1}] for add_chunks_kernel.
template <typename Finish>
__device__ inline void finish_or_store(const ReducePlan& r, int64_t c, const double* a, const double* b,
                                       const Finish& finish, double* __restrict__ partial) {
  const int lanes = static_cast<int>(r.lanes);
  if (static_cast<int>(threadIdx.x) >= lanes || c >= r.C) return;
  if (r.chunks == 1) {
    finish(c, a[threadIdx.x], b[threadIdx.x]);
  } else {
    const int64_t at = (c * r.chunks + blockIdx.x % r.chunks) * 2;
    partial[at] = a[threadIdx.x];
    partial[at + 1] = b[threadIdx.x];
  }
}

// One block per channel: its chunks' partial sums added in a fixed tree, then finish(c, a, b).
template <typename Finish>
__global__ void add_chunks_kernel(const double* __restrict__ partial, int64_t chunks, Finish finish) {
  __shared__ double sum_a[kFinishThreads], sum_b[kFinishThreads];
  const int64_t c = blockIdx.x;
  double a = 0, b = 0;
  for (int64_t j = threadIdx.x; j < chunks; j += blockDim.x) {
    a += partial[(c * chunks + j) * 2];
    b += partial[(c * chunks + j) * 2 + 1];
  }
  sum_a[threadIdx.x] = a;
  sum_b[threadIdx.x] = b;
  lane_sum(sum_a, sum_b, 1, blockDim.x);
  if (threadIdx.x == 0) finish(c, sum_a[0], sum_b[0]);
}

// The statistics' terms: z - K and (z - K)^2, with the channel's shift K (see conv_bn_relu.h).
template <typename scalar_t, typename index_t>
struct StatisticsTerm {
  const scalar_t* z;
  double shift;
  __device__ void operator()(index_t i, double& a, double& b) const {
    const double v = static_cast<double>(z[i]) - shift;
    a = v;
    b = v * v;
  }
};

// The channel's first element, whose value (if finite) is its shift.
__device__ inline int64_t first_of_channel(const ReducePlan& r, int64_t c) { return r.channels_last ? c : c * r.S; }

// mean and biased variance from the channel's sums.
template <typename scalar_t>
struct StatisticsFinish {
  const scalar_t* z;
  scalar_t *mean, *var;
  ReducePlan r;
  __device__ void operator()(int64_t c, double sum, double sum_sq) const {
    const double shift = channel_shift(static_cast<double>(z[first_of_channel(r, c)]));
    const double m = sum / r.count;
    mean[c] = static_cast<scalar_t>(shift + m);
    var[c] = static_cast<scalar_t>(shifted_variance(m, sum_sq / r.count));
  }
};

// The batch mean and biased variance per channel (sums of z - K in double).
template <typename scalar_t, typename index_t>
__global__ void statistics_kernel(const scalar_t* __restrict__ z, ReducePlan r, cuda::Divider<index_t> by_s,
                                  StatisticsFinish<scalar_t> finish, double* __restrict__ partial) {
  __shared__ double sum[kReduceThreads], sum_sq[kReduceThreads];
  const int64_t tile_c = (blockIdx.x / r.chunks) * r.lanes + threadIdx.x % r.lanes;
  const double shift = tile_c < r.C ? channel_shift(static_cast<double>(z[first_of_channel(r, tile_c)])) : 0.0;
  const int64_t c = chunk_sums<index_t>(r, by_s, StatisticsTerm<scalar_t, index_t>{z, shift}, sum, sum_sq);
  finish_or_store(r, c, sum, sum_sq, finish, partial);
}

// Per channel: scale, beta, invstd and mean of the normalization in the op math type (double for
// float64), from the statistics given, so the forward and the backward (which recomputes the ReLU
// mask) see the very same numbers.
template <typename scalar_t, typename opmath_t>
__global__ void affine_kernel(const scalar_t* __restrict__ mean, const scalar_t* __restrict__ var,
                              const scalar_t* __restrict__ gamma, const scalar_t* __restrict__ beta,
                              opmath_t* __restrict__ affine, int64_t C, double eps) {
  for (int64_t c = cuda::thread_item(); c < C; c += cuda::grid_stride()) {
    const double invstd = 1.0 / sqrt(static_cast<double>(var[c]) + eps);
    const double scale = static_cast<double>(gamma_of(gamma, c)) * invstd;
    affine[c] = static_cast<opmath_t>(scale);
    affine[C + c] = static_cast<opmath_t>(beta_of(beta, c));
    affine[2 * C + c] = static_cast<opmath_t>(invstd);
    affine[3 * C + c] = static_cast<opmath_t>(mean[c]);
  }
}

// y = relu((z - mean) * scale + beta); y may be z (inference normalizes in place: each thread loads
// its items before it stores them, and no other thread touches them), so no __restrict__.
template <typename scalar_t, typename opmath_t, typename index_t>
__global__ void normalize_relu_kernel(const scalar_t* z, const opmath_t* __restrict__ affine, scalar_t* y,
                                      int64_t numel, Indexer<index_t> ix) {
  for (int64_t tile = cuda::first_tile(); tile < numel; tile += cuda::tile_stride()) {
    const int64_t first = tile + threadIdx.x;
    opmath_t v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (first + int64_t{u} * blockDim.x < numel) v[u] = static_cast<opmath_t>(z[first + int64_t{u} * blockDim.x]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (first + int64_t{u} * blockDim.x >= numel) break;
      const index_t i = static_cast<index_t>(first + int64_t{u} * blockDim.x), c = ix.channel(i);
      y[i] = static_cast<scalar_t>(relu((v[u] - affine[3 * ix.C + c]) * affine[c] + affine[ix.C + c]));
    }
  }
}

// dv = dy where the recomputed pre-ReLU value lets ReLU's gradient pass.
template <typename scalar_t, typename opmath_t, typename index_t>
__device__ inline opmath_t grad_past_relu(const scalar_t* z, const scalar_t* dy, const opmath_t* affine, index_t C,
                                          index_t c, index_t i) {
  const opmath_t v = (static_cast<opmath_t>(z[i]) - affine[3 * C + c]) * affine[c] + affine[C + c];
  return relu_passes(v) ? static_cast<opmath_t>(dy[i]) : opmath_t(0);
}

// The backward's terms: dv and dv * x_hat.
template <typename scalar_t, typename opmath_t, typename index_t>
struct BackwardTerm {
  const scalar_t *z, *dy;
  const opmath_t* affine;
  index_t C, c;
  double mu, invstd;
  __device__ void operator()(index_t i, double& a, double& b) const {
    const double dv = static_cast<double>(grad_past_relu(z, dy, affine, C, c, i));
    a = dv;
    b = dv * ((static_cast<double>(z[i]) - mu) * invstd);
  }
};

// dbeta = sum(dv), dgamma = sum(dv * x_hat), and the dz coefficients.
template <typename scalar_t, typename opmath_t>
struct BackwardFinish {
  const scalar_t* gamma;
  const opmath_t* affine;
  scalar_t *grad_gamma, *grad_beta;
  opmath_t* coef;
  ReducePlan r;
  __device__ void operator()(int64_t c, double sum_dv, double sum_dv_xhat) const {
    const double invstd = static_cast<double>(affine[2 * r.C + c]);
    grad_beta[c] = static_cast<scalar_t>(sum_dv);
    grad_gamma[c] = static_cast<scalar_t>(sum_dv_xhat);
    // dz = coef0 * (dv - coef1 - x_hat * coef2)
    coef[c] = static_cast<opmath_t>(static_cast<double>(gamma_of(gamma, c)) * invstd);
    coef[r.C + c] = static_cast<opmath_t>(sum_dv / r.count);
    coef[2 * r.C + c] = static_cast<opmath_t>(sum_dv_xhat / r.count);
  }
};

template <typename scalar_t, typename opmath_t, typename index_t>
__global__ void backward_reduce_kernel(const scalar_t* __restrict__ z, const scalar_t* __restrict__ dy,
                                       const scalar_t* __restrict__ mean, const opmath_t* __restrict__ affine,
                                       ReducePlan r, cuda::Divider<index_t> by_s,
                                       BackwardFinish<scalar_t, opmath_t> finish, double* __restrict__ partial) {
  __shared__ double sum_dv[kReduceThreads], sum_dv_xhat[kReduceThreads];
  const int64_t tile_c = (blockIdx.x / r.chunks) * r.lanes + threadIdx.x % r.lanes;
  const int64_t c = tile_c < r.C ? tile_c : 0;
  const BackwardTerm<scalar_t, opmath_t, index_t> term{z,
                                                       dy,
                                                       affine,
                                                       static_cast<index_t>(r.C),
                                                       static_cast<index_t>(c),
                                                       static_cast<double>(mean[c]),
                                                       static_cast<double>(affine[2 * r.C + c])};
  finish_or_store(r, chunk_sums<index_t>(r, by_s, term, sum_dv, sum_dv_xhat), sum_dv, sum_dv_xhat, finish, partial);
}

template <typename scalar_t, typename opmath_t, typename index_t>
__global__ void grad_conv_out_kernel(const scalar_t* __restrict__ z, const scalar_t* __restrict__ dy,
                                     const scalar_t* __restrict__ mean, const opmath_t* __restrict__ affine,
                                     const opmath_t* __restrict__ coef, scalar_t* __restrict__ dz, int64_t numel,
                                     Indexer<index_t> ix) {
  const index_t C = ix.C;
  for (int64_t tile = cuda::first_tile(); tile < numel; tile += cuda::tile_stride()) {
    const int64_t first = tile + threadIdx.x;
    opmath_t zv[kUnroll], dyv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (first + int64_t{u} * blockDim.x < numel) {
        zv[u] = static_cast<opmath_t>(z[first + int64_t{u} * blockDim.x]);
        dyv[u] = static_cast<opmath_t>(dy[first + int64_t{u} * blockDim.x]);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (first + int64_t{u} * blockDim.x >= numel) break;
      const index_t i = static_cast<index_t>(first + int64_t{u} * blockDim.x), c = ix.channel(i);
      const opmath_t x_hat = (zv[u] - static_cast<opmath_t>(mean[c])) * affine[2 * C + c];
      const opmath_t v = (zv[u] - affine[3 * C + c]) * affine[c] + affine[C + c];
      const opmath_t dv = relu_passes(v) ? dyv[u] : opmath_t(0);
      dz[i] = static_cast<scalar_t>(coef[c] * (dv - coef[C + c] - x_hat * coef[2 * C + c]));
    }
  }
}

// Runs a per-channel reduction: reduce(blocks, partial) launches the chunk kernel (partial: the
// chunks' sums, undefined with one chunk), then, with more than one chunk, add_chunks_kernel
// finishes each channel from them with make_finish(). (Data pointers are taken in the launches'
// arguments only, which the emulation's plan-only mode never evaluates.)
template <typename MakeFinish, typename Reduce>
void run_reduction(const ReducePlan& r, const at::Tensor& like, const MakeFinish& make_finish, const Reduce& reduce) {
  at::Tensor partial;
  if (r.chunks > 1) partial = at::empty({r.C * r.chunks * 2}, like.options().dtype(at::kDouble));
  reduce(r.blocks(), partial);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (r.chunks > 1) {
    CNNREPRO_LAUNCH(static_cast<unsigned int>(r.C), kFinishThreads, 0, at::cuda::getCurrentCUDAStream(),
                    add_chunks_kernel<decltype(make_finish())>)(partial.const_data_ptr<double>(), r.chunks,
                                                                make_finish());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// The chunks' sums for the chunk kernel: none with one chunk.
inline double* partial_sums(const at::Tensor& partial) {
  return partial.defined() ? partial.mutable_data_ptr<double>() : nullptr;
}

// The widest offset a conv-BN-ReLU kernel forms on z: its last, plus a reduction's run-out.
int64_t index_extent(const at::Tensor& z) { return z.numel() + int64_t{kReduceThreads} * kUnroll; }

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
  const int64_t numel = z.numel();
  if (numel == 0) return;
  const Geometry g = geometry_of(z);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "cnnrepro::conv_bn_relu normalize", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    dispatch_index(index_extent(z), [&](auto index) {
      using index_t = decltype(index);
      CNNREPRO_LAUNCH(blocks_for(numel, kThreads, kUnroll), kThreads, 0, at::cuda::getCurrentCUDAStream(),
                      normalize_relu_kernel<scalar_t, opmath_t, index_t>)(
          z.const_data_ptr<scalar_t>(), affine.const_data_ptr<opmath_t>(), y.mutable_data_ptr<scalar_t>(), numel,
          Indexer<index_t>(g));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_bn_relu_train_cuda(
    const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& bn_weight, const c10::optional<at::Tensor>& bn_bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, double eps) {
  const c10::cuda::CUDAGuard guard(input.device());
  ForwardCall call = prepare_forward(input, weight, bias, bn_weight, bn_bias, {stride, padding, dilation, groups}, eps);
  at::Tensor &z = call.z, &y = call.y, &mean = call.mean, &var = call.var;
  if (call.g.C == 0) return {y, z, mean, var};
  const ReducePlan r = reduce_plan(call.g);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "cnnrepro::conv_bn_relu_train", [&] {
    const auto finish = [&] {
      return StatisticsFinish<scalar_t>{z.const_data_ptr<scalar_t>(), mean.mutable_data_ptr<scalar_t>(),
                                        var.mutable_data_ptr<scalar_t>(), r};
    };
    dispatch_index(index_extent(z), [&](auto index) {
      using index_t = decltype(index);
      run_reduction(r, z, finish, [&](unsigned int blocks, const at::Tensor& partial) {
        CNNREPRO_LAUNCH(blocks, kReduceThreads, 0, stream, statistics_kernel<scalar_t, index_t>)(
            z.const_data_ptr<scalar_t>(), r, cuda::Divider<index_t>(std::max<int64_t>(r.S, 1)), finish(),
            partial_sums(partial));
      });
    });
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
  if (g.C > 0) {
    const ReducePlan r = reduce_plan(g);
    const int64_t numel = z.numel();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, z.scalar_type(), "cnnrepro::conv_bn_relu_train_backward", [&] {
          using opmath_t = at::opmath_type<scalar_t>;
          const auto finish = [&] {
            return BackwardFinish<scalar_t, opmath_t>{
                optional_ptr<scalar_t>(bn_weight),       affine.const_data_ptr<opmath_t>(),
                grad_gamma.mutable_data_ptr<scalar_t>(), grad_beta.mutable_data_ptr<scalar_t>(),
                coef.mutable_data_ptr<opmath_t>(),       r};
          };
          dispatch_index(index_extent(z), [&](auto index) {
            using index_t = decltype(index);
            run_reduction(r, z, finish, [&](unsigned int blocks, const at::Tensor& partial) {
              CNNREPRO_LAUNCH(blocks, kReduceThreads, 0, stream, backward_reduce_kernel<scalar_t, opmath_t, index_t>)(
                  z.const_data_ptr<scalar_t>(), dy.const_data_ptr<scalar_t>(), mean.const_data_ptr<scalar_t>(),
                  affine.const_data_ptr<opmath_t>(), r, cuda::Divider<index_t>(std::max<int64_t>(r.S, 1)), finish(),
                  partial_sums(partial));
            });
            if (numel == 0) return;
            CNNREPRO_LAUNCH(blocks_for(numel, kThreads, kUnroll), kThreads, 0, stream,
                            grad_conv_out_kernel<scalar_t, opmath_t, index_t>)(
                z.const_data_ptr<scalar_t>(), dy.const_data_ptr<scalar_t>(), mean.const_data_ptr<scalar_t>(),
                affine.const_data_ptr<opmath_t>(), coef.const_data_ptr<opmath_t>(), dz.mutable_data_ptr<scalar_t>(),
                numel, Indexer<index_t>(g));
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
        });
  }
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

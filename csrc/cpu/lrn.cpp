// LRN on the CPU. The work is cut into tiles of all C channels x T spatial positions; within a
// tile every loop runs over the T contiguous positions, so the compiler vectorizes it. Contiguous
// inputs are read and written in place; channels-last tiles are transposed into a small buffer
// first. The window sums are direct (no running sum), so a NaN or inf touches only the windows
// that hold it, exactly as in F.local_response_norm, and the order of summation is fixed.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../lrn.h"
#include "loops.h"

namespace cnnrepro::lrn {
namespace {

using cpu::for_each_block;
using cpu::kLanes;

constexpr int64_t kTile = 128;  // spatial positions per tile

// A [C][T] block: element (c, t) at data[c * cstride + t].
template <typename T>
struct Block {
  T* data;
  int64_t cstride;
  T* row(int64_t c) const { return data + c * cstride; }
};

// sum[u] = sum over the channels [first, last] of rows[j][t0 + u]^2, in order of j.
template <typename scalar_t, typename acc_t, typename Width>
inline void window_sum_squares(Block<const scalar_t> x, Channels window, int64_t t0, Width width, acc_t* sum) {
  for (int u = 0; u < width; ++u) sum[u] = 0;
  for (int64_t j = window.first; j <= window.last; ++j) {
    const scalar_t* xj = x.row(j) + t0;
    for (int u = 0; u < width; ++u) {
      const acc_t v = static_cast<acc_t>(xj[u]);
      sum[u] += v * v;
    }
  }
}

template <BetaKind kind, typename scalar_t>
void forward_tile(Block<const scalar_t> x, Block<scalar_t> y, int64_t C, int64_t T, const Params& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t size = p.size, alpha = p.alpha, beta = p.beta, k = p.k;
  for (int64_t c = 0; c < C; ++c) {
    const Channels window = p.window(c, C);
    const scalar_t* xc = x.row(c);
    scalar_t* yc = y.row(c);
    for_each_block(T, [&](int64_t t0, auto width) {
      acc_t sum[kLanes];
      window_sum_squares(x, window, t0, width, sum);
      for (int u = 0; u < width; ++u) {
        const acc_t scale = scale_from_sum(sum[u], size, alpha, k);
        yc[t0 + u] = static_cast<scalar_t>(static_cast<acc_t>(xc[t0 + u]) / pow_beta<kind>(scale, beta));
      }
    });
  }
}

// Per-thread scratch, allocated once per parallel chunk: the backward's
// 1/scale^beta and dy*x/(scale^beta*scale) per (c, t), and the channels-last transposes.
template <typename scalar_t>
struct Workspace {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<acc_t> inv_pow, ratio;
  std::vector<scalar_t> in0, in1, out;
  Workspace(const Geometry& g, bool backward)
      : inv_pow(backward ? g.C * kTile : 0),
        ratio(backward ? g.C * kTile : 0),
        in0(g.channels_last ? g.C * kTile : 0),
        in1(g.channels_last && backward ? g.C * kTile : 0),
        out(g.channels_last ? g.C * kTile : 0) {}
};

template <BetaKind kind, typename scalar_t>
void backward_tile(Block<const scalar_t> dy, Block<const scalar_t> x, Block<scalar_t> dx, int64_t C, int64_t T,
                   const Params& p, Workspace<scalar_t>& s) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t size = p.size, alpha = p.alpha, beta = p.beta, k = p.k;
  const acc_t coef = acc_t(2) * alpha * beta / size;
  for (int64_t c = 0; c < C; ++c) {
    const Channels window = p.window(c, C);
    const scalar_t *xc = x.row(c), *dyc = dy.row(c);
    acc_t *inv_pow = s.inv_pow.data() + c * T, *ratio = s.ratio.data() + c * T;
    for_each_block(T, [&](int64_t t0, auto width) {
      acc_t sum[kLanes];
      window_sum_squares(x, window, t0, width, sum);
      for (int u = 0; u < width; ++u) {
        const int64_t t = t0 + u;
        const acc_t scale = scale_from_sum(sum[u], size, alpha, k);
        inv_pow[t] = acc_t(1) / pow_beta<kind>(scale, beta);
        ratio[t] = static_cast<acc_t>(dyc[t]) * static_cast<acc_t>(xc[t]) * inv_pow[t] / scale;
      }
    });
  }
  // The mirrored window: channel c collects the ratios of every c' whose window holds c.
  const Block<const acc_t> ratios{s.ratio.data(), T};
  for (int64_t c = 0; c < C; ++c) {
    const Channels mirrored = p.mirrored_window(c, C);
    const scalar_t *xc = x.row(c), *dyc = dy.row(c);
    const acc_t* inv_pow = s.inv_pow.data() + c * T;
    scalar_t* dxc = dx.row(c);
    for_each_block(T, [&](int64_t t0, auto width) {
      acc_t collected[kLanes];
      for (int u = 0; u < width; ++u) collected[u] = 0;
      for (int64_t j = mirrored.first; j <= mirrored.last; ++j) {
        const acc_t* rj = ratios.row(j) + t0;
        for (int u = 0; u < width; ++u) collected[u] += rj[u];
      }
      for (int u = 0; u < width; ++u) {
        const int64_t t = t0 + u;
        dxc[t] = static_cast<scalar_t>(static_cast<acc_t>(dyc[t]) * inv_pow[t] -
                                       coef * static_cast<acc_t>(xc[t]) * collected[u]);
      }
    });
  }
}

// Where a tile's [C][T] block lives: in the tensor itself when contiguous; in a buffer when
// channels-last, gathered from (load) or scattered back to (store) the tensor's [T][C] block.
struct TileIO {
  const Geometry& g;
  int64_t n, s0, T;

  int64_t offset() const { return g.channels_last ? (n * g.S + s0) * g.C : n * g.C * g.S + s0; }

  template <typename scalar_t>
  Block<const scalar_t> load(const scalar_t* base, std::vector<scalar_t>& buffer) const {
    if (!g.channels_last) return {base + offset(), g.S};
    const scalar_t* src = base + offset();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < g.C; ++c) buffer[c * T + t] = src[t * g.C + c];
    return {buffer.data(), T};
  }

  template <typename scalar_t>
  Block<scalar_t> target(scalar_t* base, std::vector<scalar_t>& buffer) const {
    return g.channels_last ? Block<scalar_t>{buffer.data(), T} : Block<scalar_t>{base + offset(), g.S};
  }

  template <typename scalar_t>
  void store(scalar_t* base, const std::vector<scalar_t>& buffer) const {
    if (!g.channels_last) return;
    scalar_t* dst = base + offset();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < g.C; ++c) dst[t * g.C + c] = buffer[c * T + t];
  }
};

// Runs tile_fn(TileIO, Workspace&) over every (sample, spatial tile) in parallel.
template <typename scalar_t, typename TileFn>
void for_each_tile(const Geometry& g, bool backward, TileFn&& tile_fn) {
  const int64_t tiles_per_sample = (g.S + kTile - 1) / kTile;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, g.C * kTile));
  at::parallel_for(0, g.N * tiles_per_sample, grain, [&](int64_t begin, int64_t end) {
    Workspace<scalar_t> workspace(g, backward);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / tiles_per_sample, s0 = (i % tiles_per_sample) * kTile;
      tile_fn(TileIO{g, n, s0, std::min(kTile, g.S - s0)}, workspace);
    }
  });
}

at::Tensor lrn_forward_cpu(const at::Tensor& input, int64_t size, double alpha, double beta, double k) {
  const Params p{size, alpha, beta, k};
  const ForwardCall call = prepare_forward(input, p);
  const Geometry& g = call.g;
  if (call.x.numel() == 0) return call.y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, call.x.scalar_type(), "cnnrepro::lrn", [&] {
    const scalar_t* xp = call.x.const_data_ptr<scalar_t>();
    scalar_t* yp = call.y.mutable_data_ptr<scalar_t>();
    dispatch_beta(beta, [&](auto kind) {
      for_each_tile<scalar_t>(g, /*backward=*/false, [&](const TileIO& io, Workspace<scalar_t>& ws) {
        forward_tile<kind.value>(io.load(xp, ws.in0), io.target(yp, ws.out), g.C, io.T, p);
        io.store(yp, ws.out);
      });
    });
  });
  return call.y;
}

at::Tensor lrn_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input, int64_t size, double alpha,
                            double beta, double k) {
  const Params p{size, alpha, beta, k};
  const BackwardCall call = prepare_backward(grad_output, input, p);
  const Geometry& g = call.g;
  if (call.x.numel() == 0) return call.dx;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, call.x.scalar_type(), "cnnrepro::lrn_backward", [&] {
    const scalar_t *xp = call.x.const_data_ptr<scalar_t>(), *dyp = call.dy.const_data_ptr<scalar_t>();
    scalar_t* dxp = call.dx.mutable_data_ptr<scalar_t>();
    dispatch_beta(beta, [&](auto kind) {
      for_each_tile<scalar_t>(g, /*backward=*/true, [&](const TileIO& io, Workspace<scalar_t>& ws) {
        backward_tile<kind.value>(io.load(dyp, ws.in1), io.load(xp, ws.in0), io.target(dxp, ws.out), g.C, io.T, p, ws);
        io.store(dxp, ws.out);
      });
    });
  });
  return call.dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnrepro, CPU, m) {
  m.impl("lrn", &lrn_forward_cpu);
  m.impl("lrn_backward", &lrn_backward_cpu);
}

}  // namespace cnnrepro::lrn

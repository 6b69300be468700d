// LRN on the CPU, written to stream: each pass reads its inputs once and writes its output once, in
// the tensor's own layout, with every vector loop along the contiguous dimension.
//
// Contiguous (NCHW): a task is one sample's chunk of spatial positions; it walks the channels in
// order, so the window's rows (a few KB each) stay in L1 while each new row streams in. The
// backward keeps the per-channel terms it needs later (1/scale^beta and the ratio
// dy*x/(scale^beta*scale)) in a ring of rows, one per channel of the window.
// Channels-last (NHWC): a task is a run of positions; the window slides along the position's own
// contiguous channels, over a copy of its squares padded with zeros (adding a zero leaves a sum's
// bits as they were, so the padded and the clipped windows give the same bits).
// Window sums are direct (no running sum): a NaN or inf touches only the windows that hold it, as in
// F.local_response_norm, and every sum adds its channels in ascending order, on either layout.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../lrn.h"
#include "loops.h"
#include "output.h"

namespace cnnrepro::lrn {
namespace {

using cpu::for_each_block;
using cpu::kLanes;

// Spatial positions per contiguous task: a row of 4 KB of float32, a page, so the prefetcher
// follows each row; the window's rows and the backward's ring stay within L1 and L2.
constexpr int64_t kChunk = 1024;

// Rows of one sample's chunk: element (c, t) at data[c * cstride + t].
template <typename T>
struct Rows {
  T* data;
  int64_t cstride;
  T* row(int64_t c) const { return data + c * cstride; }
};

// sum[u] = the squares of rows [first, last] at position t0 + u, added in order of the row.
template <typename acc_t, typename scalar_t, typename Width>
inline void window_sum_squares(Rows<const scalar_t> x, Channels window, int64_t t0, Width width, acc_t* sum) {
  for (int u = 0; u < width; ++u) sum[u] = 0;
  for (int64_t j = window.first; j <= window.last; ++j) {
    const scalar_t* xj = x.row(j) + t0;
    for (int u = 0; u < width; ++u) {
      const acc_t v = static_cast<acc_t>(xj[u]);
      sum[u] += v * v;
    }
  }
}

// The constants of one call, in the accumulation type.
template <typename acc_t>
struct Constants {
  acc_t size, alpha, beta, k, coef;  // coef = 2 alpha beta / size, the backward's factor
  explicit Constants(const Params& p)
      : size(p.size), alpha(p.alpha), beta(p.beta), k(p.k), coef(acc_t(2) * alpha * beta / size) {}
};

template <BetaKind kind, typename scalar_t>
void forward_chunk_contiguous(Rows<const scalar_t> x, Rows<scalar_t> y, int64_t C, int64_t T, const Params& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const Constants<acc_t> k(p);
  for (int64_t c = 0; c < C; ++c) {
    const Channels window = p.window(c, C);
    const scalar_t* xc = x.row(c);
    scalar_t* yc = y.row(c);
    for_each_block(T, [&](int64_t t0, auto width) {
      acc_t sum[kLanes];
      window_sum_squares(x, window, t0, width, sum);
      for (int u = 0; u < width; ++u) {
        const acc_t scale = scale_from_sum(sum[u], k.size, k.alpha, k.k);
        yc[t0 + u] = static_cast<scalar_t>(static_cast<acc_t>(xc[t0 + u]) / pow_beta<kind>(scale, k.beta));
      }
    });
  }
}

// The backward's ring: rows of 1/scale^beta and of the ratio for the channels still needed, channel
// c in row c % rows. A window spans at most min(size, C) channels, so that many rows never collide.
template <typename acc_t>
struct Ring {
  int64_t rows, T;
  std::vector<acc_t> inv_pow, ratio;
  Ring(const Params& p, int64_t C, int64_t T) : rows(std::min(p.size, C)), T(T), inv_pow(rows * T), ratio(rows * T) {}
  acc_t* inv_pow_row(int64_t c) { return inv_pow.data() + (c % rows) * T; }
  acc_t* ratio_row(int64_t c) { return ratio.data() + (c % rows) * T; }
};

// Channel c's gradient needs the ratios of its mirrored window [c - after, c + before]: the walk
// computes channel c + before's terms, then channel c's gradient from the ring.
template <BetaKind kind, typename scalar_t>
void backward_chunk_contiguous(Rows<const scalar_t> dy, Rows<const scalar_t> x, Rows<scalar_t> dx, int64_t C, int64_t T,
                               const Params& p, Ring<at::opmath_type<scalar_t>>& ring) {
  using acc_t = at::opmath_type<scalar_t>;
  const Constants<acc_t> k(p);
  const int64_t lead = std::min(p.before(), C - 1);
  for (int64_t step = 0; step < C + lead; ++step) {
    if (const int64_t c = step; c < C) {
      const Channels window = p.window(c, C);
      const scalar_t *xc = x.row(c), *dyc = dy.row(c);
      acc_t *inv_pow = ring.inv_pow_row(c), *ratio = ring.ratio_row(c);
      for_each_block(T, [&](int64_t t0, auto width) {
        acc_t sum[kLanes];
        window_sum_squares(x, window, t0, width, sum);
        for (int u = 0; u < width; ++u) {
          const int64_t t = t0 + u;
          const acc_t scale = scale_from_sum(sum[u], k.size, k.alpha, k.k);
          inv_pow[t] = acc_t(1) / pow_beta<kind>(scale, k.beta);
          ratio[t] = static_cast<acc_t>(dyc[t]) * static_cast<acc_t>(xc[t]) * inv_pow[t] / scale;
        }
      });
    }
    if (const int64_t c = step - lead; c >= 0) {
      const Channels mirrored = p.mirrored_window(c, C);
      const scalar_t *xc = x.row(c), *dyc = dy.row(c);
      const acc_t* inv_pow = ring.inv_pow_row(c);
      scalar_t* dxc = dx.row(c);
      for_each_block(T, [&](int64_t t0, auto width) {
        acc_t collected[kLanes];
        for (int u = 0; u < width; ++u) collected[u] = 0;
        for (int64_t j = mirrored.first; j <= mirrored.last; ++j) {
          const acc_t* rj = ring.ratio_row(j) + t0;
          for (int u = 0; u < width; ++u) collected[u] += rj[u];
        }
        for (int u = 0; u < width; ++u) {
          const int64_t t = t0 + u;
          dxc[t] = static_cast<scalar_t>(static_cast<acc_t>(dyc[t]) * inv_pow[t] -
                                         k.coef * static_cast<acc_t>(xc[t]) * collected[u]);
        }
      });
    }
  }
}

// Runs chunk_fn(offset, T, scratch) over every (sample, chunk of positions) of a contiguous tensor
// in parallel, offset being the chunk's first element; each thread's scratch is make_scratch(T_max).
template <typename MakeScratch, typename ChunkFn>
void for_each_chunk(const Geometry& g, MakeScratch&& make_scratch, ChunkFn&& chunk_fn) {
  const int64_t chunks = (g.S + kChunk - 1) / kChunk, T_max = std::min(kChunk, g.S);
  at::parallel_for(0, g.N * chunks, cpu::grain_for(g.C * T_max), [&](int64_t begin, int64_t end) {
    auto scratch = make_scratch(T_max);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / chunks, s0 = (i % chunks) * kChunk;
      chunk_fn(n * g.C * g.S + s0, std::min(kChunk, g.S - s0), scratch);
    }
  });
}

// One position's channels, widened and padded for a window that slides along them: `pad` zeros,
// then the C values, then `pad` zeros (pad covers either side of any window).
template <typename acc_t>
struct PaddedChannels {
  int64_t C, pad;
  std::vector<acc_t> values;
  PaddedChannels(int64_t C, int64_t pad) : C(C), pad(pad), values(C + 2 * pad, acc_t(0)) {}
  acc_t* channels() { return values.data() + pad; }  // channel c at channels()[c]
  // sums[c] = the sum of channels()[c + first .. c + first + count - 1], added in order; channels
  // out of range read the zero padding. One pass per window offset over all channels: plain loops
  // over contiguous data, which the compiler vectorizes. Offsets that reach no channel at all (a
  // window wider than C) add only zeros and are skipped.
  void window_sums(int64_t first, int64_t count, acc_t* sums) const {
    std::fill(sums, sums + C, acc_t(0));
    const int64_t j_end = std::min(count, C - first);
    for (int64_t j = std::max<int64_t>(0, 1 - C - first); j < j_end; ++j) {
      const acc_t* shifted = values.data() + pad + first + j;
      for (int64_t c = 0; c < C; ++c) sums[c] += shifted[c];
    }
  }
};

// Per-task scratch for the channels-last passes: the squares, the scales' terms, the ratios.
template <typename scalar_t>
struct PositionScratch {
  using acc_t = at::opmath_type<scalar_t>;
  PaddedChannels<acc_t> squares, ratios;
  std::vector<acc_t> sums, inv_pow;
  PositionScratch(const Params& p, int64_t C) : squares(C, p.size), ratios(C, p.size), sums(C), inv_pow(C) {}

  // sums[c] = the squares of W(c)'s channels of one position's x, added in order of the channel.
  acc_t* window_sums_of_squares(const scalar_t* x, const Params& p) {
    acc_t* out = squares.channels();
    for (int64_t c = 0; c < squares.C; ++c) {
      const acc_t v = static_cast<acc_t>(x[c]);
      out[c] = v * v;
    }
    squares.window_sums(-p.before(), p.size, sums.data());
    return sums.data();
  }
};

template <BetaKind kind, typename scalar_t>
void forward_position_channels_last(const scalar_t* x, scalar_t* y, int64_t C, const Params& p,
                                    PositionScratch<scalar_t>& s) {
  using acc_t = at::opmath_type<scalar_t>;
  const Constants<acc_t> k(p);
  const acc_t* sums = s.window_sums_of_squares(x, p);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t scale = scale_from_sum(sums[c], k.size, k.alpha, k.k);
    y[c] = static_cast<scalar_t>(static_cast<acc_t>(x[c]) / pow_beta<kind>(scale, k.beta));
  }
}

template <BetaKind kind, typename scalar_t>
void backward_position_channels_last(const scalar_t* dy, const scalar_t* x, scalar_t* dx, int64_t C, const Params& p,
                                     PositionScratch<scalar_t>& s) {
  using acc_t = at::opmath_type<scalar_t>;
  const Constants<acc_t> k(p);
  acc_t *ratios = s.ratios.channels(), *inv_pow = s.inv_pow.data();
  acc_t* sums = s.window_sums_of_squares(x, p);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t scale = scale_from_sum(sums[c], k.size, k.alpha, k.k);
    inv_pow[c] = acc_t(1) / pow_beta<kind>(scale, k.beta);
    ratios[c] = static_cast<acc_t>(dy[c]) * static_cast<acc_t>(x[c]) * inv_pow[c] / scale;
  }
  acc_t* collected = sums;  // the sums are spent: their row takes the collected ratios
  s.ratios.window_sums(-p.after(), p.size, collected);
  for (int64_t c = 0; c < C; ++c)
    dx[c] = static_cast<scalar_t>(static_cast<acc_t>(dy[c]) * inv_pow[c] -
                                  k.coef * static_cast<acc_t>(x[c]) * collected[c]);
}

// Runs position_fn(offset, scratch) over every position of a channels-last tensor in parallel,
// offset being the position's first element.
template <typename scalar_t, typename PositionFn>
void for_each_position(const Geometry& g, const Params& p, PositionFn&& position_fn) {
  at::parallel_for(0, g.N * g.S, cpu::grain_for(g.C * std::min<int64_t>(p.size, g.C)), [&](int64_t begin, int64_t end) {
    PositionScratch<scalar_t> scratch(p, g.C);
    for (int64_t i = begin; i < end; ++i) position_fn(i * g.C, scratch);
  });
}

at::Tensor lrn_forward_cpu(const at::Tensor& input, int64_t size, double alpha, double beta, double k) {
  const Params p{size, alpha, beta, k};
  const ForwardCall call = prepare_forward(input, p);
  const Geometry& g = call.g;
  if (call.x.numel() == 0) return call.y;
  cpu::advise_huge_pages(call.y);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, call.x.scalar_type(), "cnnrepro::lrn", [&] {
    const scalar_t* xp = call.x.const_data_ptr<scalar_t>();
    scalar_t* yp = call.y.mutable_data_ptr<scalar_t>();
    dispatch_beta(beta, [&](auto kind) {
      if (g.channels_last) {
        for_each_position<scalar_t>(g, p, [&](int64_t offset, PositionScratch<scalar_t>& s) {
          forward_position_channels_last<kind.value>(xp + offset, yp + offset, g.C, p, s);
        });
      } else {
        const auto no_scratch = [](int64_t) { return 0; };
        for_each_chunk(g, no_scratch, [&](int64_t offset, int64_t T, int) {
          forward_chunk_contiguous<kind.value>(Rows<const scalar_t>{xp + offset, g.S}, Rows<scalar_t>{yp + offset, g.S},
                                               g.C, T, p);
        });
      }
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
  cpu::advise_huge_pages(call.dx);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, call.x.scalar_type(), "cnnrepro::lrn_backward", [&] {
    const scalar_t *xp = call.x.const_data_ptr<scalar_t>(), *dyp = call.dy.const_data_ptr<scalar_t>();
    scalar_t* dxp = call.dx.mutable_data_ptr<scalar_t>();
    dispatch_beta(beta, [&](auto kind) {
      if (g.channels_last) {
        for_each_position<scalar_t>(g, p, [&](int64_t offset, PositionScratch<scalar_t>& s) {
          backward_position_channels_last<kind.value>(dyp + offset, xp + offset, dxp + offset, g.C, p, s);
        });
      } else {
        using Ring_ = Ring<at::opmath_type<scalar_t>>;
        using Inputs = Rows<const scalar_t>;
        const auto make_ring = [&](int64_t T_max) { return Ring_(p, g.C, T_max); };
        for_each_chunk(g, make_ring, [&](int64_t offset, int64_t T, Ring_& ring) {
          backward_chunk_contiguous<kind.value>(Inputs{dyp + offset, g.S}, Inputs{xp + offset, g.S},
                                                Rows<scalar_t>{dxp + offset, g.S}, g.C, T, p, ring);
        });
      }
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

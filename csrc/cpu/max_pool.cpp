// 2-D max pooling with argmax on the CPU.
//
// Contiguous (NCHW): one (n, c) plane per task, row by row: float32 interior outputs eight adjacent
// ones a vector, their maxima in registers through the window's taps (vec8.h); other dtypes tap by tap
// across the row, auto-vectorized; float32 planes too narrow for either are pooled per sample through
// a channels-last transpose. Windows hanging into the padding are scanned one by one.
// Channels-last (NHWC): for each output position, tap by tap, each tap's channels in one sweep
// (float32 eight lanes at a time); other dtypes channel by channel.
// Backward: a scatter in output order, by tasks that own disjoint slices of the input gradient
// (a plane; a block of channels of one sample), so it is deterministic and sums in native's order.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../max_pool.h"
#include "output.h"
#include "vec8.h"

namespace cnnrepro::max_pool {
namespace {

// The in-bounds taps of one window along one axis: [first, end) stepping by the dilation.
struct Taps {
  int64_t first, end, step;
};

inline Taps taps(int64_t out_pos, int64_t stride, int64_t pad, int64_t kernel, int64_t dilation, int64_t size) {
  const int64_t start = out_pos * stride - pad;
  return {first_tap(start, dilation), std::min(start + (kernel - 1) * dilation + 1, size), dilation};
}

// Calls f with the stride as a compile-time constant for the common strides 1 and 2, so strided
// loads over a row become shuffles instead of gathers; any other stride stays a runtime value.
template <typename F>
inline void dispatch_stride(int64_t stride, F&& f) {
  if (stride == 1) return f(std::integral_constant<int64_t, 1>{});
  if (stride == 2) return f(std::integral_constant<int64_t, 2>{});
  return f(stride);
}

// The output columns whose whole window lies inside the row: [lo, hi).
inline std::pair<int64_t, int64_t> interior_columns(const PoolGeometry& g) {
  const Window& w = g.win;
  const int64_t lo = std::min(g.OW, (w.pw + w.sw - 1) / w.sw);
  const int64_t last_start = g.W - 1 - (w.kw - 1) * w.dw + w.pw;  // the last window start that fits, + pad
  const int64_t hi = last_start < 0 ? lo : std::clamp(last_start / w.sw + 1, lo, g.OW);
  return {lo, hi};
}

// One output by scanning its window in row-major order (used at the left and right edges).
template <typename scalar_t>
void forward_one(const scalar_t* x, scalar_t* y, int64_t* idx, const PoolGeometry& g, const Taps& rows, int64_t ow) {
  using acc_t = at::opmath_type<scalar_t>;
  const Window& w = g.win;
  const Taps cols = taps(ow, w.sw, w.pw, w.kw, w.dw, g.W);
  int64_t best = rows.first * g.W + cols.first;
  acc_t best_value = -std::numeric_limits<acc_t>::infinity();
  for (int64_t ih = rows.first; ih < rows.end; ih += rows.step) {
    for (int64_t iw = cols.first; iw < cols.end; iw += cols.step) {
      const acc_t value = static_cast<acc_t>(x[ih * g.W + iw]);
      const bool take = takes_max(value, best_value);  // selects, not a branch: random data mispredicts
      best_value = take ? value : best_value;
      best = take ? ih * g.W + iw : best;
    }
  }
  *y = static_cast<scalar_t>(best_value);
  *idx = best;
}

// Whether every position of a plane fits the int32 lanes of the float32 vector scans.
inline bool positions_fit_int32(const PoolGeometry& g) { return g.H * g.W <= std::numeric_limits<int32_t>::max(); }

// Eight adjacent outputs' taps at one window tap: a row read at stride 1 or 2. The stride-2 load
// reads p[0..14] (two overlapping vectors), never p[15], which may lie past the tensor's end.
inline cpu::vec8::Floats load_row(const float* p, std::integral_constant<int64_t, 1>) { return cpu::vec8::load(p); }

inline cpu::vec8::Floats load_row(const float* p, std::integral_constant<int64_t, 2>) {
  return __builtin_shufflevector(cpu::vec8::load(p), cpu::vec8::load(p + 7), 0, 2, 4, 6, 9, 11, 13, 15);
}

// Float32 outputs [ow0, ow0 + 8 * kGroups) of one row, all interior: every tap of their windows in
// row-major order with the maxima and their tap offsets in registers, eight outputs a vector;
// several vectors per tap let their compare-and-select chains run side by side.
template <int kGroups, typename Stride>
inline void forward_row_groups(const float* x, float* y, int64_t* idx, const PoolGeometry& g, const Taps& rows,
                               Stride sw, int64_t ow0) {
  using namespace cpu::vec8;
  const Window& w = g.win;
  const int64_t col0 = ow0 * sw - w.pw;  // output ow0's first tap column
  Floats best[kGroups];
  Ints at[kGroups];  // the best tap's offset in the plane, less the output's own column step
  for (int k = 0; k < kGroups; ++k) {
    best[k] = splat(-std::numeric_limits<float>::infinity());
    at[k] = splat(static_cast<int32_t>(rows.first * g.W + col0));  // native's index when all are -inf
  }
  for (int64_t ih = rows.first; ih < rows.end; ih += rows.step) {
    for (int64_t j = 0; j < w.kw; ++j) {
      const int32_t tap = static_cast<int32_t>(ih * g.W + col0 + j * w.dw);
      for (int k = 0; k < kGroups; ++k) {
        const Floats value = load_row(x + tap + k * kWidth * sw, sw);
        const Ints take = (value > best[k]) | (value != value);
        best[k] = take ? value : best[k];
        at[k] = take ? splat(tap) : at[k];
      }
    }
  }
  const Ints step = Ints{0, 1, 2, 3, 4, 5, 6, 7} * static_cast<int32_t>(sw);
  for (int k = 0; k < kGroups; ++k) {
    store(y + ow0 + k * kWidth, best[k]);
    store_widened(idx + ow0 + k * kWidth, at[k] + step + static_cast<int32_t>(k * kWidth * sw));
  }
}

// Float32 interior outputs [lo, hi) of one row (at least eight): 32 at a time, then 16, then 8, the
// last eight ending at hi (recomputing a few outputs, same results) instead of a scalar tail, whose
// data-dependent branches mispredicted on random input.
template <typename Stride>
void forward_row_float(const float* x, float* y, int64_t* idx, const PoolGeometry& g, const Taps& rows, Stride sw,
                       int64_t lo, int64_t hi) {
  constexpr int64_t kWidth = cpu::vec8::kWidth;
  int64_t ow = lo;
  for (; ow + 4 * kWidth <= hi; ow += 4 * kWidth) forward_row_groups<4>(x, y, idx, g, rows, sw, ow);
  for (; ow + 2 * kWidth <= hi; ow += 2 * kWidth) forward_row_groups<2>(x, y, idx, g, rows, sw, ow);
  for (; ow < hi; ow += kWidth) forward_row_groups<1>(x, y, idx, g, rows, sw, std::min(ow, hi - kWidth));
}

// Scratch for one row of outputs: the running maxima and the offsets in the plane of the taps that
// gave them, less each output's own column step. Offsets, not tap numbers: turning a tap number back
// into an index took two integer divisions per output, the row scan's largest cost. Offset is int32
// where the plane's positions fit (twice the lanes per vector), else int64.
template <typename acc_t, typename Offset>
struct RowScratch {
  std::vector<acc_t> best;
  std::vector<Offset> at;
  explicit RowScratch(int64_t n) : best(n), at(n) {}
};

// One (n, c) plane, row by row. Interior columns go tap by tap across the whole row, in the
// window's row-major tap order (so ties resolve as in the scalar scan), with compare-and-select
// that vectorizes; the edge columns, whose windows hang into the padding, are scanned one by one.
template <typename scalar_t, typename Offset, typename Stride>
void forward_plane(const scalar_t* x, scalar_t* y, int64_t* idx, const PoolGeometry& g, Stride sw,
                   RowScratch<at::opmath_type<scalar_t>, Offset>& s) {
  using acc_t = at::opmath_type<scalar_t>;
  const Window& w = g.win;
  const auto [lo, hi] = interior_columns(g);
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const Taps rows = taps(oh, w.sh, w.ph, w.kh, w.dh, g.H);
    scalar_t* y_row = y + oh * g.OW;
    int64_t* idx_row = idx + oh * g.OW;
    for (int64_t ow = 0; ow < lo; ++ow) forward_one(x, y_row + ow, idx_row + ow, g, rows, ow);
    for (int64_t ow = hi; ow < g.OW; ++ow) forward_one(x, y_row + ow, idx_row + ow, g, rows, ow);
    if (lo >= hi) continue;
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<Offset, int32_t> &&
                  !std::is_same_v<Stride, int64_t>) {
      if (hi - lo >= cpu::vec8::kWidth) {
        forward_row_float(x, y_row, idx_row, g, rows, sw, lo, hi);
        continue;
      }
    }

    const int64_t n = hi - lo, col0 = lo * sw - w.pw;  // col0: output lo's first tap column
    acc_t* best = s.best.data();
    Offset* at = s.at.data();
    std::fill(best, best + n, -std::numeric_limits<acc_t>::infinity());
    std::fill(at, at + n, static_cast<Offset>(rows.first * g.W + col0));  // native's index when all are -inf
    for (int64_t ih = rows.first; ih < rows.end; ih += rows.step) {
      for (int64_t j = 0; j < w.kw; ++j) {
        const Offset tap = static_cast<Offset>(ih * g.W + col0 + j * w.dw);
        const scalar_t* src = x + tap;
        for (int64_t u = 0; u < n; ++u) {
          const acc_t value = static_cast<acc_t>(src[u * sw]);
          const bool take = takes_max(value, best[u]);
          best[u] = take ? value : best[u];
          at[u] = take ? tap : at[u];
        }
      }
    }
    for (int64_t u = 0; u < n; ++u) {
      y_row[lo + u] = static_cast<scalar_t>(best[u]);
      idx_row[lo + u] = static_cast<int64_t>(at[u]) + u * sw;
    }
  }
}

// The window of one output position: its in-bounds taps along each axis, and the first tap's
// position (also native's index for a window wholly in the padding, which has no tap and gives -inf).
struct PositionWindow {
  Taps rows, cols;
  int64_t first;
};

inline PositionWindow position_window(int64_t oh, int64_t ow, const PoolGeometry& g) {
  const Window& w = g.win;
  const Taps rows = taps(oh, w.sh, w.ph, w.kh, w.dh, g.H), cols = taps(ow, w.sw, w.pw, w.kw, w.dw, g.W);
  return {rows, cols, rows.first * g.W + cols.first};
}

// Channel c of one output position, scanned tap by tap in row-major order. x points at the
// sample, y and idx at the position's channels.
template <typename scalar_t>
void forward_channel_channels_last(const scalar_t* x, scalar_t* y, int64_t* idx, const PositionWindow& pw,
                                   const PoolGeometry& g, int64_t c) {
  using acc_t = at::opmath_type<scalar_t>;
  acc_t best = -std::numeric_limits<acc_t>::infinity();
  int64_t where = pw.first;
  for (int64_t ih = pw.rows.first; ih < pw.rows.end; ih += pw.rows.step) {
    for (int64_t iw = pw.cols.first; iw < pw.cols.end; iw += pw.cols.step) {
      const acc_t value = static_cast<acc_t>(x[(ih * g.W + iw) * g.C + c]);
      if (takes_max(value, best)) best = value, where = ih * g.W + iw;
    }
  }
  y[c] = static_cast<scalar_t>(best);
  idx[c] = where;
}

// All channels of one output position, float32, tap by tap in row-major order: each tap's channels
// are one contiguous run of the input, read in one sweep eight lanes at a time and compared with the
// running maxima, kept in the output row itself, and their positions, kept in an int32 scratch row
// (both C values, in L1). Scanning groups of channels through every tap instead (maxima in registers)
// jumped between the window's taps every 128 bytes and waited on memory: 0.65x of native's time
// at GoogLeNet's 8x8 maps, 0.70x at AlexNet's. The channels after the last eight take the scalar scan.
void forward_position_channels_last_float(const float* x, float* y, int64_t* idx, int32_t* where,
                                          const PositionWindow& pw, const PoolGeometry& g) {
  using namespace cpu::vec8;
  const int64_t vector_end = g.C / kWidth * kWidth;
  std::fill(y, y + vector_end, -std::numeric_limits<float>::infinity());
  std::fill(where, where + vector_end, static_cast<int32_t>(pw.first));
  // The column the window two positions on adds, prefetched a row at a time: without it the sweep
  // waited on its input loads (0.70-0.90x of native's time at AlexNet's 96 channels; 1.2x with it).
  const int64_t ahead = pw.cols.end - 1 + 2 * g.win.sw;
  for (int64_t ih = pw.rows.first; ih < pw.rows.end; ih += pw.rows.step) {
    if (ahead < g.W) {
      const float* next = x + (ih * g.W + ahead) * g.C;
      for (int64_t c = 0; c < g.C; c += 16) __builtin_prefetch(next + c);
    }
    for (int64_t iw = pw.cols.first; iw < pw.cols.end; iw += pw.cols.step) {
      const int32_t pos = static_cast<int32_t>(ih * g.W + iw);
      const float* src = x + pos * g.C;
      for (int64_t c = 0; c < vector_end; c += kWidth) {
        const Floats value = load(src + c), best = load(y + c);
        const Ints take = (value > best) | (value != value);
        store(y + c, take ? value : best);
        store(where + c, take ? splat(pos) : load(where + c));
      }
    }
  }
  for (int64_t c = 0; c < vector_end; c += kWidth) store_widened(idx + c, load(where + c));
  for (int64_t c = vector_end; c < g.C; ++c) forward_channel_channels_last(x, y, idx, pw, g, c);
}

// All channels of output position (oh, ow); `where` is scratch for C int32 positions (float32 only).
template <typename scalar_t>
void forward_position_channels_last(const scalar_t* x, scalar_t* y, int64_t* idx, int32_t* where, int64_t oh,
                                    int64_t ow, const PoolGeometry& g) {
  const PositionWindow pw = position_window(oh, ow, g);
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (positions_fit_int32(g)) return forward_position_channels_last_float(x, y, idx, where, pw, g);
  }
  for (int64_t c = 0; c < g.C; ++c) forward_channel_channels_last(x, y, idx, pw, g, c);
}

// The backward of one task: zero its slice of dx, then add each output's gradient at its argmax,
// in output order (so the sums are deterministic and in native's order). The slice is `width`
// interleaved planes whose positions lie `pitch` elements apart: one plane of a contiguous tensor
// (pitch 1, width 1), or a block of channels of one channels-last sample (pitch C). Zeroing just
// before the scatter keeps the slice in cache for it: one pass over memory, not two.
template <typename scalar_t, typename Pitch, typename Width>
void scatter_slice(const scalar_t* dy, const int64_t* idx, scalar_t* dx, int64_t in_plane, int64_t out_plane,
                   Pitch pitch, Width width) {
  using acc_t = at::opmath_type<scalar_t>;
  if (pitch == width) {
    std::fill(dx, dx + in_plane * width, scalar_t(0));
  } else {
    for (int64_t p = 0; p < in_plane; ++p) std::fill(dx + p * pitch, dx + p * pitch + width, scalar_t(0));
  }
  for (int64_t o = 0; o < out_plane; ++o) {
    for (int64_t c = 0; c < width; ++c) {
      const int64_t where = idx[o * pitch + c];
      if (!in_plane_range(where, in_plane)) continue;  // a window wholly in the padding
      scalar_t& target = dx[where * pitch + c];
      target = static_cast<scalar_t>(static_cast<acc_t>(target) + static_cast<acc_t>(dy[o * pitch + c]));
    }
  }
}

// Channels per channels-last backward task. A whole sample reads grad_output and the indices as
// sequential streams; tasks of 16-channel blocks read them at a stride of C and were 3x slower
// (memory-latency bound), so a sample is split only when there are too few samples to give every
// thread two tasks. Each element's sum is in output order whatever the split: same bits.
int64_t channels_per_task(const PoolGeometry& g) {
  constexpr int64_t kBlock = 16;  // 64 bytes of float32: tasks seldom share a cache line of dx
  const int64_t blocks = (g.C + kBlock - 1) / kBlock;
  const int64_t splits = std::min(blocks, (2 * at::get_num_threads() + g.N - 1) / g.N);
  return std::min(g.C, (blocks + splits - 1) / splits * kBlock);
}

// Contiguous float32 planes whose rows have fewer outputs than a vector (the 8x8 and smaller maps
// of a CIFAR-sized GoogLeNet): the row scan has nothing to vectorize there and pays per-row setup
// for a handful of outputs. Such a sample is transposed to channels-last in scratch, pooled by the
// channels-last vector scan (same tap order: same values and indices), and transposed back.
template <typename scalar_t>
bool narrow_float_planes(const PoolGeometry& g) {
  return std::is_same_v<scalar_t, float> && g.OW < cpu::vec8::kWidth && g.C >= cpu::vec8::kWidth &&
         positions_fit_int32(g);
}

struct TransposedSample {
  std::vector<float> x, y;
  std::vector<int64_t> idx;
  std::vector<int32_t> where;
  explicit TransposedSample(const PoolGeometry& g)
      : x(g.H * g.W * g.C), y(g.OH * g.OW * g.C), idx(g.OH * g.OW * g.C), where(g.C) {}
};

template <typename scalar_t>
void forward_sample_through_channels_last(const scalar_t* x, scalar_t* y, int64_t* idx, const PoolGeometry& g,
                                          TransposedSample& t) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    const int64_t in_plane = g.H * g.W, out_plane = g.OH * g.OW;
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t p = 0; p < in_plane; ++p) t.x[p * g.C + c] = x[c * in_plane + p];
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const int64_t o = oh * g.OW + ow;
        forward_position_channels_last(t.x.data(), t.y.data() + o * g.C, t.idx.data() + o * g.C, t.where.data(), oh, ow,
                                       g);
      }
    }
    for (int64_t c = 0; c < g.C; ++c) {
      for (int64_t o = 0; o < out_plane; ++o) {
        y[c * out_plane + o] = t.y[o * g.C + c];
        idx[c * out_plane + o] = t.idx[o * g.C + c];
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_with_argmax_cpu(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                                              at::IntArrayRef dilation, bool ceil_mode) {
  const ForwardCall call = prepare_forward(input, kernel_size, stride, padding, dilation, ceil_mode);
  const PoolGeometry& g = call.g;
  if (g.N == 0) return finish_forward(input, call);
  cpu::advise_huge_pages(call.values);
  cpu::advise_huge_pages(call.indices);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, call.x.scalar_type(), "cnnrepro::max_pool2d_with_argmax", [&] {
        const scalar_t* xp = call.x.const_data_ptr<scalar_t>();
        scalar_t* yp = call.values.mutable_data_ptr<scalar_t>();
        int64_t* ip = call.indices.mutable_data_ptr<int64_t>();
        const int64_t in_plane = g.H * g.W, out_plane = g.OH * g.OW;
        if (!g.channels_last && narrow_float_planes<scalar_t>(g)) {
          at::parallel_for(0, g.N, 1, [&](int64_t begin, int64_t end) {
            TransposedSample scratch(g);
            for (int64_t n = begin; n < end; ++n)
              forward_sample_through_channels_last(xp + n * g.C * in_plane, yp + n * g.C * out_plane,
                                                   ip + n * g.C * out_plane, g, scratch);
          });
        } else if (!g.channels_last) {
          dispatch_stride(g.win.sw, [&](auto sw) {
            const auto pool_planes = [&](auto offset) {
              at::parallel_for(0, g.N * g.C, 1, [&](int64_t begin, int64_t end) {
                RowScratch<at::opmath_type<scalar_t>, decltype(offset)> scratch(g.OW);
                for (int64_t p = begin; p < end; ++p)
                  forward_plane(xp + p * in_plane, yp + p * out_plane, ip + p * out_plane, g, sw, scratch);
              });
            };
            positions_fit_int32(g) ? pool_planes(int32_t{}) : pool_planes(int64_t{});
          });
        } else {
          at::parallel_for(0, g.N * out_plane, 1, [&](int64_t begin, int64_t end) {
            std::vector<int32_t> where(g.C);
            int64_t n = begin / out_plane, oh = begin % out_plane / g.OW, ow = begin % g.OW;
            for (int64_t i = begin; i < end; ++i) {  // (n, oh, ow) counted along: no divisions a position
              forward_position_channels_last(xp + n * in_plane * g.C, yp + i * g.C, ip + i * g.C, where.data(), oh, ow,
                                             g);
              if (++ow < g.OW) continue;
              ow = 0;
              if (++oh < g.OH) continue;
              oh = 0;
              ++n;
            }
          });
        }
      });
  return finish_forward(input, call);
}

at::Tensor max_pool2d_with_argmax_backward_cpu(const at::Tensor& grad_output, const at::Tensor& indices,
                                               at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                               at::IntArrayRef stride, at::IntArrayRef padding,
                                               at::IntArrayRef dilation, bool ceil_mode) {
  const BackwardCall call =
      prepare_backward(grad_output, indices, input_size, kernel_size, stride, padding, dilation, ceil_mode);
  const PoolGeometry& g = call.g;
  const auto format = g.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor dx = at::empty({g.N, g.C, g.H, g.W}, call.grad_output.options().memory_format(format));
  if (dx.numel() == 0) return finish_backward(grad_output, dx);
  cpu::advise_huge_pages(dx);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, dx.scalar_type(), "cnnrepro::max_pool2d_with_argmax_backward", [&] {
        const scalar_t* dyp = call.grad_output.const_data_ptr<scalar_t>();
        const int64_t* ip = call.indices.const_data_ptr<int64_t>();
        scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
        const int64_t in_plane = g.H * g.W, out_plane = g.OH * g.OW;
        if (!g.channels_last) {
          constexpr auto one = std::integral_constant<int64_t, 1>{};
          at::parallel_for(0, g.N * g.C, 1, [&](int64_t begin, int64_t end) {
            for (int64_t p = begin; p < end; ++p)
              scatter_slice(dyp + p * out_plane, ip + p * out_plane, dxp + p * in_plane, in_plane, out_plane, one, one);
          });
        } else {
          const int64_t width = channels_per_task(g), blocks = (g.C + width - 1) / width;
          at::parallel_for(0, g.N * blocks, 1, [&](int64_t begin, int64_t end) {
            for (int64_t task = begin; task < end; ++task) {
              const int64_t n = task / blocks, c0 = (task % blocks) * width;
              const int64_t out_offset = n * out_plane * g.C + c0;
              scatter_slice(dyp + out_offset, ip + out_offset, dxp + n * in_plane * g.C + c0, in_plane, out_plane, g.C,
                            std::min(width, g.C - c0));
            }
          });
        }
      });
  return finish_backward(grad_output, dx);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnrepro, CPU, m) {
  m.impl("max_pool2d_with_argmax", &max_pool2d_with_argmax_cpu);
  m.impl("max_pool2d_with_argmax_backward", &max_pool2d_with_argmax_backward_cpu);
}

}  // namespace cnnrepro::max_pool

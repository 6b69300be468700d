// 2-D max pooling with argmax: the geometry and checks shared by the CPU and CUDA kernels.
//
// Semantics are PyTorch's max_pool2d_with_indices: windows start at -padding, step by stride,
// sample every dilation-th position; padding acts as -inf; the first maximum wins ties; NaN
// propagates (every NaN is taken, so the last NaN of a window wins, and nothing is greater); indices
// are flat within the H*W plane. With ceil_mode the last window may hang over the edge, but is
// dropped when it would start in the right padding.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <cstdint>
#include <tuple>

#include "common.h"

namespace cnnrepro::max_pool {

struct Window {
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

// Everything a kernel needs about one call: the sizes and the window.
struct PoolGeometry {
  int64_t N, C, H, W, OH, OW;
  Window win;
  bool channels_last;
};

inline int64_t pooled_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t span = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
  int64_t out = (span >= 0 ? span / s : -((-span + s - 1) / s)) + 1;  // floor division
  if (ceil_mode && (out - 1) * s >= in + p) --out;                    // no window may start in the padding
  return out;
}

inline Window window_from(at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation, const char* op) {
  auto pair = [&](at::IntArrayRef v, const char* name) {
    TORCH_CHECK(v.size() == 1 || v.size() == 2, op, ": ", name, " must be one int or two ints, got ", v);
    return std::pair<int64_t, int64_t>{v[0], v.size() == 2 ? v[1] : v[0]};
  };
  const auto [kh, kw] = pair(kernel_size, "kernel_size");
  const auto [sh, sw] = stride.empty() ? std::pair<int64_t, int64_t>{kh, kw} : pair(stride, "stride");
  const auto [ph, pw] = pair(padding, "padding");
  const auto [dh, dw] = pair(dilation, "dilation");
  TORCH_CHECK(kh >= 1 && kw >= 1, op, ": kernel_size must be >= 1, got ", kernel_size);
  TORCH_CHECK(sh >= 1 && sw >= 1, op, ": stride must be >= 1, got ", stride);
  TORCH_CHECK(dh >= 1 && dw >= 1, op, ": dilation must be >= 1, got ", dilation);
  TORCH_CHECK(ph >= 0 && pw >= 0, op, ": padding must be >= 0, got ", padding);
  TORCH_CHECK(ph <= kh / 2 && pw <= kw / 2, op, ": padding must be at most half the kernel size, got padding ", padding,
              " for kernel_size ", kernel_size);
  return {kh, kw, sh, sw, ph, pw, dh, dw};
}

// Checks the input and works out the output size. `x` is 4-D here (unbatched inputs are viewed as N=1).
inline PoolGeometry geometry(const at::Tensor& x, const Window& w, bool ceil_mode, at::MemoryFormat format,
                             const char* op) {
  const int64_t H = x.size(2), W = x.size(3);
  TORCH_CHECK(x.size(1) > 0 && H > 0 && W > 0, op, ": expected non-empty channel and spatial dims, got input of shape ",
              x.sizes());
  const int64_t OH = pooled_size(H, w.kh, w.sh, w.ph, w.dh, ceil_mode);
  const int64_t OW = pooled_size(W, w.kw, w.sw, w.pw, w.dw, ceil_mode);
  TORCH_CHECK(OH >= 1 && OW >= 1, op, ": the output would be empty: input ", H, "x", W, " (padding ", w.ph, "x", w.pw,
              ") is smaller than the dilated kernel ", w.dh * (w.kh - 1) + 1, "x", w.dw * (w.kw - 1) + 1,
              "; calculated output size ", OH, "x", OW);
  return {x.size(0), x.size(1), H, W, OH, OW, w, is_channels_last(format)};
}

inline void check_input(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() == 3 || x.dim() == 4, op, ": expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got ", x.dim(),
              "-D input of shape ", x.sizes());
  check_floating(x, op, "input");
}

// Checks the backward's arguments against each other: grad_output and indices must be what the
// forward returned for an input of input_size with this window.
inline void check_backward_args(const at::Tensor& grad_output, const at::Tensor& indices, at::IntArrayRef input_size,
                                at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation, bool ceil_mode, const char* op) {
  check_input(grad_output, op);
  TORCH_CHECK(indices.scalar_type() == at::kLong, op, ": indices must be int64, got ", indices.scalar_type());
  TORCH_CHECK(indices.device() == grad_output.device(), op, ": indices are on ", indices.device(),
              " but grad_output is on ", grad_output.device());
  check_same_shape(grad_output, indices, op, "grad_output", "indices");
  TORCH_CHECK(static_cast<int64_t>(input_size.size()) == grad_output.dim(), op, ": input_size ", input_size, " has ",
              input_size.size(), " dims but grad_output has ", grad_output.dim());
  const int64_t d = grad_output.dim();
  for (int64_t i = 0; i < d - 2; ++i) {
    TORCH_CHECK(input_size[i] == grad_output.size(i), op, ": input_size ", input_size,
                " does not match the batch/channel dims of grad_output ", grad_output.sizes());
  }
  const Window w = window_from(kernel_size, stride, padding, dilation, op);
  const int64_t OH = pooled_size(input_size[d - 2], w.kh, w.sh, w.ph, w.dh, ceil_mode);
  const int64_t OW = pooled_size(input_size[d - 1], w.kw, w.sw, w.pw, w.dw, ceil_mode);
  TORCH_CHECK(OH == grad_output.size(d - 2) && OW == grad_output.size(d - 1), op, ": grad_output of shape ",
              grad_output.sizes(), " is not the pooled size ", OH, "x", OW, " of input_size ", input_size);
}

// The outputs whose windows may hold input position `in`, along one axis: [first, last].
struct Range {
  int64_t first, last;
};

C10_HOST_DEVICE inline Range covering_outputs(int64_t in, int64_t stride, int64_t pad, int64_t kernel, int64_t dilation,
                                              int64_t out_size) {
  const int64_t reach = in + pad - (kernel - 1) * dilation;  // the lowest window start that still covers `in`
  const int64_t last = (in + pad) / stride;
  return {reach <= 0 ? 0 : (reach + stride - 1) / stride, last < out_size - 1 ? last : out_size - 1};
}

// A call's tensors, prepared the same way for every device: 4-D (unbatched inputs get N=1), in
// the kernel's layout, outputs allocated; `finish` gives results the caller's rank back.
struct ForwardCall {
  at::Tensor x, values, indices;
  PoolGeometry g;
};

inline ForwardCall prepare_forward(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "cnnrepro::max_pool2d_with_argmax";
  check_input(input, op);
  const Window win = window_from(kernel_size, stride, padding, dilation, op);
  const at::Tensor x4 = input.dim() == 3 ? input.unsqueeze(0) : input;
  const auto format = kernel_memory_format(x4);
  const at::Tensor x = x4.contiguous(format);
  const PoolGeometry g = geometry(x, win, ceil_mode, format, op);
  const auto options = x.options().memory_format(format);
  return {x, at::empty({g.N, g.C, g.OH, g.OW}, options), at::empty({g.N, g.C, g.OH, g.OW}, options.dtype(at::kLong)),
          g};
}

inline std::tuple<at::Tensor, at::Tensor> finish_forward(const at::Tensor& input, const ForwardCall& call) {
  if (input.dim() == 3) return {call.values.squeeze(0), call.indices.squeeze(0)};
  return {call.values, call.indices};
}

struct BackwardCall {
  at::Tensor grad_output, indices;
  PoolGeometry g;
};

inline BackwardCall prepare_backward(const at::Tensor& grad_output, const at::Tensor& indices,
                                     at::IntArrayRef input_size, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "cnnrepro::max_pool2d_with_argmax_backward";
  check_backward_args(grad_output, indices, input_size, kernel_size, stride, padding, dilation, ceil_mode, op);
  const bool unbatched = grad_output.dim() == 3;
  const at::Tensor dy4 = unbatched ? grad_output.unsqueeze(0) : grad_output;
  const auto format = kernel_memory_format(dy4);
  const at::Tensor dy = dy4.contiguous(format), idx = (unbatched ? indices.unsqueeze(0) : indices).contiguous(format);
  const PoolGeometry g{dy.size(0),
                       dy.size(1),
                       input_size[input_size.size() - 2],
                       input_size.back(),
                       dy.size(2),
                       dy.size(3),
                       window_from(kernel_size, stride, padding, dilation, op),
                       is_channels_last(format)};
  return {dy, idx, g};
}

inline at::Tensor finish_backward(const at::Tensor& grad_output, const at::Tensor& grad_input) {
  return grad_output.dim() == 3 ? grad_input.squeeze(0) : grad_input;
}

// Whether an argmax lands in the input plane. It does not only for a window lying wholly in the
// padding (possible with dilation), whose output is -inf and whose index, as native's, points past
// the plane: such a window routes no gradient (native would write out of bounds there).
C10_HOST_DEVICE inline bool in_plane_range(int64_t index, int64_t plane_size) {
  return index >= 0 && index < plane_size;
}

// The first in-bounds tap of a window that starts at `start` (may be negative, in the padding).
C10_HOST_DEVICE inline int64_t first_tap(int64_t start, int64_t dilation) {
  while (start < 0) start += dilation;
  return start;
}

// The value replaces the running maximum when it is greater, or is NaN (then it stays: nothing is > NaN).
template <typename T>
C10_HOST_DEVICE inline bool takes_max(T value, T current) {
  return (value > current) | (value != value);  // bitwise: no branch, so the select vectorizes
}

}  // namespace cnnrepro::max_pool

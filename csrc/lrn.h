// Local response normalization across channels: the math shared by the CPU and CUDA kernels.
//
//   scale_c = k + alpha * (sum_{c' in W(c)} x_{c'}^2) / size,   W(c) = [c - size/2, c + (size-1)/2]
//   y_c     = x_c / scale_c^beta
//   dx_c    = dy_c / scale_c^beta
//             - (2 alpha beta / size) * x_c * sum_{c' : c in W(c')} dy_{c'} x_{c'} / (scale_{c'}^beta * scale_{c'})
//
// The second window, {c' : c in W(c')} = [c - (size-1)/2, c + size/2], is W mirrored: for even sizes
// it leans the other way. Out-of-range channels count as zero, as in F.local_response_norm.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "common.h"

namespace cnnrepro::lrn {

// The channels [first, last] of a window, clipped to the C channels there are.
struct Channels {
  int64_t first, last;
};

struct Params {
  int64_t size;
  double alpha;
  double beta;
  double k;
  C10_HOST_DEVICE int64_t before() const { return size / 2; }       // channels of W(c) below c
  C10_HOST_DEVICE int64_t after() const { return (size - 1) / 2; }  // channels of W(c) above c
  // W(c): the channels whose squares make channel c's scale.
  C10_HOST_DEVICE Channels window(int64_t c, int64_t C) const { return clipped(c - before(), c + after(), C); }
  // {c' : c in W(c')}: the channels whose scales channel c is in (W mirrored), for the backward.
  C10_HOST_DEVICE Channels mirrored_window(int64_t c, int64_t C) const { return clipped(c - after(), c + before(), C); }

 private:
  C10_HOST_DEVICE static Channels clipped(int64_t first, int64_t last, int64_t C) {
    return {first < 0 ? 0 : first, last >= C ? C - 1 : last};
  }
};

inline void check_args(const at::Tensor& x, const Params& p, const char* op) {
  TORCH_CHECK(x.dim() >= 3, op, ": expected input of 3 or more dims (N, C, *), got ", x.dim(), "-D input of shape ",
              x.sizes());
  check_floating(x, op, "input");
  TORCH_CHECK(p.size >= 1, op, ": size must be >= 1, got ", p.size);
  TORCH_CHECK(std::isfinite(p.alpha) && p.alpha >= 0, op, ": alpha must be finite and >= 0, got ", p.alpha);
  TORCH_CHECK(std::isfinite(p.beta), op, ": beta must be finite, got ", p.beta);
  TORCH_CHECK(std::isfinite(p.k) && p.k >= 0, op, ": k must be finite and >= 0, got ", p.k);
}

// A call's tensors, prepared the same way for every device: arguments checked, inputs dense in
// the kernel's layout, the output allocated in it; `g` is empty when there is nothing to compute.
struct ForwardCall {
  at::Tensor x, y;
  Geometry g;
};

inline ForwardCall prepare_forward(const at::Tensor& input, const Params& p) {
  check_args(input, p, "cnnrepro::lrn");
  const auto format = kernel_memory_format(input);
  const at::Tensor x = input.contiguous(format);
  return {x, at::empty_like(x, x.options().memory_format(format)), geometry(x, format)};
}

struct BackwardCall {
  at::Tensor dy, x, dx;
  Geometry g;
};

inline BackwardCall prepare_backward(const at::Tensor& grad_output, const at::Tensor& input, const Params& p) {
  const char* op = "cnnrepro::lrn_backward";
  check_args(input, p, op);
  check_same_device_dtype(grad_output, input, op, "grad_output", "input");
  check_same_shape(grad_output, input, op, "grad_output", "input");
  const auto format = kernel_memory_format(input);
  const at::Tensor x = input.contiguous(format);
  return {grad_output.contiguous(format), x, at::empty_like(x, x.options().memory_format(format)), geometry(x, format)};
}

// scale^beta. The common betas get exact-enough closed forms the compilers vectorize;
// any other beta goes through pow. The caller picks the kind once per call, outside the loops.
enum class BetaKind { kGeneral, kOne, kHalf, kThreeQuarters };

inline BetaKind beta_kind(double beta) {
  if (beta == 1.0) return BetaKind::kOne;
  if (beta == 0.5) return BetaKind::kHalf;
  if (beta == 0.75) return BetaKind::kThreeQuarters;
  return BetaKind::kGeneral;
}

template <BetaKind kind, typename T>
C10_HOST_DEVICE inline T pow_beta(T scale, T beta) {
  if constexpr (kind == BetaKind::kOne) {
    return scale;
  } else if constexpr (kind == BetaKind::kHalf) {
    return std::sqrt(scale);
  } else if constexpr (kind == BetaKind::kThreeQuarters) {
    const T root = std::sqrt(scale);
    return root * std::sqrt(root);
  } else {
    return std::pow(scale, beta);
  }
}

// scale from the window's sum of squares, in the order F.local_response_norm uses:
// average over the window, then times alpha, then plus k.
template <typename T>
C10_HOST_DEVICE inline T scale_from_sum(T sum_sq, T size, T alpha, T k) {
  return sum_sq / size * alpha + k;
}

// Calls f with a compile-time BetaKind matching beta.
template <typename F>
inline void dispatch_beta(double beta, F&& f) {
  switch (beta_kind(beta)) {
    case BetaKind::kOne:
      return f(std::integral_constant<BetaKind, BetaKind::kOne>{});
    case BetaKind::kHalf:
      return f(std::integral_constant<BetaKind, BetaKind::kHalf>{});
    case BetaKind::kThreeQuarters:
      return f(std::integral_constant<BetaKind, BetaKind::kThreeQuarters>{});
    default:
      return f(std::integral_constant<BetaKind, BetaKind::kGeneral>{});
  }
}

}  // namespace cnnrepro::lrn

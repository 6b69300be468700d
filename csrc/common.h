// Helpers shared by every op: argument checks with clear messages, and the layout rule.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

namespace cnnrepro {

// The dense layout a kernel runs in. Channels-last inputs stay channels-last (no copy);
// any other input runs contiguous. ops/_layout.py mirrors this rule for the fake kernels.
inline at::MemoryFormat kernel_memory_format(const at::Tensor& x) {
  if (x.is_contiguous()) return at::MemoryFormat::Contiguous;
  if (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) return at::MemoryFormat::ChannelsLast;
  if (x.dim() == 5 && x.is_contiguous(at::MemoryFormat::ChannelsLast3d)) return at::MemoryFormat::ChannelsLast3d;
  return at::MemoryFormat::Contiguous;
}

// An optional tensor argument that was given (Tensor? in a schema).
inline bool present(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

inline bool is_channels_last(at::MemoryFormat format) {
  return format == at::MemoryFormat::ChannelsLast || format == at::MemoryFormat::ChannelsLast3d;
}

// A dense tensor seen as [N, C, S] (S = the product of the spatial dims), as the per-channel ops
// (LRN, conv-BN-ReLU's normalization) walk it: channel stride S when contiguous, 1 when channels-last.
struct Geometry {
  int64_t N, C, S;
  bool channels_last;
};

// `x` is dense in `format` (see kernel_memory_format) and has 2 or more dims.
inline Geometry geometry(const at::Tensor& x, at::MemoryFormat format) {
  const int64_t N = x.size(0), C = x.size(1);
  return {N, C, C == 0 || N == 0 ? 0 : x.numel() / (N * C), is_channels_last(format)};
}

inline void check_floating(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": expected ", arg,
              " to have a floating-point dtype (float16, bfloat16, float32, float64), got ", t.scalar_type());
}

inline void check_same_device_dtype(const at::Tensor& a, const at::Tensor& b, const char* op, const char* a_name,
                                    const char* b_name) {
  TORCH_CHECK(a.device() == b.device(), op, ": ", a_name, " is on ", a.device(), " but ", b_name, " is on ", b.device(),
              "; move them to the same device");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", a_name, " has dtype ", a.scalar_type(), " but ", b_name,
              " has dtype ", b.scalar_type());
}

inline void check_same_shape(const at::Tensor& a, const at::Tensor& b, const char* op, const char* a_name,
                             const char* b_name) {
  TORCH_CHECK(a.sizes() == b.sizes(), op, ": ", a_name, " has shape ", a.sizes(), " but ", b_name, " has shape ",
              b.sizes(), "; they must match");
}

}  // namespace cnnrepro

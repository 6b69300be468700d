// Fused conv + BatchNorm + ReLU on the CPU, around at::convolution (oneDNN).
//
// Per-channel reductions are deterministic whatever the thread count: contiguous tensors sum
// each channel in one task, in order; channels-last tensors sum fixed blocks of positions into
// partials that are then added in block order. Elementwise passes run over planes (contiguous)
// or over the channel vector of each position (channels-last), both vectorized.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "../conv_bn_relu.h"
#include "blocks.h"

namespace cnnrepro::conv_bn_relu {
namespace {

using cpu::for_each_block;
using cpu::grain_for;
using cpu::kLanes;

constexpr int64_t kPositionsPerBlock = 256;  // channels-last reduction block (fixed: determinism)

// Reduction accumulators: double for float (as native BatchNorm on the CPU), else the op math type.
template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double,
                                    std::conditional_t<std::is_same_v<scalar_t, float>, double, float>>;

// Two per-channel sums of f(c, i) -> (a, b) over every element i of channel c, written to out[c], out[C + c].
template <typename acc_t, typename F>
void channel_sums(const Geometry& g, acc_t* out, F&& f) {
  if (!g.channels_last) {
    at::parallel_for(0, g.C, grain_for(g.N * g.S), [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        // kLanes independent partial sums (vector registers), added up in lane order at the end.
        acc_t a[kLanes] = {}, b[kLanes] = {};
        for (int64_t n = 0; n < g.N; ++n) {
          const int64_t base = (n * g.C + c) * g.S;
          for_each_block(g.S, [&](int64_t s0, auto width) {
            for (int u = 0; u < width; ++u) {
              const auto [da, db] = f(c, base + s0 + u);
              a[u] += da;
              b[u] += db;
            }
          });
        }
        out[c] = 0;
        out[g.C + c] = 0;
        for (int u = 0; u < kLanes; ++u) out[c] += a[u], out[g.C + c] += b[u];
      }
    });
    return;
  }
  const int64_t positions = g.N * g.S, blocks = (positions + kPositionsPerBlock - 1) / kPositionsPerBlock;
  std::vector<acc_t> partial(blocks * 2 * g.C, acc_t(0));
  at::parallel_for(0, blocks, grain_for(kPositionsPerBlock * g.C), [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      acc_t* a = partial.data() + blk * 2 * g.C;
      acc_t* b = a + g.C;
      const int64_t last = std::min(positions, (blk + 1) * kPositionsPerBlock);
      for (int64_t p = blk * kPositionsPerBlock; p < last; ++p) {
        for (int64_t c = 0; c < g.C; ++c) {
          const auto [da, db] = f(c, p * g.C + c);
          a[c] += da;
          b[c] += db;
        }
      }
    }
  });
  at::parallel_for(0, g.C, grain_for(blocks), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      acc_t a = 0, b = 0;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        a += partial[blk * 2 * g.C + c];
        b += partial[blk * 2 * g.C + g.C + c];
      }
      out[c] = a;
      out[g.C + c] = b;
    }
  });
}

// f(c, i) for every element i, c its channel: planes (contiguous) or channel vectors (channels-last).
template <typename F>
void for_each_element(const Geometry& g, F&& f) {
  if (!g.channels_last) {
    at::parallel_for(0, g.N * g.C, grain_for(g.S), [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t c = plane % g.C, base = plane * g.S;
        for (int64_t s = 0; s < g.S; ++s) f(c, base + s);
      }
    });
  } else {
    at::parallel_for(0, g.N * g.S, grain_for(g.C), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p)
        for (int64_t c = 0; c < g.C; ++c) f(c, p * g.C + c);
    });
  }
}

// value if keep, else +0, by masking bits: a select the compiler vectorizes, where a ternary on
// a loaded value became a branch that random ReLU masks mispredict half the time.
template <typename T>
inline T keep_if(bool keep, T value) {
  using Bits = std::conditional_t<sizeof(T) == 8, uint64_t, std::conditional_t<sizeof(T) == 4, uint32_t, uint16_t>>;
  return std::bit_cast<T>(static_cast<Bits>(std::bit_cast<Bits>(value) & static_cast<Bits>(Bits(0) - Bits(keep))));
}

// The per-channel constants of the normalization, in the op math type: y = relu(z * scale + shift),
// computed in double from the batch statistics and the BatchNorm parameters; mean and gamma
// (1 without affine parameters) for the backward. Read straight from the tensors: no .to() copies.
template <typename acc_t>
struct ChannelAffine {
  std::vector<acc_t> scale, shift, invstd, mean, gamma;
};

template <typename scalar_t>
const scalar_t* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
}

template <typename scalar_t>
ChannelAffine<at::opmath_type<scalar_t>> channel_affine(const at::Tensor& mean, const at::Tensor& var,
                                                        const c10::optional<at::Tensor>& bn_weight,
                                                        const c10::optional<at::Tensor>& bn_bias, double eps) {
  using opmath_t = at::opmath_type<scalar_t>;
  auto dense = [](const c10::optional<at::Tensor>& t) { return t && t->defined() ? t->contiguous() : at::Tensor(); };
  const at::Tensor m = mean.contiguous(), v = var.contiguous(), gamma = dense(bn_weight), beta = dense(bn_bias);
  const scalar_t *mp = m.const_data_ptr<scalar_t>(), *vp = v.const_data_ptr<scalar_t>();
  const scalar_t *gp = data_or_null<scalar_t>(gamma), *bp = data_or_null<scalar_t>(beta);
  const int64_t C = mean.size(0);
  ChannelAffine<opmath_t> a;
  for (auto* field : {&a.scale, &a.shift, &a.invstd, &a.mean, &a.gamma}) field->resize(C);
  for (int64_t c = 0; c < C; ++c) {
    const double g = static_cast<double>(gamma_of(gp, c)), b = static_cast<double>(beta_of(bp, c));
    const double invstd = 1.0 / std::sqrt(static_cast<double>(vp[c]) + eps), scale = g * invstd;
    a.invstd[c] = static_cast<opmath_t>(invstd);
    a.scale[c] = static_cast<opmath_t>(scale);
    a.shift[c] = static_cast<opmath_t>(b - static_cast<double>(mp[c]) * scale);
    a.mean[c] = static_cast<opmath_t>(mp[c]);
    a.gamma[c] = static_cast<opmath_t>(g);
  }
  return a;
}

// dz summed per channel (the conv bias's gradient), with the deterministic channel reduction.
at::Tensor sum_per_channel(const at::Tensor& dz) {
  const Geometry g = geometry_of(dz);
  at::Tensor out = at::empty({g.C}, dz.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dz.scalar_type(), "cnnrepro::conv_bn_relu bias grad", [&] {
    using acc_t = acc_type<scalar_t>;
    const scalar_t* p = dz.const_data_ptr<scalar_t>();
    std::vector<acc_t> sums(2 * g.C);
    channel_sums<acc_t>(g, sums.data(), [&](int64_t, int64_t i) {
      return std::pair<acc_t, acc_t>{static_cast<acc_t>(p[i]), acc_t(0)};
    });
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    for (int64_t c = 0; c < g.C; ++c) o[c] = static_cast<scalar_t>(sums[c]);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_bn_relu_train_cpu(
    const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& bn_weight, const c10::optional<at::Tensor>& bn_bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, double eps) {
  ForwardCall call = prepare_forward(input, weight, bias, bn_weight, bn_bias, {stride, padding, dilation, groups}, eps);
  at::Tensor &z = call.z, &y = call.y, &mean = call.mean, &var = call.var;
  const Geometry& g = call.g;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "cnnrepro::conv_bn_relu_train", [&] {
    using acc_t = acc_type<scalar_t>;
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    std::vector<acc_t> sums(2 * g.C);
    channel_sums<acc_t>(g, sums.data(), [&](int64_t, int64_t i) {
      const acc_t v = static_cast<acc_t>(zp[i]);
      return std::pair<acc_t, acc_t>{v, v * v};
    });
    const acc_t count = static_cast<acc_t>(g.N * g.S);
    scalar_t* mp = mean.mutable_data_ptr<scalar_t>();
    scalar_t* vp = var.mutable_data_ptr<scalar_t>();
    for (int64_t c = 0; c < g.C; ++c) {
      const acc_t m = sums[c] / count;
      mp[c] = static_cast<scalar_t>(m);
      vp[c] = static_cast<scalar_t>(std::max(acc_t(0), sums[g.C + c] / count - m * m));
    }
    const auto affine = channel_affine<scalar_t>(mean, var, bn_weight, bn_bias, eps);
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const opmath_t *scale = affine.scale.data(), *shift = affine.shift.data();
    for_each_element(g, [&](int64_t c, int64_t i) {
      yp[i] = static_cast<scalar_t>(relu(static_cast<opmath_t>(zp[i]) * scale[c] + shift[c]));
    });
  });
  return {y, z, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_bn_relu_train_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& conv_out,
    const at::Tensor& mean, const at::Tensor& var, const c10::optional<at::Tensor>& bn_weight,
    const c10::optional<at::Tensor>& bn_bias, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, double eps, std::array<bool, 3> output_mask) {
  const ConvParams conv{stride, padding, dilation, groups};
  BackwardCall call = prepare_backward(grad_output, input, weight, conv_out, bn_weight, bn_bias, conv, eps);
  at::Tensor &z = call.z, &dy = call.dy, &dz = call.dz, &grad_gamma = call.grad_gamma, &grad_beta = call.grad_beta;
  const Geometry& g = call.g;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "cnnrepro::conv_bn_relu_train_backward", [&] {
    using acc_t = acc_type<scalar_t>;
    using opmath_t = at::opmath_type<scalar_t>;
    const auto affine = channel_affine<scalar_t>(mean, var, bn_weight, bn_bias, eps);
    const opmath_t *scale = affine.scale.data(), *shift = affine.shift.data(), *invstd = affine.invstd.data();
    const opmath_t* mu = affine.mean.data();
    const scalar_t *zp = z.const_data_ptr<scalar_t>(), *dyp = dy.const_data_ptr<scalar_t>();
    // dv: the gradient past the ReLU, whose mask is recomputed from z (y itself is not kept).
    auto grad_past_relu = [&](int64_t c, int64_t i) {
      const opmath_t v = static_cast<opmath_t>(zp[i]) * scale[c] + shift[c];
      return keep_if(v > opmath_t(0), static_cast<opmath_t>(dyp[i]));
    };
    std::vector<acc_t> sums(2 * g.C);
    channel_sums<acc_t>(g, sums.data(), [&](int64_t c, int64_t i) {
      const acc_t dv = grad_past_relu(c, i);
      const acc_t x_hat = (static_cast<acc_t>(zp[i]) - mu[c]) * invstd[c];
      return std::pair<acc_t, acc_t>{dv, dv * x_hat};
    });
    const double count = static_cast<double>(g.N * g.S);
    std::vector<opmath_t> k_dz(g.C), k_mean(g.C), k_xhat(g.C);  // dz = k_dz * (dv - k_mean - x_hat * k_xhat)
    scalar_t *dgp = grad_gamma.mutable_data_ptr<scalar_t>(), *dbp = grad_beta.mutable_data_ptr<scalar_t>();
    for (int64_t c = 0; c < g.C; ++c) {
      dbp[c] = static_cast<scalar_t>(sums[c]);
      dgp[c] = static_cast<scalar_t>(sums[g.C + c]);
      k_dz[c] = affine.gamma[c] * invstd[c];
      k_mean[c] = static_cast<opmath_t>(sums[c] / count);
      k_xhat[c] = static_cast<opmath_t>(sums[g.C + c] / count);
    }
    scalar_t* dzp = dz.mutable_data_ptr<scalar_t>();
    for_each_element(g, [&](int64_t c, int64_t i) {
      const opmath_t x_hat = (static_cast<opmath_t>(zp[i]) - mu[c]) * invstd[c];
      dzp[i] = static_cast<scalar_t>(k_dz[c] * (grad_past_relu(c, i) - k_mean[c] - x_hat * k_xhat[c]));
    });
  });

  return conv_backward(dz, input, weight, conv, output_mask, output_mask[2] ? sum_per_channel(dz) : at::Tensor(),
                       grad_gamma, grad_beta);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnrepro, CPU, m) {
  m.impl("conv_bn_relu_train", &conv_bn_relu_train_cpu);
  m.impl("conv_bn_relu_train_backward", &conv_bn_relu_train_backward_cpu);
}

}  // namespace cnnrepro::conv_bn_relu

// Fused conv + BatchNorm + ReLU on the CPU, around at::convolution (oneDNN).
//
// Each kernel step is written once, as a generic lambda over an access pattern: one element
// (any dtype), or eight float32 lanes (vec8.h) along a channel's plane (contiguous) or across
// eight channels of one position (channels-last). The traversals below hand out lanes where they
// fit and single elements for the rest. Sums are in double for float32, as native BatchNorm's.
// Steps capture their pointers by value and each task runs its own copy of the step: the vector
// stores (memcpy) may alias any memory, so pointers read through a shared closure were reloaded
// after every store, which made the backward's elementwise pass twice as slow.
//
// Per-channel reductions are deterministic whatever the thread count: contiguous tensors sum
// each channel in one task, in order; channels-last tensors sum fixed blocks of positions into
// partials that are then added in block order.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../conv_bn_relu.h"
#include "loops.h"
#include "vec8.h"

namespace cnnrepro::conv_bn_relu {
namespace {

namespace vec8 = cpu::vec8;
using cpu::grain_for;

constexpr int64_t kPositionsPerBlock = 256;  // channels-last reduction block (fixed: determinism)

// Reduction accumulators: double for float (as native BatchNorm on the CPU), else the op math type.
template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double,
                                    std::conditional_t<std::is_same_v<scalar_t, float>, double, float>>;

// float32 runs in eight-lane vectors; other dtypes element by element.
template <typename scalar_t>
constexpr bool kVectorized = std::is_same_v<scalar_t, float>;

// One element i of channel c, in the op math type.
template <typename scalar_t>
struct Element {
  using value_t = at::opmath_type<scalar_t>;
  int64_t i, c;
  value_t load(const scalar_t* p) const { return static_cast<value_t>(p[i]); }
  value_t channel(const value_t* table) const { return table[c]; }
  void store(scalar_t* p, value_t v) const { p[i] = static_cast<scalar_t>(v); }
};

// Eight float32 elements from i: along channel c's plane, or across channels c..c+7 of one position.
template <bool kAcrossChannels>
struct Lanes {
  int64_t i, c;
  vec8::Floats load(const float* p) const { return vec8::load(p + i); }
  vec8::Floats channel(const float* table) const {
    if constexpr (kAcrossChannels) {
      return vec8::load(table + c);
    } else {
      return vec8::splat(table[c]);
    }
  }
  void store(float* p, vec8::Floats v) const { vec8::store(p + i, v); }
};

// value if keep, else +0, by masking bits: a select the compiler vectorizes, where a ternary on
// a loaded value became a branch that random ReLU masks mispredict half the time.
template <typename T>
inline T keep_if(bool keep, T value) {
  using Bits = std::conditional_t<sizeof(T) == 8, uint64_t, std::conditional_t<sizeof(T) == 4, uint32_t, uint16_t>>;
  return std::bit_cast<T>(static_cast<Bits>(std::bit_cast<Bits>(value) & static_cast<Bits>(Bits(0) - Bits(keep))));
}
using vec8::keep_if;

// ReLU and its gradient's mask for lanes, as relu() and relu_passes() in conv_bn_relu.h for one
// element: negatives become 0, NaN stays; the gradient passes everywhere but v <= 0.
inline vec8::Floats relu(vec8::Floats v) { return keep_if(~(v < vec8::Floats{}), v); }
inline vec8::Ints relu_passes(vec8::Floats v) { return ~(v <= vec8::Floats{}); }
using conv_bn_relu::relu;
using conv_bn_relu::relu_passes;

// Running sums of x and of x*y, for a reduction step that returns the pair (x, y): products and
// sums in acc_t for one element, in double lanes for eight float32 (products of floats are exact).
template <typename acc_t>
struct ElementSums {
  acc_t x = 0, xy = 0;
  template <typename V>
  void add(std::pair<V, V> step) {
    const acc_t a = static_cast<acc_t>(step.first), b = static_cast<acc_t>(step.second);
    x += a;
    xy += a * b;
  }
};

struct LaneSums {
  vec8::Doubles x[2] = {}, xy[2] = {};  // lanes 0-3 and 4-7
  void add(std::pair<vec8::Floats, vec8::Floats> step) {
    const vec8::Doubles a[2] = {vec8::low_half(step.first), vec8::high_half(step.first)};
    const vec8::Doubles b[2] = {vec8::low_half(step.second), vec8::high_half(step.second)};
    for (int h = 0; h < 2; ++h) {
      x[h] += a[h];
      xy[h] += a[h] * b[h];
    }
  }
  double x_lane(int lane) const { return x[lane / 4][lane % 4]; }
  double xy_lane(int lane) const { return xy[lane / 4][lane % 4]; }
};

// Per channel c, the sums of x and of x*y over every element of c, where f(at) returns (x, y) for
// the element(s) at; written to out[c] and out[C + c].
template <typename scalar_t, typename F>
void channel_sums(const Geometry& g, acc_type<scalar_t>* out, F&& f) {
  using acc_t = acc_type<scalar_t>;
  constexpr int64_t kWidth = vec8::kWidth;
  if (!g.channels_last) {
    at::parallel_for(0, g.C, grain_for(g.N * g.S), [&](int64_t begin, int64_t end) {
      const auto step = f;  // the task's own copy (see the top of the file)
      for (int64_t c = begin; c < end; ++c) {
        LaneSums lanes;
        ElementSums<acc_t> rest;
        for (int64_t n = 0; n < g.N; ++n) {
          const int64_t base = (n * g.C + c) * g.S;
          int64_t s = 0;
          if constexpr (kVectorized<scalar_t>) {
            for (; s + kWidth <= g.S; s += kWidth) lanes.add(step(Lanes<false>{base + s, c}));
          }
          for (; s < g.S; ++s) rest.add(step(Element<scalar_t>{base + s, c}));
        }
        out[c] = rest.x;
        out[g.C + c] = rest.xy;
        for (int lane = 0; lane < kWidth; ++lane) out[c] += lanes.x_lane(lane), out[g.C + c] += lanes.xy_lane(lane);
      }
    });
    return;
  }
  const int64_t positions = g.N * g.S, blocks = (positions + kPositionsPerBlock - 1) / kPositionsPerBlock;
  std::vector<acc_t> partial(blocks * 2 * g.C);
  at::parallel_for(0, blocks, grain_for(kPositionsPerBlock * g.C), [&](int64_t begin, int64_t end) {
    const auto step = f;
    for (int64_t blk = begin; blk < end; ++blk) {
      acc_t* x = partial.data() + blk * 2 * g.C;
      acc_t* xy = x + g.C;
      const int64_t first = blk * kPositionsPerBlock, last = std::min(positions, first + kPositionsPerBlock);
      int64_t c = 0;
      if constexpr (kVectorized<scalar_t>) {
        for (; c + kWidth <= g.C; c += kWidth) {  // the lanes are channels c..c+7
          LaneSums lanes;
          for (int64_t p = first; p < last; ++p) lanes.add(step(Lanes<true>{p * g.C + c, c}));
          for (int lane = 0; lane < kWidth; ++lane)
            x[c + lane] = lanes.x_lane(lane), xy[c + lane] = lanes.xy_lane(lane);
        }
      }
      for (; c < g.C; ++c) {
        ElementSums<acc_t> sums;
        for (int64_t p = first; p < last; ++p) sums.add(step(Element<scalar_t>{p * g.C + c, c}));
        x[c] = sums.x;
        xy[c] = sums.xy;
      }
    }
  });
  at::parallel_for(0, g.C, grain_for(blocks), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      acc_t x = 0, xy = 0;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        x += partial[blk * 2 * g.C + c];
        xy += partial[blk * 2 * g.C + g.C + c];
      }
      out[c] = x;
      out[g.C + c] = xy;
    }
  });
}

// f(at) for every element: over planes (contiguous) or over each position's channels (channels-last).
template <typename scalar_t, typename F>
void for_each_element(const Geometry& g, F&& f) {
  constexpr int64_t kWidth = vec8::kWidth;
  if (!g.channels_last) {
    at::parallel_for(0, g.N * g.C, grain_for(g.S), [&](int64_t begin, int64_t end) {
      const auto step = f;
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t c = plane % g.C, base = plane * g.S;
        int64_t s = 0;
        if constexpr (kVectorized<scalar_t>) {
          for (; s + kWidth <= g.S; s += kWidth) step(Lanes<false>{base + s, c});
        }
        for (; s < g.S; ++s) step(Element<scalar_t>{base + s, c});
      }
    });
  } else {
    at::parallel_for(0, g.N * g.S, grain_for(g.C), [&](int64_t begin, int64_t end) {
      const auto step = f;
      for (int64_t p = begin; p < end; ++p) {
        int64_t c = 0;
        if constexpr (kVectorized<scalar_t>) {
          for (; c + kWidth <= g.C; c += kWidth) step(Lanes<true>{p * g.C + c, c});
        }
        for (; c < g.C; ++c) step(Element<scalar_t>{p * g.C + c, c});
      }
    });
  }
}

// The per-channel constants of the normalization, in the op math type: y = relu((z - mean) * scale
// + beta), scale = gamma * invstd computed in double from the statistics and the BatchNorm
// parameters (gamma 1, beta 0 without affine parameters). Centering first, as native's formula
// does, keeps a channel equal to its mean at exactly beta (native's ReLU mask there) and loses
// nothing when z sits far from 0. Read straight from the tensors: no .to() copies.
template <typename acc_t>
struct ChannelAffine {
  std::vector<acc_t> scale, beta, invstd, mean, gamma;
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
  for (auto* field : {&a.scale, &a.beta, &a.invstd, &a.mean, &a.gamma}) field->resize(C);
  for (int64_t c = 0; c < C; ++c) {
    const double g = static_cast<double>(gamma_of(gp, c)), b = static_cast<double>(beta_of(bp, c));
    const double invstd = 1.0 / std::sqrt(static_cast<double>(vp[c]) + eps), scale = g * invstd;
    a.invstd[c] = static_cast<opmath_t>(invstd);
    a.scale[c] = static_cast<opmath_t>(scale);
    a.beta[c] = static_cast<opmath_t>(b);
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
    const scalar_t* p = dz.const_data_ptr<scalar_t>();
    std::vector<acc_type<scalar_t>> sums(2 * g.C);
    channel_sums<scalar_t>(g, sums.data(), [p](const auto& at) {
      const auto v = at.load(p);
      return std::pair{v, decltype(v){}};
    });
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    for (int64_t c = 0; c < g.C; ++c) o[c] = static_cast<scalar_t>(sums[c]);
  });
  return out;
}

// y = relu((z - mean) * scale + beta) per channel; y may be z itself (inference normalizes in place).
template <typename scalar_t>
void normalize_relu(const Geometry& g, const scalar_t* zp, scalar_t* yp,
                    const ChannelAffine<at::opmath_type<scalar_t>>& affine) {
  const auto *scale = affine.scale.data(), *beta = affine.beta.data(), *mean = affine.mean.data();
  for_each_element<scalar_t>(g, [=](const auto& at) {
    at.store(yp, relu((at.load(zp) - at.channel(mean)) * at.channel(scale) + at.channel(beta)));
  });
}

// Each channel's shift for the statistics' sums: its first value (sample 0, position 0), or 0 (see
// channel_shift in conv_bn_relu.h).
template <typename scalar_t>
std::vector<at::opmath_type<scalar_t>> channel_shifts(const Geometry& g, const scalar_t* zp) {
  std::vector<at::opmath_type<scalar_t>> shifts(g.C);
  for (int64_t c = 0; c < g.C; ++c) {
    shifts[c] = channel_shift(static_cast<at::opmath_type<scalar_t>>(zp[g.channels_last ? c : c * g.S]));
  }
  return shifts;
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
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    const auto shifts = channel_shifts(g, zp);
    std::vector<acc_t> sums(2 * g.C);
    channel_sums<scalar_t>(g, sums.data(), [zp, k = shifts.data()](const auto& at) {
      const auto v = at.load(zp) - at.channel(k);
      return std::pair{v, v};  // sums of z - K and (z - K)^2
    });
    const acc_t count = static_cast<acc_t>(g.N * g.S);
    scalar_t* mp = mean.mutable_data_ptr<scalar_t>();
    scalar_t* vp = var.mutable_data_ptr<scalar_t>();
    for (int64_t c = 0; c < g.C; ++c) {
      const acc_t m = sums[c] / count;
      mp[c] = static_cast<scalar_t>(static_cast<acc_t>(shifts[c]) + m);
      vp[c] = static_cast<scalar_t>(shifted_variance(m, sums[g.C + c] / count));
    }
    normalize_relu(g, zp, y.mutable_data_ptr<scalar_t>(), channel_affine<scalar_t>(mean, var, bn_weight, bn_bias, eps));
  });
  return {y, z, mean, var};
}

at::Tensor conv_bn_relu_eval_cpu(const at::Tensor& input, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& bn_weight,
                                 const c10::optional<at::Tensor>& bn_bias, const at::Tensor& running_mean,
                                 const at::Tensor& running_var, at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, int64_t groups, double eps) {
  at::Tensor z = prepare_eval(input, weight, bias, bn_weight, bn_bias, running_mean, running_var,
                              {stride, padding, dilation, groups}, eps);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "cnnrepro::conv_bn_relu_eval", [&] {
    scalar_t* zp = z.mutable_data_ptr<scalar_t>();
    normalize_relu(geometry_of(z), zp, zp,
                   channel_affine<scalar_t>(running_mean, running_var, bn_weight, bn_bias, eps));
  });
  return z;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_bn_relu_train_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& conv_out,
    const at::Tensor& mean, const at::Tensor& var, const c10::optional<at::Tensor>& bn_weight,
    const c10::optional<at::Tensor>& bn_bias, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    int64_t groups, double eps, std::array<bool, 3> output_mask) {
  const ConvParams conv{stride, padding, dilation, groups};
  BackwardCall call = prepare_backward(grad_output, input, weight, conv_out, mean, var, bn_weight, bn_bias, conv, eps);
  at::Tensor &z = call.z, &dy = call.dy, &dz = call.dz, &grad_gamma = call.grad_gamma, &grad_beta = call.grad_beta;
  const Geometry& g = call.g;

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, z.scalar_type(), "cnnrepro::conv_bn_relu_train_backward", [&] {
        using acc_t = acc_type<scalar_t>;
        using opmath_t = at::opmath_type<scalar_t>;
        const auto affine = channel_affine<scalar_t>(mean, var, bn_weight, bn_bias, eps);
        const opmath_t *scale = affine.scale.data(), *beta = affine.beta.data(), *mu = affine.mean.data();
        const scalar_t *zp = z.const_data_ptr<scalar_t>(), *dyp = dy.const_data_ptr<scalar_t>();
        // dv: the gradient past the ReLU, whose mask is recomputed from z exactly as the forward computed y.
        auto grad_past_relu = [=](const auto& at) {
          return keep_if(relu_passes((at.load(zp) - at.channel(mu)) * at.channel(scale) + at.channel(beta)),
                         at.load(dyp));
        };
        std::vector<acc_t> sums(2 * g.C);
        channel_sums<scalar_t>(g, sums.data(), [=](const auto& at) {
          return std::pair{grad_past_relu(at), at.load(zp) - at.channel(mu)};  // sums of dv and dv * (z - mean)
        });
        // dz = a * dv + b * (z - mean) + c, per channel, from dbeta = sum(dv) and dgamma = invstd * sum(dv * (z -
        // mean)).
        const double count = static_cast<double>(g.N * g.S);
        std::vector<opmath_t> a_table(g.C), b_table(g.C), c_table(g.C);
        scalar_t *dgp = grad_gamma.mutable_data_ptr<scalar_t>(), *dbp = grad_beta.mutable_data_ptr<scalar_t>();
        for (int64_t ch = 0; ch < g.C; ++ch) {
          const double invstd = affine.invstd[ch], dbeta = sums[ch], dgamma = invstd * sums[g.C + ch];
          const double k = static_cast<double>(affine.gamma[ch]) * invstd;
          dbp[ch] = static_cast<scalar_t>(dbeta);
          dgp[ch] = static_cast<scalar_t>(dgamma);
          a_table[ch] = static_cast<opmath_t>(k);
          b_table[ch] = static_cast<opmath_t>(-k * invstd * dgamma / count);
          c_table[ch] = static_cast<opmath_t>(-k * dbeta / count);
        }
        scalar_t* dzp = dz.mutable_data_ptr<scalar_t>();
        const opmath_t *a = a_table.data(), *b = b_table.data(), *c = c_table.data();
        for_each_element<scalar_t>(g, [=](const auto& at) {
          const auto dv = grad_past_relu(at), centered = at.load(zp) - at.channel(mu);
          at.store(dzp, at.channel(a) * dv + (at.channel(b) * centered + at.channel(c)));
        });
      });

  return conv_backward(dz, input, weight, conv, output_mask, output_mask[2] ? sum_per_channel(dz) : at::Tensor(),
                       grad_gamma, grad_beta);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnrepro, CPU, m) {
  m.impl("conv_bn_relu_train", &conv_bn_relu_train_cpu);
  m.impl("conv_bn_relu_train_backward", &conv_bn_relu_train_backward_cpu);
  m.impl("conv_bn_relu_eval", &conv_bn_relu_eval_cpu);
}

}  // namespace cnnrepro::conv_bn_relu

// Autograd for cnnrepro::conv_bn_relu_train, in C++ for every device.
//
// Why not torch.library.register_autograd, as the other ops: this op runs once per block and
// training step (57 times in a GoogLeNet step, on small tensors), and the Python wrapper cost
// ~130 us per call, as much as the fused BatchNorm work itself at CIFAR sizes. A C++ Function
// costs a few microseconds. The backward is its own op (conv_bn_relu_train_backward), so
// torch.compile still sees both halves; that op is not itself differentiable.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "common.h"

namespace cnnrepro::conv_bn_relu {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using TrainResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using BackwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

TrainResult call_train(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                       const c10::optional<at::Tensor>& bn_weight, const c10::optional<at::Tensor>& bn_bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       double eps) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("cnnrepro::conv_bn_relu_train", "")
                             .typed<TrainResult(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                                                const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
                                                at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t, double)>();
  return op.call(input, weight, bias, bn_weight, bn_bias, stride, padding, dilation, groups, eps);
}

BackwardResult call_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                             const at::Tensor& conv_out, const at::Tensor& mean, const at::Tensor& var,
                             const c10::optional<at::Tensor>& bn_weight, const c10::optional<at::Tensor>& bn_bias,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             double eps, std::array<bool, 3> output_mask) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("cnnrepro::conv_bn_relu_train_backward", "")
          .typed<BackwardResult(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                                const c10::optional<at::Tensor>&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                                int64_t, double, std::array<bool, 3>)>();
  return op.call(grad_output, input, weight, conv_out, mean, var, bn_weight, bn_bias, stride, padding, dilation, groups,
                 eps, output_mask);
}

// An undefined optional tensor as the Function's saved variable (it saves Tensors only).
c10::optional<at::Tensor> as_optional(const at::Tensor& t) {
  return t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt;
}

// The forward's arguments in order; autograd's edges are its defined tensors only, so an absent
// optional shifts the edge index of every tensor after it.
enum Arg { kInput, kWeight, kBias, kBnWeight, kBnBias, kStride, kPadding, kDilation, kGroups, kEps, kArgCount };

class ConvBNReLUTrain : public torch::autograd::Function<ConvBNReLUTrain> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& bn_weight,
                               const c10::optional<at::Tensor>& bn_bias, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, double eps) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, z, mean, var] =
        call_train(input, weight, bias, bn_weight, bn_bias, stride, padding, dilation, groups, eps);
    ctx->mark_non_differentiable({z, mean, var});
    ctx->set_materialize_grads(false);  // the non-differentiable outputs get no zero-filled gradients
    ctx->save_for_backward(
        {input, weight, z, mean, var, bn_weight.value_or(at::Tensor()), bn_bias.value_or(at::Tensor())});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["eps"] = eps;
    // Edge index of each tensor argument, -1 where it is absent.
    int64_t edge = 0;
    const std::array<bool, 5> defined{true, true, present(bias), present(bn_weight), present(bn_bias)};
    std::vector<int64_t> edges;
    for (bool d : defined) edges.push_back(d ? edge++ : -1);
    ctx->saved_data["edges"] = edges;
    return {y, z, mean, var};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list grads(kArgCount);
    const at::Tensor& grad_y = grad_outputs[0];
    if (!grad_y.defined()) return grads;  // the output took no part in the loss
    const auto edges = ctx->saved_data["edges"].toIntVector();
    auto needs = [&](Arg arg) { return edges[arg] >= 0 && ctx->needs_input_grad(edges[arg]); };
    const auto saved = ctx->get_saved_variables();
    const auto stride = ctx->saved_data["stride"].toIntVector();
    const auto padding = ctx->saved_data["padding"].toIntVector();
    const auto dilation = ctx->saved_data["dilation"].toIntVector();
    auto [dx, dw, db, dgamma, dbeta] =
        call_backward(grad_y, saved[0], saved[1], saved[2], saved[3], saved[4], as_optional(saved[5]),
                      as_optional(saved[6]), stride, padding, dilation, ctx->saved_data["groups"].toInt(),
                      ctx->saved_data["eps"].toDouble(), {needs(kInput), needs(kWeight), needs(kBias)});
    if (needs(kInput)) grads[kInput] = dx;
    if (needs(kWeight)) grads[kWeight] = dw;
    if (needs(kBias)) grads[kBias] = db;
    if (needs(kBnWeight)) grads[kBnWeight] = dgamma;
    if (needs(kBnBias)) grads[kBnBias] = dbeta;
    return grads;
  }
};

TrainResult conv_bn_relu_train_autograd(const at::Tensor& input, const at::Tensor& weight,
                                        const c10::optional<at::Tensor>& bias,
                                        const c10::optional<at::Tensor>& bn_weight,
                                        const c10::optional<at::Tensor>& bn_bias, at::IntArrayRef stride,
                                        at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, double eps) {
  auto out = ConvBNReLUTrain::apply(input, weight, bias, bn_weight, bn_bias, stride, padding, dilation, groups, eps);
  return {out[0], out[1], out[2], out[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnrepro, Autograd, m) { m.impl("conv_bn_relu_train", &conv_bn_relu_train_autograd); }

}  // namespace cnnrepro::conv_bn_relu

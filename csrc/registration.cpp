// Every op schema of the cnnrepro library, in one place, and the Python module that loads them.
#include <torch/extension.h>
#include <torch/library.h>

#include "cnnrepro_build_config.h"

TORCH_LIBRARY(cnnrepro, m) {
  // Local response normalization across channels, exactly F.local_response_norm.
  m.def("lrn(Tensor input, int size, float alpha, float beta, float k) -> Tensor");
  m.def("lrn_backward(Tensor grad_output, Tensor input, int size, float alpha, float beta, float k) -> Tensor");

  // 2-D max pooling returning (values, argmax flat within the H*W plane), exactly
  // F.max_pool2d(..., return_indices=True); an empty stride means stride = kernel_size.
  m.def(
      "max_pool2d_with_argmax(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool ceil_mode) -> (Tensor, Tensor)");
  m.def(
      "max_pool2d_with_argmax_backward(Tensor grad_output, Tensor indices, SymInt[] input_size, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");

  // Training-mode conv + BatchNorm (batch statistics) + ReLU. Returns (output, conv_out, batch mean,
  // biased batch var); the backward needs conv_out, mean and var, and recomputes the ReLU mask.
  m.def(
      "conv_bn_relu_train(Tensor input, Tensor weight, Tensor? bias, Tensor? bn_weight, Tensor? bn_bias, "
      "int[2] stride, int[2] padding, int[2] dilation, int groups, float eps) -> (Tensor, Tensor, Tensor, Tensor)");
  // Inference-mode conv + BatchNorm (running statistics) + ReLU, the normalization in place on the
  // convolution's output; not differentiable (ops.conv_bn_relu routes calls that need gradients
  // through the unfused ops).
  m.def(
      "conv_bn_relu_eval(Tensor input, Tensor weight, Tensor? bias, Tensor? bn_weight, Tensor? bn_bias, "
      "Tensor running_mean, Tensor running_var, int[2] stride, int[2] padding, int[2] dilation, int groups, "
      "float eps) -> Tensor");
  // Returns (grad_input, grad_weight, grad_bias, grad_bn_weight, grad_bn_bias); the first three
  // are empty where output_mask (input, weight, conv bias) says they are not needed.
  m.def(
      "conv_bn_relu_train_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor conv_out, Tensor mean, "
      "Tensor var, Tensor? bn_weight, Tensor? bn_bias, int[2] stride, int[2] padding, int[2] dilation, int groups, "
      "float eps, bool[3] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

namespace {

// What this _C was compiled with; cnnrepro.build_info() adds the runtime's view.
pybind11::dict build_info() {
  pybind11::dict info;
  info["torch_version"] = CNNREPRO_BUILD_TORCH_VERSION;
  info["with_cuda"] = static_cast<bool>(CNNREPRO_BUILD_WITH_CUDA);
  info["cuda_version"] = CNNREPRO_BUILD_CUDA_VERSION;
  info["cuda_arch_list"] = CNNREPRO_BUILD_ARCH_LIST;
  info["compiler"] = CNNREPRO_BUILD_COMPILER;
  info["platform"] = CNNREPRO_BUILD_PLATFORM;
  info["build_type"] = CNNREPRO_BUILD_TYPE;
  info["cpu_flags"] = CNNREPRO_BUILD_CPU_FLAGS;
#ifdef _OPENMP
  info["openmp"] = true;  // at::parallel_for really runs on several threads
#else
  info["openmp"] = false;  // at::parallel_for's OpenMP pragma compiled away: every CPU kernel is serial
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "cnnrepro's compiled ops; importing this module registers torch.ops.cnnrepro.*";
  m.def("build_info", &build_info, "What this extension was built with");
}

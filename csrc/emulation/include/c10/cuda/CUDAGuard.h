// Stand-in for c10's device guard in the host build of the CUDA kernels (cuda_on_host.h): the
// tensors are CPU tensors, so there is no device to switch to.
#pragma once

#include <c10/core/Device.h>

namespace c10::cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
}  // namespace c10::cuda

// The launch shape every elementwise CUDA kernel here uses: one thread per item, kThreads per block;
// and the one way kernels are launched.
#pragma once

#include <cstdint>

// CNNREPRO_LAUNCH(grid, block, shared_bytes, stream, kernel)(args...): nvcc's <<<...>>> launch, or,
// where csrc/emulation/cuda_on_host.h is force-included (the tests' host build of these sources),
// a launch that runs the grid's blocks one after another on CPU threads.
#ifndef CNNREPRO_LAUNCH
#define CNNREPRO_LAUNCH(grid, block, shared_bytes, stream, ...) __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#endif

namespace cnnrepro::cuda {

constexpr int kThreads = 256;

// Blocks of kThreads that cover n items.
inline unsigned int blocks_for(int64_t n) { return static_cast<unsigned int>((n + kThreads - 1) / kThreads); }

// The item a thread of a one-dimensional launch handles.
__device__ inline int64_t thread_item() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }

}  // namespace cnnrepro::cuda

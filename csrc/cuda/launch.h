// The launch shape every elementwise CUDA kernel here uses: one thread per item, kThreads per block.
#pragma once

#include <cstdint>

namespace cnnrepro::cuda {

constexpr int kThreads = 256;

// Blocks of kThreads that cover n items.
inline unsigned int blocks_for(int64_t n) { return static_cast<unsigned int>((n + kThreads - 1) / kThreads); }

// The item a thread of a one-dimensional launch handles.
__device__ inline int64_t thread_item() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }

}  // namespace cnnrepro::cuda

// The CUDA kernels of csrc/cuda/*.cu as host C++, for the tests (tests/test_cuda_emulation.py):
// force-included (g++ -include) when those sources are compiled as C++, with include/ first on the
// include path (stand-ins for the CUDA stream and device guard).
//
// What it models: a launch's grid (x only) runs block after block; each block's threads are real OS
// threads, so __shared__ arrays are shared by them (one array per kernel instantiation, reused by
// the next block) and __syncthreads() is a barrier of the block's threads. blockIdx, threadIdx,
// blockDim and gridDim are each thread's own. Device min/max are std's.
//
// What it does not: warps and their intrinsics (none are used), the memory model beyond the
// barrier (plain host memory: no coalescing, caching or visibility delays), timing, occupancy and
// launch limits (tested separately: tests/test_cuda_emulation.py checks every launch's shape),
// several streams, half-precision intrinsics, FMA contraction as nvcc does it.
#pragma once

#include <algorithm>
#include <barrier>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static  // one per kernel instantiation: blocks run one after another

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace cnnrepro::emulation {

inline thread_local dim3 block_index, thread_index, block_dim, grid_dim;
inline thread_local std::barrier<>* block_barrier = nullptr;

// A launch CUDA would refuse (or these kernels do not use) is an error here too: one-dimensional
// grids and blocks, at most 1024 threads a block, at most 2^31 - 1 blocks.
inline void check_launch_shape(dim3 grid, dim3 block) {
  if (grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1)
    throw std::invalid_argument("cuda_on_host: only one-dimensional launches are modelled");
  if (block.x == 0 || block.x > 1024)
    throw std::invalid_argument("cuda_on_host: " + std::to_string(block.x) + " threads a block; CUDA takes 1 to 1024");
  if (grid.x == 0 || grid.x > 0x7fffffffu)
    throw std::invalid_argument("cuda_on_host: a grid of " + std::to_string(grid.x) +
                                " blocks; CUDA takes 1 to 2^31 - 1");
}

// kernel<<<grid, block>>>(args...): the block's threads start once and walk the grid's blocks
// together, a barrier between blocks, so a block starts only when the last one has finished.
template <typename Kernel>
struct Launch {
  Kernel* kernel;
  dim3 grid, block;

  template <typename... Args>
  void operator()(Args... args) const {
    check_launch_shape(grid, block);
    const unsigned int threads = block.x;
    std::barrier<> barrier(threads);
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        thread_index = dim3(t);
        block_dim = block;
        grid_dim = grid;
        block_barrier = &barrier;
        for (unsigned int b = 0; b < grid.x; ++b) {
          block_index = dim3(b);
          kernel(args...);
          barrier.arrive_and_wait();
        }
      });
    }
    for (auto& thread : pool) thread.join();
  }
};

template <typename Kernel>
Launch<Kernel> launch(Kernel* kernel, dim3 grid, dim3 block) {
  return {kernel, grid, block};
}

}  // namespace cnnrepro::emulation

#define blockIdx ::cnnrepro::emulation::block_index
#define threadIdx ::cnnrepro::emulation::thread_index
#define blockDim ::cnnrepro::emulation::block_dim
#define gridDim ::cnnrepro::emulation::grid_dim

inline void __syncthreads() { ::cnnrepro::emulation::block_barrier->arrive_and_wait(); }

using std::max;
using std::min;

#define CNNREPRO_LAUNCH(grid, block, shared_bytes, stream, ...) \
  ::cnnrepro::emulation::launch(&__VA_ARGS__, dim3(grid), dim3(block))

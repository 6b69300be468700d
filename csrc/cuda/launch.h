// How the CUDA kernels here are launched: the one launch macro, CUDA's launch limits, and the
// one-dimensional launch shape of the elementwise kernels (grid-stride loops over any item count).
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

// CNNREPRO_LAUNCH(grid, block, shared_bytes, stream, kernel)(args...): nvcc's <<<...>>> launch, or,
// where csrc/emulation/cuda_on_host.h is force-included (the tests' host build of these sources),
// a launch that checks its shape against the limits below and runs the grid's blocks one after
// another on CPU threads.
#ifndef CNNREPRO_LAUNCH
#define CNNREPRO_LAUNCH(grid, block, shared_bytes, stream, ...) __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#endif

// The most blocks an elementwise launch uses; past it each thread takes several tiles. CUDA's own
// limit here; the emulation lowers it so that its small test tensors walk the loops more than once.
#ifndef CNNREPRO_GRID_CAP
#define CNNREPRO_GRID_CAP ::cnnrepro::cuda::kMaxGridX
#endif

namespace cnnrepro::cuda {

// CUDA's launch limits (every architecture from sm_30 on; the H100 is sm_90).
constexpr int64_t kMaxGridX = 2147483647;  // 2^31 - 1 blocks
constexpr int64_t kMaxGridYZ = 65535;
constexpr int64_t kMaxBlockThreads = 1024;
constexpr int64_t kMaxSharedBytes = 48 * 1024;  // static; and dynamic without an opt-in attribute

// The largest tensor, in elements, the kernels take: 2^62 (more than any device holds; it keeps
// every int64 index sum below 2^63).
constexpr int64_t kMaxItems = int64_t{1} << 62;

constexpr int kThreads = 256;  // threads a block of the elementwise kernels
constexpr int kUnroll = 4;     // items a thread of the per-channel elementwise kernels loads at once

inline void check_items(int64_t n) {
  TORCH_CHECK(n >= 0 && n <= kMaxItems, "cnnrepro: a CUDA kernel got ", n,
              " elements; the kernels take tensors of at most 2^62 elements");
}

// Blocks of `threads` threads, each thread taking `per_thread` items of a tile, for n items: one
// thread per item (or per_thread of them) up to `cap` blocks, beyond which the kernels' grid-stride
// loops take the rest. Never 0 (an empty launch is an error in CUDA; the callers skip n == 0).
inline unsigned int blocks_for(int64_t n, int64_t threads = kThreads, int64_t per_thread = 1,
                               int64_t cap = CNNREPRO_GRID_CAP) {
  check_items(n);
  const int64_t tile = threads * per_thread;  // n + tile - 1 < 2^63: no overflow
  return static_cast<unsigned int>(std::clamp<int64_t>((n + tile - 1) / tile, 1, std::min(cap, kMaxGridX)));
}

// A thread's first item of a one-dimensional launch, and the step of its grid-stride loop: items
// thread_item(), + grid_stride(), ... below n (all < 2^62 + 2^41: no int64 overflow).
__device__ inline int64_t thread_item() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// The same in tiles of blockDim.x * kUnroll items (launched with blocks_for(n, kThreads, kUnroll)):
// thread t takes items tile + t + u * blockDim.x for u < kUnroll, so each of its kUnroll loads is,
// across a warp, one coalesced access, and all kUnroll are in flight at once.
__device__ inline int64_t first_tile() { return static_cast<int64_t>(blockIdx.x) * blockDim.x * kUnroll; }
__device__ inline int64_t tile_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x * kUnroll; }

}  // namespace cnnrepro::cuda

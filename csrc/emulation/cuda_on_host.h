// The CUDA kernels of csrc/cuda/*.cu as host C++, for the tests (tests/test_cuda_emulation.py):
// force-included (g++ -include) when those sources are compiled as C++, with include/ first on the
// include path (stand-ins for the CUDA stream and device guard).
//
// What it models: a launch's grid (x only) runs block after block; each block's threads are real OS
// threads (a pool started once and reused by every launch), so __shared__ arrays are shared by them
// (one array per kernel instantiation, reused by the next block) and __syncthreads() is a barrier
// of the block's threads. blockIdx, threadIdx, blockDim and gridDim are each thread's own. Device
// min/max are std's. Every launch's shape is checked against CUDA's limits (check_launch_shape: an
// error, as CUDA's own refusal would be) and recorded with the index width of its kernel (launch_log).
//
// Knobs the tests turn (settings): the elementwise kernels' grid cap, lowered (default 3 blocks)
// so that small tensors walk the grid-stride loops more than once; the 32-bit index limit, lowered
// to run the 64-bit instantiations on small tensors; the reductions' least items a thread, lowered
// (default 1) so that small tensors are cut into several chunks; and a plan-only mode, in which a
// launch is checked and recorded but not run, so that the ops can be called on meta tensors of any
// size (no allocation) to check the launches of the largest shapes.
//
// What it does not: warps and their intrinsics (none are used), the memory model beyond the
// barrier (plain host memory: no coalescing, caching or visibility delays), timing, occupancy,
// several streams, half-precision intrinsics, FMA contraction as nvcc does it, and the static
// shared memory of a kernel (nvcc refuses more than 48 KB at compile time; the kernels assert it).
#pragma once

#include <algorithm>
#include <barrier>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
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

// What the tests may change (see above): the defaults exercise the kernels' loops on small tensors.
struct Settings {
  int64_t grid_cap = 3;
  int64_t narrow_limit = 2147483647;
  int64_t reduce_items = 1;
  bool plan_only = false;
};
inline Settings settings;

// One launch: its shape, dynamic shared memory and the index width of its kernel (0: none chosen).
struct LaunchRecord {
  dim3 grid, block;
  int64_t shared_bytes;
  int index_bits;
};
inline std::vector<LaunchRecord> launch_log;
inline int index_bits = 0;  // set by dispatch_index (CNNREPRO_NOTE_INDEX_BITS) around its launches

inline thread_local dim3 block_index, thread_index, block_dim, grid_dim;
inline thread_local std::barrier<>* block_barrier = nullptr;

// A launch CUDA would refuse is an error: grid.x 1 to 2^31 - 1, grid.y and grid.z 1 to 65535, block
// dims 1 to 1024 (x, y), 64 (z) and 1024 threads in all, dynamic shared memory at most 48 KB. And
// only one-dimensional launches are modelled (all these kernels use).
inline void check_launch_shape(dim3 grid, dim3 block, int64_t shared_bytes) {
  const auto fail = [&](const std::string& what) {
    throw std::invalid_argument(
        "cuda_on_host: a launch of grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) + ", " +
        std::to_string(grid.z) + "), block (" + std::to_string(block.x) + ", " + std::to_string(block.y) + ", " +
        std::to_string(block.z) + "), " + std::to_string(shared_bytes) + " bytes of shared memory: " + what);
  };
  if (grid.x == 0 || grid.x > 0x7fffffffu) fail("CUDA takes 1 to 2^31 - 1 blocks along x");
  if (grid.y == 0 || grid.y > 65535 || grid.z == 0 || grid.z > 65535) fail("CUDA takes 1 to 65535 blocks along y, z");
  if (block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
      uint64_t{block.x} * block.y * block.z > 1024)
    fail("CUDA takes 1 to 1024 threads a block");
  if (shared_bytes < 0 || shared_bytes > 48 * 1024) fail("more than 48 KB of dynamic shared memory needs an opt-in");
  if (grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1) fail("only one-dimensional launches are modelled");
}

// The threads that run the launches: started once, as many as the largest block so far, and reused
// by every launch (starting a block's threads anew for each launch cost ten times the launch's own
// work under TSan). run(n, job) calls job(t) on threads t = 0..n-1 and returns when all have
// returned; its mutex orders one launch's memory accesses before the next's, as a stream does.
class ThreadPool {
 public:
  ~ThreadPool() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    start_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  void run(unsigned int threads, const std::function<void(unsigned int)>& job) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (workers_.size() < threads) {
      const auto t = static_cast<unsigned int>(workers_.size());
      workers_.emplace_back([this, t] { work(t); });
    }
    job_ = &job;
    active_ = pending_ = threads;
    ++generation_;
    start_.notify_all();
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void work(unsigned int t) {
    uint64_t seen = 0;  // a thread started by a run takes part in it: its generation is past 0
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      start_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      if (t >= active_) continue;
      const std::function<void(unsigned int)>* job = job_;
      lock.unlock();
      (*job)(t);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex mutex_;
  std::condition_variable start_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(unsigned int)>* job_ = nullptr;
  unsigned int active_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

inline ThreadPool& thread_pool() {
  static ThreadPool pool;
  return pool;
}

// kernel<<<grid, block>>>(args...) as body(): the block's threads walk the grid's blocks together,
// a barrier between blocks, so a block starts only when the last one has finished. Not a template:
// compiled once, not once per kernel instantiation (the sanitized builds' time).
inline void run_grid(dim3 grid, dim3 block, const std::function<void()>& body) {
  std::barrier<> barrier(block.x);
  thread_pool().run(block.x, [&](unsigned int t) {
    thread_index = dim3(t);
    block_dim = block;
    grid_dim = grid;
    block_barrier = &barrier;
    for (unsigned int b = 0; b < grid.x; ++b) {
      block_index = dim3(b);
      body();
      barrier.arrive_and_wait();
    }
  });
}

template <typename Kernel>
struct Launch {
  Kernel* kernel;
  dim3 grid, block;
  int64_t shared_bytes;

  // Runs the kernel on the arguments make_args() returns (not called in plan-only mode: the
  // arguments of a launch on meta tensors, their data pointers, cannot be taken).
  template <typename MakeArgs>
  void run(MakeArgs make_args) const {
    launch_log.push_back({grid, block, shared_bytes, index_bits});
    check_launch_shape(grid, block, shared_bytes);
    if (settings.plan_only) return;
    const auto args = make_args();
    run_grid(grid, block, [&] { std::apply(kernel, args); });
  }
};

template <typename Kernel>
Launch<Kernel> launch(Kernel* kernel, dim3 grid, dim3 block, int64_t shared_bytes) {
  return {kernel, grid, block, shared_bytes};
}

}  // namespace cnnrepro::emulation

#define blockIdx ::cnnrepro::emulation::block_index
#define threadIdx ::cnnrepro::emulation::thread_index
#define blockDim ::cnnrepro::emulation::block_dim
#define gridDim ::cnnrepro::emulation::grid_dim

inline void __syncthreads() { ::cnnrepro::emulation::block_barrier->arrive_and_wait(); }

using std::max;
using std::min;

// CNNREPRO_LAUNCH(grid, block, shared_bytes, stream, kernel)(args...) becomes
// launch(kernel, ...).run([&] { return std::make_tuple(args...); }): the macro's expansion ends in
// the name of a function-like macro, which takes the source's following (args...) as its own.
#define CNNREPRO_LAUNCH(grid, block, shared_bytes, stream, ...) \
  ::cnnrepro::emulation::launch(&__VA_ARGS__, dim3(grid), dim3(block), shared_bytes).run CNNREPRO_EMULATED_ARGS
#define CNNREPRO_EMULATED_ARGS(...) ([&] { return std::make_tuple(__VA_ARGS__); })
#define CNNREPRO_GRID_CAP ::cnnrepro::emulation::settings.grid_cap
#define CNNREPRO_NARROW_LIMIT ::cnnrepro::emulation::settings.narrow_limit
#define CNNREPRO_REDUCE_ITEMS ::cnnrepro::emulation::settings.reduce_items
#define CNNREPRO_NOTE_INDEX_BITS(bits) (::cnnrepro::emulation::index_bits = (bits))

// Test-only entry points of the host build of the CUDA kernels (tests/test_cuda_emulation.py), as
// torch.ops.cnnrepro_emulation.*: the emulation's settings and launch log (cuda_on_host.h), and the
// index helpers of csrc/cuda (launch.h, index.h) called directly, so that they can be checked at
// sizes past 2^31 and 2^32 elements without allocating any.
#include <torch/library.h>

#include <vector>

#include "../cuda/index.h"
#include "../cuda/launch.h"

namespace cnnrepro::emulation {
namespace {

void configure(int64_t grid_cap, int64_t narrow_limit, int64_t reduce_items, bool plan_only) {
  TORCH_CHECK(grid_cap >= 1 && reduce_items >= 1, "configure: grid_cap and reduce_items must be >= 1");
  settings = {grid_cap, narrow_limit, reduce_items, plan_only};
}

// The launches since the last call, each as grid x, y, z, block x, y, z, shared bytes, index bits.
std::vector<int64_t> take_launches() {
  std::vector<int64_t> out;
  for (const LaunchRecord& r : launch_log) {
    out.insert(out.end(),
               {r.grid.x, r.grid.y, r.grid.z, r.block.x, r.block.y, r.block.z, r.shared_bytes, r.index_bits});
  }
  launch_log.clear();
  return out;
}

int64_t blocks_for(int64_t n, int64_t threads, int64_t per_thread, int64_t cap) {
  return cuda::blocks_for(n, threads, per_thread, cap);
}

template <typename F>
void with_index(int64_t bits, F&& f) {
  TORCH_CHECK(bits == 32 || bits == 64, "bits must be 32 or 64");
  if (bits == 32) {
    f(int32_t{});
  } else {
    f(int64_t{});
  }
}

template <typename index_t>
index_t checked(int64_t v) {
  TORCH_CHECK(v >= 0 && static_cast<int64_t>(static_cast<index_t>(v)) == v, v, " does not fit the index type");
  return static_cast<index_t>(v);
}

// (n, c, h, w) of each offset in an N x C x H x W tensor (Layout4::position), flattened.
std::vector<int64_t> position(at::IntArrayRef offsets, int64_t C, int64_t H, int64_t W, bool channels_last,
                              int64_t bits) {
  std::vector<int64_t> out;
  with_index(bits, [&](auto index) {
    using index_t = decltype(index);
    const cuda::Layout4<index_t> layout(C, H, W, channels_last);
    for (const int64_t i : offsets) {
      const cuda::Position<index_t> p = layout.position(checked<index_t>(i));
      out.insert(out.end(), {p.n, p.c, p.h, p.w});
    }
  });
  return out;
}

// The offset of each (n, c, h, w) given flattened (Layout4::offset).
std::vector<int64_t> offset(at::IntArrayRef positions, int64_t C, int64_t H, int64_t W, bool channels_last,
                            int64_t bits) {
  TORCH_CHECK(positions.size() % 4 == 0, "positions come in fours");
  std::vector<int64_t> out;
  with_index(bits, [&](auto index) {
    using index_t = decltype(index);
    const cuda::Layout4<index_t> layout(C, H, W, channels_last);
    for (size_t k = 0; k < positions.size(); k += 4) {
      out.push_back(layout.offset(checked<index_t>(positions[k]), checked<index_t>(positions[k + 1]),
                                  checked<index_t>(positions[k + 2]), checked<index_t>(positions[k + 3])));
    }
  });
  return out;
}

// The channel of each offset of an [N, C, S] tensor (ChannelIndexer::channel).
std::vector<int64_t> channel(at::IntArrayRef offsets, int64_t N, int64_t C, int64_t S, bool channels_last,
                             int64_t bits) {
  std::vector<int64_t> out;
  with_index(bits, [&](auto index) {
    using index_t = decltype(index);
    const cuda::ChannelIndexer<index_t> indexer(Geometry{N, C, S, channels_last});
    for (const int64_t i : offsets) out.push_back(indexer.channel(checked<index_t>(i)));
  });
  return out;
}

// Divider<int32_t>: the quotients and remainders of the given dividends, flattened; and how many of
// `count` dividends first, first + step, ... (within [0, 2^31)) it gets wrong against the hardware's.
std::vector<int64_t> divmod32(int64_t divisor, at::IntArrayRef dividends) {
  const cuda::Divider<int32_t> d(divisor);
  std::vector<int64_t> out;
  for (const int64_t n : dividends) {
    const auto q = d.divmod(checked<int32_t>(n));
    out.insert(out.end(), {q.quotient, q.remainder});
  }
  return out;
}

int64_t divmod32_mismatches(int64_t divisor, int64_t first, int64_t count, int64_t step) {
  const cuda::Divider<int32_t> d(divisor);
  int64_t wrong = 0;
  for (int64_t k = 0, n = first; k < count && n <= 2147483647; ++k, n += step) {
    const auto q = d.divmod(static_cast<int32_t>(n));
    wrong += q.quotient != n / divisor || q.remainder != n % divisor;
  }
  return wrong;
}

}  // namespace

TORCH_LIBRARY(cnnrepro_emulation, m) {
  m.def("configure(int grid_cap, int narrow_limit, int reduce_items, bool plan_only) -> ()", &configure);
  m.def("take_launches() -> int[]", &take_launches);
  m.def("blocks_for(int n, int threads, int per_thread, int cap) -> int", &blocks_for);
  m.def("position(int[] offsets, int C, int H, int W, bool channels_last, int bits) -> int[]", &position);
  m.def("offset(int[] positions, int C, int H, int W, bool channels_last, int bits) -> int[]", &offset);
  m.def("channel(int[] offsets, int N, int C, int S, bool channels_last, int bits) -> int[]", &channel);
  m.def("divmod32(int divisor, int[] dividends) -> int[]", &divmod32);
  m.def("divmod32_mismatches(int divisor, int first, int count, int step) -> int", &divmod32_mismatches);
}

}  // namespace cnnrepro::emulation

// Loop helpers for the CPU kernels. Fixed-width blocks for inner loops: a loop over kLanes elements whose trip count is
// a compile-time constant becomes straight vector code, with its accumulators in registers.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace cnnrepro::cpu {

constexpr int kLanes = 16;

// Calls body(start, width) over [0, n) in blocks of kLanes; full blocks get the width as a
// compile-time constant, the tail block as a plain int.
template <typename Body>
inline void for_each_block(int64_t n, Body&& body) {
  int64_t start = 0;
  for (; start + kLanes <= n; start += kLanes) body(start, std::integral_constant<int, kLanes>{});
  if (start < n) body(start, static_cast<int>(n - start));
}

// parallel_for's grain for items of work_per_item elements each: about at::internal::GRAIN_SIZE
// elements per task, so a small tensor runs inline rather than paying an OpenMP fork and join.
inline int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, work_per_item));
}

}  // namespace cnnrepro::cpu

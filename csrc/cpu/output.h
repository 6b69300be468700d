// Outputs the CPU kernels allocate. A large tensor is a fresh mapping from the OS on each call
// (glibc maps every block of 32 MiB or more and unmaps it when freed), and writing it faults its pages
// in one by one: 9,000 faults for AlexNet's 37 MB activations, more time than the kernel itself.
// Asking for transparent huge pages before the first write makes that 18 faults of 2 MiB each.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace cnnrepro::cpu {

// Blocks this large come from their own mapping under glibc's defaults (its largest mmap threshold).
constexpr int64_t kOwnMappingBytes = int64_t(32) << 20;
constexpr uintptr_t kHugePage = uintptr_t(2) << 20;

// Advises the kernel to back `t`'s whole 2 MiB pages with huge pages. Call it before `t` is first
// written. Only a hint: where transparent huge pages are off (or not Linux), nothing changes.
inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (!t.device().is_cpu() || static_cast<int64_t>(t.nbytes()) < kOwnMappingBytes) return;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t first = (begin + kHugePage - 1) & ~(kHugePage - 1), last = (begin + t.nbytes()) & ~(kHugePage - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

}  // namespace cnnrepro::cpu

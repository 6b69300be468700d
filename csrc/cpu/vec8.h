// Eight float32 lanes (one AVX register; two SSE registers on a baseline build) as GCC/Clang vector
// extensions, with their int32 companions for masks and small positions. For loops the compiler's
// auto-vectorizer leaves scalar: a select whose mask mixes float compares with int64 compares.
#pragma once

#include <cstdint>
#include <cstring>

namespace cnnrepro::cpu::vec8 {

constexpr int kWidth = 8;
using Floats = float __attribute__((vector_size(32)));
using Ints = int32_t __attribute__((vector_size(32)));   // lane masks (0 or -1) and int32 values
using Longs = int64_t __attribute__((vector_size(32)));  // four int64 lanes: half of a group

inline Floats load(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, Floats v) { std::memcpy(p, &v, sizeof v); }

inline Floats splat(float value) { return Floats{} + value; }
inline Ints splat(int32_t value) { return Ints{} + value; }

// Lane masks of p[0..7] == value, for eight int64s.
inline Ints equal_mask(const int64_t* p, int64_t value) {
  Longs low, high;
  std::memcpy(&low, p, sizeof low);
  std::memcpy(&high, p + 4, sizeof high);
  const Ints lo32 = reinterpret_cast<Ints>(low == value), hi32 = reinterpret_cast<Ints>(high == value);
  return __builtin_shufflevector(lo32, hi32, 0, 2, 4, 6, 8, 10, 12, 14);  // a 64-bit mask's low halves
}

// Stores eight int32 lanes widened to int64.
inline void store_widened(int64_t* p, Ints v) {
  using Quad = int32_t __attribute__((vector_size(16)));
  const Longs low = __builtin_convertvector(Quad(__builtin_shufflevector(v, v, 0, 1, 2, 3)), Longs);
  const Longs high = __builtin_convertvector(Quad(__builtin_shufflevector(v, v, 4, 5, 6, 7)), Longs);
  std::memcpy(p, &low, sizeof low);
  std::memcpy(p + 4, &high, sizeof high);
}

}  // namespace cnnrepro::cpu::vec8

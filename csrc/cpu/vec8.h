// Eight float32 lanes (one AVX register; two SSE registers on a baseline build) as GCC/Clang vector
// extensions, with their int32 companions for masks and small positions, and float64 halves for
// sums. For loops the compiler's auto-vectorizer leaves scalar: a float compare selecting both a
// value and an integer position, or float32 data summed in float64 lanes.
#pragma once

#include <cstdint>
#include <cstring>

#ifdef __AVX__
#include <immintrin.h>
#endif

namespace cnnrepro::cpu::vec8 {

constexpr int kWidth = 8;
using Floats = float __attribute__((vector_size(32)));
using Ints = int32_t __attribute__((vector_size(32)));    // lane masks (0 or -1) and int32 values
using Longs = int64_t __attribute__((vector_size(32)));   // four int64 lanes: half of a group
using Doubles = double __attribute__((vector_size(32)));  // four float64 lanes: half of a group

inline Floats load(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, Floats v) { std::memcpy(p, &v, sizeof v); }

inline Ints load(const int32_t* p) {
  Ints v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(int32_t* p, Ints v) { std::memcpy(p, &v, sizeof v); }

inline Floats splat(float value) { return Floats{value, value, value, value, value, value, value, value}; }
inline Ints splat(int32_t value) { return Ints{} + value; }

// Lanes where mask is set (-1, as a comparison gives), +0 elsewhere: a bitwise select, NaN-safe.
inline Floats keep_if(Ints mask, Floats v) { return reinterpret_cast<Floats>(reinterpret_cast<Ints>(v) & mask); }

// Lanes 0-3 and 4-7 widened to float64 (exactly). With AVX, one vcvtps2pd each: GCC 12 lowers
// __builtin_convertvector to two 128-bit conversions and an insert, which made the double sums of
// conv-BN-ReLU's reductions conversion-bound.
inline Doubles low_half(Floats v) {
#ifdef __AVX__
  return _mm256_cvtps_pd(_mm256_castps256_ps128(v));
#else
  return __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3), Doubles);
#endif
}

inline Doubles high_half(Floats v) {
#ifdef __AVX__
  return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
#else
  return __builtin_convertvector(__builtin_shufflevector(v, v, 4, 5, 6, 7), Doubles);
#endif
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

// Index arithmetic of the CUDA kernels: 32-bit where every offset of a call fits, 64-bit otherwise.
//
// A GPU has no integer divider: a 64-bit division is a call to a ~70-instruction routine (with a
// 32-bit shortcut taken when both operands fit), a 32-bit one ~15 instructions, and 64-bit products
// and sums cost two to three instructions each. Elementwise kernels that turn a flat offset into
// (n, c, h, w) per element spend more on that than on their few bytes of memory traffic, so each
// kernel is instantiated for int32_t and int64_t indices (dispatch_index picks by the call's largest
// offset), and in 32 bits every division by a tensor dimension is a multiply-high, an add and a
// shift (Divider<int32_t>, the round-up method of Granlund and Montgomery, PLDI 1994, as ATen's
// IntDivider): exact for dividends and divisors in [1, 2^31). tests/test_cuda_emulation.py checks
// these helpers directly at sizes past 2^31, 2^32 and 2^40 elements.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "../common.h"

// The largest offset the 32-bit instantiations take; the emulation can lower it to run the 64-bit
// ones on small tensors.
#ifndef CNNREPRO_NARROW_LIMIT
#define CNNREPRO_NARROW_LIMIT int64_t{2147483647}
#endif
// Told the width dispatch_index chose (the emulation records it with each launch).
#ifndef CNNREPRO_NOTE_INDEX_BITS
#define CNNREPRO_NOTE_INDEX_BITS(bits) \
  do {                                 \
  } while (0)
#endif

namespace cnnrepro::cuda {

// Whether a call whose offsets, coordinates and sums of them all lie in [-extent, extent] may
// index in 32 bits.
inline bool narrow_fits(int64_t extent) { return extent >= 0 && extent <= CNNREPRO_NARROW_LIMIT; }

// f(int32_t{}) when narrow_fits(extent), else f(int64_t{}); f takes index_t = decltype(its argument).
template <typename F>
inline void dispatch_index(int64_t extent, F&& f) {
  if (narrow_fits(extent)) {
    CNNREPRO_NOTE_INDEX_BITS(32);
    f(int32_t{});
  } else {
    CNNREPRO_NOTE_INDEX_BITS(64);
    f(int64_t{});
  }
  CNNREPRO_NOTE_INDEX_BITS(0);
}

template <typename index_t>
struct QuotientRemainder {
  index_t quotient, remainder;
};

// n / d and n % d for n >= 0 and a divisor d >= 1 fixed for a launch: the hardware's division.
template <typename index_t>
struct Divider {
  index_t divisor;
  explicit Divider(int64_t d) : divisor(static_cast<index_t>(d)) { TORCH_CHECK(d >= 1, "cnnrepro: a divisor of ", d); }
  C10_HOST_DEVICE index_t divide(index_t n) const { return n / divisor; }
  C10_HOST_DEVICE QuotientRemainder<index_t> divmod(index_t n) const {
    const index_t q = n / divisor;
    return {q, n - q * divisor};
  }
};

// In 32 bits: n / d = (umulhi(n, magic) + n) >> shift, with shift = ceil(log2 d) and
// magic = floor(2^32 (2^shift - d) / d) + 1 (< 2^32); exact for 0 <= n < 2^31 and 1 <= d < 2^31,
// where umulhi(n, magic) <= n keeps the sum below 2^32.
template <>
struct Divider<int32_t> {
  uint32_t divisor, magic, shift;
  explicit Divider(int64_t d) : divisor(static_cast<uint32_t>(d)), magic(0), shift(0) {
    TORCH_CHECK(d >= 1 && d <= 2147483647, "cnnrepro: a 32-bit divisor of ", d);
    while ((uint64_t{1} << shift) < divisor) ++shift;
    magic = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - divisor)) / divisor + 1);
  }
  C10_HOST_DEVICE int32_t divide(int32_t n) const {
    const uint32_t u = static_cast<uint32_t>(n);
#ifdef __CUDA_ARCH__
    const uint32_t high = __umulhi(u, magic);
#else
    const uint32_t high = static_cast<uint32_t>((static_cast<uint64_t>(u) * magic) >> 32);
#endif
    return static_cast<int32_t>((high + u) >> shift);
  }
  C10_HOST_DEVICE QuotientRemainder<int32_t> divmod(int32_t n) const {
    const int32_t q = divide(n);
    return {q, n - q * static_cast<int32_t>(divisor)};
  }
};

// (n, c, h, w) of an element of an N x C x H x W tensor.
template <typename index_t>
struct Position {
  index_t n, c, h, w;
};

// An N x C x H x W tensor stored contiguous or channels-last: an element's position from its
// offset (three divisions by the dimensions, no modulo) and back (three multiply-adds).
template <typename index_t>
struct Layout4 {
  index_t C, H, W;
  bool channels_last;
  Divider<index_t> by_c, by_h, by_w;
  Layout4(int64_t C_, int64_t H_, int64_t W_, bool channels_last_)
      : C(static_cast<index_t>(C_)),
        H(static_cast<index_t>(H_)),
        W(static_cast<index_t>(W_)),
        channels_last(channels_last_),
        by_c(C_),
        by_h(H_),
        by_w(W_) {}

  C10_HOST_DEVICE Position<index_t> position(index_t i) const {
    if (channels_last) {
      const auto [nhw, c] = by_c.divmod(i);
      const auto [nh, w] = by_w.divmod(nhw);
      const auto [n, h] = by_h.divmod(nh);
      return {n, c, h, w};
    }
    const auto [nch, w] = by_w.divmod(i);
    const auto [nc, h] = by_h.divmod(nch);
    const auto [n, c] = by_c.divmod(nc);
    return {n, c, h, w};
  }
  C10_HOST_DEVICE index_t offset(index_t n, index_t c, index_t h, index_t w) const {
    return channels_last ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
  }
};

// The channel of an element of a dense tensor seen as [N, C, S] (Geometry), from its offset, and
// the distance between neighbouring channels (S contiguous, 1 channels-last).
template <typename index_t>
struct ChannelIndexer {
  index_t C, cstride;
  bool channels_last;
  Divider<index_t> by_c, by_s;
  explicit ChannelIndexer(const Geometry& g)
      : C(static_cast<index_t>(g.C)),
        cstride(static_cast<index_t>(g.channels_last ? 1 : g.S)),
        channels_last(g.channels_last),
        by_c(g.C),
        by_s(g.channels_last ? 1 : g.S) {}
  C10_HOST_DEVICE index_t channel(index_t i) const { return by_c.divmod(channels_last ? i : by_s.divide(i)).remainder; }
};

}  // namespace cnnrepro::cuda

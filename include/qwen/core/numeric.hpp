// Scalar storage types of checkpoints and activations: bf16, fp16 and fp8 e4m3 (OCP "e4m3fn").
// Each is a trivially copyable struct that holds its bits; arithmetic happens in float.
//
//   to float:   exact for every value. NaN inputs: see each type.
//   from float: round to nearest, ties to even (RNE), including into subnormals.
//
// The results, NaN bit patterns included, equal CUDA's host conversions bit for bit
// (__float2bfloat16, __float2half_rn, __nv_cvt_float_to_fp8, __bfloat162float, __half2float,
// __nv_cvt_fp8_to_halfraw); tests/cuda/test_numeric_cuda_reference.cpp checks every input
// pattern of the narrow types and millions of floats.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "qwen/core/error.hpp"

namespace qwen {

using fp32 = float;

namespace detail {

inline constexpr std::uint32_t float_sign_bit = 0x8000'0000u;
inline constexpr std::uint32_t float_abs_mask = 0x7fff'ffffu;
inline constexpr std::uint32_t float_inf_bits = 0x7f80'0000u;
// The NaN CUDA's half -> float conversion returns for every NaN input.
inline constexpr std::uint32_t float_canonical_nan_bits = 0x7fff'ffffu;

// value >> shift, rounded to nearest with ties to even. Precondition: 1 <= shift, value < 2^31.
[[nodiscard]] constexpr std::uint32_t shift_right_rne(std::uint32_t value, unsigned shift) noexcept {
  if (shift >= 32) return 0;  // value < 2^31 <= 2^(shift-1): below half of the smallest step
  const std::uint32_t kept = value >> shift;
  const std::uint32_t rest = value & ((1u << shift) - 1);
  const std::uint32_t half = 1u << (shift - 1);
  return kept + ((rest > half || (rest == half && (kept & 1u))) ? 1u : 0u);
}

// Rounds a finite float magnitude (its bits, sign cleared) with RNE to a binary format with
// ExpBits exponent bits (bias 2^(ExpBits-1) - 1), MantBits stored mantissa bits and subnormals.
// Returns the magnitude code (biased exponent << MantBits | mantissa) as if the exponent range
// continued upward without special values: the caller decides what a code beyond the largest
// finite one means (infinity, saturation or NaN). A mantissa carry moves into the exponent field,
// which is exactly the rounding up to the next binade.
template <int ExpBits, int MantBits>
[[nodiscard]] constexpr std::uint32_t round_float_magnitude(std::uint32_t abs_bits) noexcept {
  constexpr int bias = (1 << (ExpBits - 1)) - 1;
  constexpr unsigned dropped = 23 - MantBits;
  const int field = static_cast<int>(abs_bits >> 23);
  // A float subnormal (field 0) has the same quantum as field 1, without the implicit bit.
  const int exponent = (field == 0 ? 1 : field) - 127 + bias;  // biased exponent in the target
  if (exponent >= 1) return shift_right_rne(abs_bits - (static_cast<std::uint32_t>(127 - bias) << 23), dropped);
  // Target subnormal: quantum 2^(1 - bias - MantBits); shift the full significand further.
  const std::uint32_t significand = (abs_bits & 0x7f'ffffu) | (field == 0 ? 0u : 0x80'0000u);
  return shift_right_rne(significand, dropped + static_cast<unsigned>(1 - exponent));
}

}  // namespace detail

// bfloat16: 1 sign, 8 exponent, 7 mantissa bits; the upper half of a float.
//   to float:   exact, NaN payload and sign kept (the bits are shifted into the upper half).
//   from float: RNE. Finite values beyond the largest bf16 round to +-inf exactly as RNE on the
//               unbounded exponent dictates (|x| >= 0x1.ffp127 -> inf); +-inf stays +-inf.
//               Every NaN becomes 0x7fff (positive quiet NaN, all payload bits set), whatever its
//               sign and payload: CUDA's choice.
struct bf16 {
  std::uint16_t bits;

  [[nodiscard]] static constexpr bf16 from_bits(std::uint16_t b) noexcept { return bf16{b}; }

  [[nodiscard]] static constexpr bf16 from_float(float x) noexcept {
    const auto u = std::bit_cast<std::uint32_t>(x);
    if ((u & detail::float_abs_mask) > detail::float_inf_bits) return bf16{0x7fff};
    // Rounding the raw bits is RNE on the value: a carry out of the mantissa bumps the exponent,
    // and past the largest finite value it produces exactly the infinity pattern.
    return bf16{static_cast<std::uint16_t>(detail::shift_right_rne(u & detail::float_abs_mask, 16) |
                                           ((u & detail::float_sign_bit) >> 16))};
  }

  [[nodiscard]] constexpr float to_float() const noexcept {
    return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
  }
};

// IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits; max 65504, smallest subnormal 2^-24.
//   to float:   exact; every NaN becomes 0x7fffffff (CUDA's host __half2float does the same).
//   from float: RNE, subnormals rounded correctly; |x| >= 65520 (the halfway point to 2^16) and
//               +-inf give +-inf; every NaN becomes 0x7fff.
struct fp16 {
  std::uint16_t bits;

  [[nodiscard]] static constexpr fp16 from_bits(std::uint16_t b) noexcept { return fp16{b}; }

  [[nodiscard]] static constexpr fp16 from_float(float x) noexcept {
    const auto u = std::bit_cast<std::uint32_t>(x);
    const std::uint32_t abs = u & detail::float_abs_mask;
    if (abs > detail::float_inf_bits) return fp16{0x7fff};
    std::uint32_t code = detail::round_float_magnitude<5, 10>(abs);
    if (code >= 0x7c00u) code = 0x7c00u;  // beyond 65504 after rounding: infinity
    return fp16{static_cast<std::uint16_t>(code | ((u & detail::float_sign_bit) >> 16))};
  }

  [[nodiscard]] constexpr float to_float() const noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
    const std::uint32_t exponent = (bits >> 10) & 0x1fu;
    const std::uint32_t mantissa = bits & 0x3ffu;
    if (exponent == 0x1f)
      return std::bit_cast<float>(mantissa != 0 ? detail::float_canonical_nan_bits : (sign | detail::float_inf_bits));
    if (exponent == 0) {
      const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;  // exact: mantissa < 2^10
      return sign != 0 ? -magnitude : magnitude;
    }
    return std::bit_cast<float>(sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13));
  }
};

// What fp8 e4m3 conversion does with values outside its range (|x| beyond 448 after rounding).
enum class Saturation : std::uint8_t {
  none,    // out of range and +-inf -> NaN (__NV_NOSAT)
  finite,  // out of range and +-inf -> +-448 (__NV_SATFINITE)
};

// OCP fp8 e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits, no infinities.
// S.1111.111 is NaN; the largest finite value is S.1111.110 = 448; smallest subnormal 2^-9.
//   to float:   exact; both NaN patterns (0x7f, 0xff) become 0x7fffffff, as CUDA's conversion
//               through half does.
//   from float: RNE, subnormals rounded correctly. A NaN input gives 0x7f in both modes.
//               Rounding happens first, as if the exponent range continued, so 464 (halfway
//               between 448 and the missing 480) rounds to 448 (even) in both modes. Anything
//               that rounds beyond 448, and +-inf, gives:
//                 Saturation::finite -> +-448 (0x7e / 0xfe)
//                 Saturation::none   -> NaN with the input's sign (0x7f / 0xff)
//               matching __nv_cvt_float_to_fp8(x, __NV_SATFINITE / __NV_NOSAT, __NV_E4M3).
struct fp8_e4m3 {
  std::uint8_t bits;

  [[nodiscard]] static constexpr fp8_e4m3 from_bits(std::uint8_t b) noexcept { return fp8_e4m3{b}; }

  [[nodiscard]] static constexpr fp8_e4m3 from_float(float x, Saturation saturation) noexcept {
    const auto u = std::bit_cast<std::uint32_t>(x);
    const std::uint32_t abs = u & detail::float_abs_mask;
    if (abs > detail::float_inf_bits) return fp8_e4m3{0x7f};
    const std::uint32_t sign = (u & detail::float_sign_bit) >> 24;
    std::uint32_t code = detail::round_float_magnitude<4, 3>(abs);  // +-inf lands beyond 0x7e too
    if (code > 0x7eu) code = saturation == Saturation::finite ? 0x7eu : 0x7fu;
    return fp8_e4m3{static_cast<std::uint8_t>(code | sign)};
  }

  [[nodiscard]] constexpr float to_float() const noexcept {
    if ((bits & 0x7fu) == 0x7fu) return std::bit_cast<float>(detail::float_canonical_nan_bits);
    const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x80u) << 24;
    const std::uint32_t exponent = (bits >> 3) & 0xfu;
    const std::uint32_t mantissa = bits & 0x7u;
    if (exponent == 0) {
      const float magnitude = static_cast<float>(mantissa) * 0x1p-9f;  // exact
      return sign != 0 ? -magnitude : magnitude;
    }
    return std::bit_cast<float>(sign | ((exponent + (127 - 7)) << 23) | (mantissa << 20));
  }
};

static_assert(sizeof(bf16) == 2 && std::is_trivially_copyable_v<bf16> && std::is_standard_layout_v<bf16>);
static_assert(sizeof(fp16) == 2 && std::is_trivially_copyable_v<fp16> && std::is_standard_layout_v<fp16>);
static_assert(sizeof(fp8_e4m3) == 1 && std::is_trivially_copyable_v<fp8_e4m3> && std::is_standard_layout_v<fp8_e4m3>);

// Free spellings for generic code: to_float(x) for any element type, float included.
[[nodiscard]] constexpr float to_float(float x) noexcept { return x; }
[[nodiscard]] constexpr float to_float(bf16 x) noexcept { return x.to_float(); }
[[nodiscard]] constexpr float to_float(fp16 x) noexcept { return x.to_float(); }
[[nodiscard]] constexpr float to_float(fp8_e4m3 x) noexcept { return x.to_float(); }

// out[i] = bf16::from_float(in[i]); the spans must have the same size.
inline void to_bf16(std::span<const float> in, std::span<bf16> out) {
  if (in.size() != out.size()) throw_error<InvalidArgument>("to_bf16: ", in.size(), " inputs, ", out.size(), " outputs");
  for (std::size_t i = 0; i < in.size(); ++i) out[i] = bf16::from_float(in[i]);
}

// out[i] = in[i].to_float(); the spans must have the same size.
inline void to_float(std::span<const bf16> in, std::span<float> out) {
  if (in.size() != out.size()) throw_error<InvalidArgument>("to_float: ", in.size(), " inputs, ", out.size(), " outputs");
  for (std::size_t i = 0; i < in.size(); ++i) out[i] = in[i].to_float();
}

}  // namespace qwen

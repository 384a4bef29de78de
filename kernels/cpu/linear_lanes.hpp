// The vector layer of kernels/cpu/linear.hpp: one `Lanes` type per instruction set, chosen from
// the compile target, with the few operations the linear tile needs.
//
//   AVX-512 (F + BW + VL):  16 fp32 lanes, masked loads for the ragged tail of a row
//   AVX2 + FMA + F16C:      8 fp32 lanes, tails copied into a zero-padded block
//   otherwise:              8 "lanes" in a plain array (scalar code the compiler may vectorise)
//
// Every operation is exact except mul and fma (one rounding each) and sum (a fixed tree of
// roundings):
//   load(float*)            the floats
//   load(bf16*)             bf16 -> fp32 (exact: the bits shifted into the upper half)
//   load_fp8_scaled(u8*)    fp8 e4m3 code -> fp32 value * 2^-8 (exact, subnormals included): the
//                           code is rewritten as an fp16 (sign to bit 15, the 7 magnitude bits to
//                           bits 13..7, so the fp8 exponent lands in the low 4 of fp16's 5
//                           exponent bits: bias 15 instead of 7, and an fp8 subnormal becomes an
//                           fp16 subnormal of the same digits), which the hardware converts to
//                           fp32 exactly. Every result is a normal fp32: unlike an fp32 subnormal
//                           operand, it costs no microcode assist in the multiply that follows.
//                           The NaN codes 0x7f / 0xff decode as +-480 * 2^-8 (not NaN).
//   sum(v)                  the lanes added as a fixed tree: pairs (l, l + width/2) first, then
//                           (l, l + width/4), ... The tree depends only on `width`, so every
//                           caller that reduces an accumulator gets the same bits.
// Partial loads (count < width) fill the missing lanes with +0 and never read past count.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "qwen/core/numeric.hpp"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define QWEN_LINEAR_AVX512 1
#include <immintrin.h>
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define QWEN_LINEAR_AVX2 1
#include <immintrin.h>
#endif

namespace qwen::kernels::cpu::linear_detail {

// 2^8: undoes the exponent offset of load_fp8_scaled (fp16 bias 15 - fp8 bias 7).
inline constexpr float fp8_exponent_offset = 0x1p8f;

// fp8 e4m3 bits (sign-extended to 16 bits) -> the fp16 bits of the same digits, see above.
inline constexpr std::uint16_t fp8_to_fp16_mask = 0xbfff;  // clears bit 14, a copy of the sign
inline constexpr int fp8_to_fp16_shift = 7;

#if defined(QWEN_LINEAR_AVX512)
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and trip -Wmaybe-uninitialized
// when inlined (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
struct Lanes {
  static constexpr int width = 16;
  static constexpr std::string_view isa = "avx512";
  using V = __m512;

  static __mmask16 first(int count) noexcept { return static_cast<__mmask16>((1u << count) - 1u); }
  static V widen_bf16(__m256i h) noexcept { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static V widen_fp8(__m128i codes) noexcept {
    const __m256i s = _mm256_cvtepi8_epi16(codes);  // sign-extended: bits 15..7 are the sign
    const __m256i h = _mm256_and_si256(_mm256_slli_epi16(s, fp8_to_fp16_shift), _mm256_set1_epi16(static_cast<short>(fp8_to_fp16_mask)));
    return _mm512_cvtph_ps(h);
  }

  static V zero() noexcept { return _mm512_setzero_ps(); }
  static V broadcast(float s) noexcept { return _mm512_set1_ps(s); }
  static V load(const float* p) noexcept { return _mm512_loadu_ps(p); }
  static V load(const float* p, int count) noexcept { return _mm512_maskz_loadu_ps(first(count), p); }
  static V load(const bf16* p) noexcept { return widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static V load(const bf16* p, int count) noexcept { return widen_bf16(_mm256_maskz_loadu_epi16(first(count), p)); }
  static V load_fp8_scaled(const std::uint8_t* p) noexcept { return widen_fp8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static V load_fp8_scaled(const std::uint8_t* p, int count) noexcept { return widen_fp8(_mm_maskz_loadu_epi8(first(count), p)); }
  static void store(float* p, V v) noexcept { _mm512_storeu_ps(p, v); }
  static V mul(V a, V b) noexcept { return _mm512_mul_ps(a, b); }
  static V fma(V a, V b, V acc) noexcept { return _mm512_fmadd_ps(a, b, acc); }
  static float sum(V v) noexcept {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
  }
};
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#elif defined(QWEN_LINEAR_AVX2)
struct Lanes {
  static constexpr int width = 8;
  static constexpr std::string_view isa = "avx2";
  using V = __m256;

  // A ragged tail copied into a zero-filled block of `width` elements.
  template <class T>
  struct Padded {
    alignas(32) T values[width] = {};
    Padded(const T* p, int count) noexcept { std::memcpy(values, p, static_cast<std::size_t>(count) * sizeof(T)); }
  };
  static V widen_bf16(__m128i h) noexcept { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }
  static V widen_fp8(__m128i codes) noexcept {
    const __m128i s = _mm_cvtepi8_epi16(codes);
    return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(s, fp8_to_fp16_shift), _mm_set1_epi16(static_cast<short>(fp8_to_fp16_mask))));
  }

  static V zero() noexcept { return _mm256_setzero_ps(); }
  static V broadcast(float s) noexcept { return _mm256_set1_ps(s); }
  static V load(const float* p) noexcept { return _mm256_loadu_ps(p); }
  static V load(const float* p, int count) noexcept {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lane));
  }
  static V load(const bf16* p) noexcept { return widen_bf16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static V load(const bf16* p, int count) noexcept { return load(Padded<bf16>(p, count).values); }
  static V load_fp8_scaled(const std::uint8_t* p) noexcept { return widen_fp8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
  static V load_fp8_scaled(const std::uint8_t* p, int count) noexcept {
    return load_fp8_scaled(Padded<std::uint8_t>(p, count).values);
  }
  static void store(float* p, V v) noexcept { _mm256_storeu_ps(p, v); }
  static V mul(V a, V b) noexcept { return _mm256_mul_ps(a, b); }
  static V fma(V a, V b, V acc) noexcept { return _mm256_fmadd_ps(a, b, acc); }
  static float sum(V v) noexcept {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
  }
};

#else
struct Lanes {
  static constexpr int width = 8;
  static constexpr std::string_view isa = "scalar";
  struct V {
    float lane[width];
  };

  static V zero() noexcept { return V{}; }
  static V broadcast(float s) noexcept {
    V v;
    for (float& l : v.lane) l = s;
    return v;
  }
  template <class T>
  static V load(const T* p, int count = width) noexcept {
    V v{};
    for (int l = 0; l < count; ++l) v.lane[l] = to_float(p[l]);
    return v;
  }
  static V load_fp8_scaled(const std::uint8_t* p, int count = width) noexcept {
    V v{};
    for (int l = 0; l < count; ++l) {
      const auto s = static_cast<std::uint16_t>(static_cast<std::int16_t>(static_cast<std::int8_t>(p[l])));
      v.lane[l] = fp16::from_bits(static_cast<std::uint16_t>((s << fp8_to_fp16_shift) & fp8_to_fp16_mask)).to_float();
    }
    return v;
  }
  static void store(float* p, V v) noexcept { std::memcpy(p, v.lane, sizeof v.lane); }
  static V mul(V a, V b) noexcept {
    for (int l = 0; l < width; ++l) a.lane[l] *= b.lane[l];
    return a;
  }
  // Multiply and add (two roundings on the baseline target, which has no fused multiply-add; the
  // same code runs for every n and tile shape, so the batch invariance holds either way).
  static V fma(V a, V b, V acc) noexcept {
    for (int l = 0; l < width; ++l) {
      const float product = a.lane[l] * b.lane[l];
      acc.lane[l] += product;
    }
    return acc;
  }
  static float sum(V v) noexcept {
    float s4[4], s2[2];
    for (int l = 0; l < 4; ++l) s4[l] = v.lane[l] + v.lane[l + 4];
    for (int l = 0; l < 2; ++l) s2[l] = s4[l] + s4[l + 2];
    return s2[0] + s2[1];
  }
};
#endif

static_assert(Lanes::width == 8 || Lanes::width == 16, "the tree in sum() and the fp8 blocks assume 8 or 16 lanes");

}  // namespace qwen::kernels::cpu::linear_detail

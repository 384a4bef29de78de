// The vector layer of the CPU kernels: one lane type, `Simd`, per instruction-set level, chosen
// from the compile target. Every kernel that works on fp32 lanes (linear, attention, the sampler's
// row passes, fp8_dequant) uses it, so every kernel reports the same `isa` name.
//
//   level       compile target needs            isa         lanes  ragged tails
//   AVX-512     AVX512F + AVX512BW + AVX512VL   "avx512"    16     masked loads
//   AVX2        AVX2 + FMA + F16C               "avx2"      8      copied into a zero-padded block
//   portable    anything else                   "portable"  8      plain arrays (loops the compiler
//                                                                   may vectorise)
// x86-64-v4 (and -march=native on an AVX-512 server) is the first level, x86-64-v3 the second,
// x86-64 the third.
//
// Operations (all static; V is the vector of `width` fp32 lanes):
//   isa, width, V
//   zero(), set1(x) / broadcast(x)
//   load(const float*), load(const bf16*)           `width` elements, exact (bf16: the bits shifted
//                                                   into the upper half)
//   load(p, count), count in [0, width]             the first count elements; the other lanes +0,
//                                                   nothing read at or past p + count
//   load_fp8_scaled(const uint8_t*[, count])        fp8 e4m3 codes -> value * 2^-8, exact for every
//                                                   finite code (subnormals included), every lane a
//                                                   normal fp32 (no microcode assist in the multiply
//                                                   that follows). The NaN codes 0x7f / 0xff give
//                                                   +-480 * 2^-8 = +-fp8_nan_scaled, not NaN
//                                                   (linear's contract: no checkpoint holds them).
//   load_fp8(const uint8_t*[, count])               fp8 e4m3 codes -> value, bit for bit
//                                                   fp8_e4m3::to_float: the same decode times 2^8
//                                                   (exact), the NaN codes -> NaN 0x7fffffff
//                                                   (fp8_dequant's contract).
//   store(float*, V)                                `width` floats
//   store(bf16*, V)                                 `width` bf16, each bf16::from_float (RNE, every
//                                                   NaN -> 0x7fff)
//   add, sub, mul, max                              one rounding each (max: see exp for NaN)
//   fmadd(a, b, c) / fma(a, b, c)                   a * b + c, fused (one rounding) on the vector
//                                                   levels, two roundings on the portable one
//   first(v)                                        lane 0
//   reduce_add(v) / sum(v)                          the lanes added in one fixed tree: pairs
//                                                   (l, l + width/2) first, then (l, l + width/4),
//                                                   ..., lanes 0 + 1 last. The tree depends only on
//                                                   `width`, so every caller gets the same bits.
//   reduce_max(v)                                   the largest lane
//   reduce_rows(rows, out)                          out[s] = reduce_add(rows[s]) for
//                                                   s < reduce_rows_count, bit for bit (AVX-512
//                                                   does the 16 sums as one transposition tree, a
//                                                   quarter of the shuffles)
//   exp(v)                                          Cephes' expf on every lane, see below
//
// fp8 decode (no table): a code, sign-extended to 16 bits, shifted left by 7 and with bit 14 (a
// copy of the sign) cleared is the fp16 with the same sign and the 7 magnitude bits in bits
// 13..7: the fp8 exponent lands in the low 4 of fp16's 5 exponent bits (bias 15 instead of 7,
// hence the 2^-8) and an fp8 subnormal becomes an fp16 subnormal of the same digits. The
// hardware's fp16 -> fp32 conversion (F16C, AVX-512F) is exact; the portable level does that
// conversion on the fields (fp8_scaled_lane). No table, no gather.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "qwen/core/numeric.hpp"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define QWEN_SIMD_AVX512 1
#include <immintrin.h>
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define QWEN_SIMD_AVX2 1
#include <immintrin.h>
#endif

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and trip -Wmaybe-uninitialized
// when inlined (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace qwen::kernels::cpu::simd {

// Rows reduce_rows sums at once (attention's tile of positions).
inline constexpr int reduce_rows_count = 16;

// Cephes' expf: exp(x) = 2^n * e^r, |r| <= ln2/2, degree-6 polynomial for e^r (about 1 ulp).
// Lanes below -87.33 (where exp is below FLT_MIN) give exactly 0; exp(0) is exactly 1; NaN stays NaN.
inline constexpr float exp_hi = 88.3762626647949f, exp_lo = -88.3762626647949f, exp_zero_below = -87.33654475f;
inline constexpr float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
inline constexpr float exp_p0 = 1.9875691500e-4f, exp_p1 = 1.3981999507e-3f, exp_p2 = 8.3334519073e-3f,
                       exp_p3 = 4.1665795894e-2f, exp_p4 = 1.6666665459e-1f, exp_p5 = 5.0000001201e-1f;

// 2^8: undoes the exponent offset of load_fp8_scaled (fp16 bias 15 - fp8 bias 7).
inline constexpr float fp8_exponent_offset = 0x1p8f;
// fp8 e4m3 bits (sign-extended to 16 bits) -> the fp16 bits of the same digits, see above.
inline constexpr std::uint16_t fp8_to_fp16_mask = 0xbfff;  // clears bit 14, a copy of the sign
inline constexpr int fp8_to_fp16_shift = 7;
// What load_fp8_scaled gives for the NaN codes (magnitude), and load_fp8 before it restores NaN.
inline constexpr float fp8_nan_scaled = 480.0f / fp8_exponent_offset;
inline constexpr float fp8_nan_decoded = 480.0f;
inline constexpr std::uint32_t canonical_nan_bits = qwen::detail::float_canonical_nan_bits;

// The fp8 decode above on one code, for the portable level (no F16C): the fp16 -> fp32
// conversion of the rewritten code done on its fields. A normal code's exponent field e (1..15,
// also fp16's) becomes fp32's e + 127 - 15 with the 3 mantissa bits on top; a subnormal code
// (e = 0) is mantissa * 2^-9 * 2^-8, exact through int -> float. No branch on NaN: the NaN codes
// take the normal formula, +-1.875 = +-480 * 2^-8.
// Both forms are computed and one is selected by a mask: a branch would mispredict on weights.
[[nodiscard]] inline float fp8_scaled_lane(std::uint8_t code) noexcept {
  const std::uint32_t exponent = (code >> 3) & 0xfu, mantissa = code & 0x7u;
  const std::uint32_t normal = ((exponent + (127 - 15)) << 23) | (mantissa << 20);
  const auto subnormal = std::bit_cast<std::uint32_t>(static_cast<float>(mantissa) * 0x1p-17f);
  const std::uint32_t is_normal = 0u - static_cast<std::uint32_t>(exponent != 0);  // all ones or zero
  return std::bit_cast<float>((normal & is_normal) | (subnormal & ~is_normal) | (static_cast<std::uint32_t>(code & 0x80u) << 24));
}

#if defined(QWEN_SIMD_AVX512)
struct Simd {
  static constexpr std::string_view isa = "avx512";
  using V = __m512;
  static constexpr int width = 16;

  static __mmask16 lanes_below(int count) noexcept { return static_cast<__mmask16>((1u << count) - 1u); }
  static V widen_bf16(__m256i h) noexcept { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static V widen_fp8(__m128i codes) noexcept {
    const __m256i s = _mm256_cvtepi8_epi16(codes);  // sign-extended: bits 15..7 are the sign
    const __m256i h = _mm256_and_si256(_mm256_slli_epi16(s, fp8_to_fp16_shift), _mm256_set1_epi16(static_cast<short>(fp8_to_fp16_mask)));
    return _mm512_cvtph_ps(h);
  }
  // load_fp8's second half: times 2^8 (exact), then the lanes at +-480 (only the NaN codes) -> NaN.
  static V unscale_fp8(V scaled) noexcept {
    const V v = mul(scaled, set1(fp8_exponent_offset));
    const __mmask16 nan = _mm512_cmp_ps_mask(_mm512_abs_ps(v), set1(fp8_nan_decoded), _CMP_EQ_OQ);
    return _mm512_mask_mov_ps(v, nan, _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(canonical_nan_bits))));
  }

  static V zero() noexcept { return _mm512_setzero_ps(); }
  static V set1(float x) noexcept { return _mm512_set1_ps(x); }
  static V broadcast(float x) noexcept { return set1(x); }
  static V load(const float* p) noexcept { return _mm512_loadu_ps(p); }
  static V load(const float* p, int count) noexcept { return _mm512_maskz_loadu_ps(lanes_below(count), p); }
  static V load(const bf16* p) noexcept { return widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static V load(const bf16* p, int count) noexcept { return widen_bf16(_mm256_maskz_loadu_epi16(lanes_below(count), p)); }
  static V load_fp8_scaled(const std::uint8_t* p) noexcept { return widen_fp8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static V load_fp8_scaled(const std::uint8_t* p, int count) noexcept { return widen_fp8(_mm_maskz_loadu_epi8(lanes_below(count), p)); }
  static V load_fp8(const std::uint8_t* p) noexcept { return unscale_fp8(load_fp8_scaled(p)); }
  static V load_fp8(const std::uint8_t* p, int count) noexcept { return unscale_fp8(load_fp8_scaled(p, count)); }
  static void store(float* p, V v) noexcept { _mm512_storeu_ps(p, v); }
  // bf16::from_float on every lane: NaN -> 0x7fff, otherwise add 0x7fff plus the kept LSB and
  // drop the low half (the carry never reaches the sign bit: |finite| + 0x8000 < 2^31).
  static void store(bf16* p, V v) noexcept {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fff'ffff));
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f80'0000));
    const __m512i result = _mm512_mask_blend_epi32(nan, rounded, _mm512_set1_epi32(0x7fff));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(result));
  }
  static V add(V a, V b) noexcept { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) noexcept { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) noexcept { return _mm512_mul_ps(a, b); }
  static V max(V a, V b) noexcept { return _mm512_max_ps(a, b); }
  static V fmadd(V a, V b, V c) noexcept { return _mm512_fmadd_ps(a, b, c); }  // a * b + c
  static V fma(V a, V b, V acc) noexcept { return fmadd(a, b, acc); }
  static float first(V v) noexcept { return _mm512_cvtss_f32(v); }
  // Tree: lanes i + (i + 8), then j + (j + 4), then k + (k + 2), then 0 + 1.
  static float reduce_add(V v) noexcept {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
  }
  static float sum(V v) noexcept { return reduce_add(v); }
  static float reduce_max(V v) noexcept { return _mm512_reduce_max_ps(v); }
  // The same tree for 16 vectors at once. After the four levels lane 4q + i holds row q + 4i.
  static void reduce_rows(const V* rows, float* out) noexcept {
    V level1[8], level2[4], level3[2];
    for (int k = 0; k < 8; ++k)  // [row 2k: i + (i+8) | row 2k+1: i + (i+8)], i < 8
      level1[k] = add(_mm512_shuffle_f32x4(rows[2 * k], rows[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                      _mm512_shuffle_f32x4(rows[2 * k], rows[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int m = 0; m < 4; ++m)  // quarter q: row 4m + q, j + (j+4), j < 4
      level2[m] = add(_mm512_shuffle_f32x4(level1[2 * m], level1[2 * m + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                      _mm512_shuffle_f32x4(level1[2 * m], level1[2 * m + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int r = 0; r < 2; ++r)  // quarter q: [row 8r+q: k + (k+2), k < 2 | row 8r+4+q: same]
      level3[r] = add(_mm512_shuffle_ps(level2[2 * r], level2[2 * r + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                      _mm512_shuffle_ps(level2[2 * r], level2[2 * r + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    const V sums = add(_mm512_shuffle_ps(level3[0], level3[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(level3[0], level3[1], _MM_SHUFFLE(3, 1, 3, 1)));
    // Row s sits in lane 4 * (s % 4) + s / 4.
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    store(out, _mm512_permutexvar_ps(order, sums));
  }
  static V exp(V x) noexcept {
    // min/max return their second operand when either is NaN: NaN passes through.
    x = _mm512_max_ps(set1(exp_lo), _mm512_min_ps(set1(exp_hi), x));
    const __mmask16 tiny = _mm512_cmp_ps_mask(x, set1(exp_zero_below), _CMP_LT_OQ);
    const V n = _mm512_roundscale_ps(fmadd(x, set1(log2e), set1(0.5f)), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    V r = _mm512_fnmadd_ps(n, set1(ln2_hi), x);
    r = _mm512_fnmadd_ps(n, set1(ln2_lo), r);
    V y = fmadd(set1(exp_p0), r, set1(exp_p1));
    y = fmadd(y, r, set1(exp_p2));
    y = fmadd(y, r, set1(exp_p3));
    y = fmadd(y, r, set1(exp_p4));
    y = fmadd(y, r, set1(exp_p5));
    y = fmadd(y, mul(r, r), r);
    y = add(y, set1(1.0f));
    return _mm512_maskz_mov_ps(static_cast<__mmask16>(~tiny), _mm512_scalef_ps(y, n));
  }
};

#elif defined(QWEN_SIMD_AVX2)
struct Simd {
  static constexpr std::string_view isa = "avx2";
  using V = __m256;
  static constexpr int width = 8;

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
  static V unscale_fp8(V scaled) noexcept {
    const V v = mul(scaled, set1(fp8_exponent_offset));
    const V abs = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff'ffff)));
    const V nan = _mm256_cmp_ps(abs, set1(fp8_nan_decoded), _CMP_EQ_OQ);
    return _mm256_blendv_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(canonical_nan_bits))), nan);
  }

  static V zero() noexcept { return _mm256_setzero_ps(); }
  static V set1(float x) noexcept { return _mm256_set1_ps(x); }
  static V broadcast(float x) noexcept { return set1(x); }
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
  static V load_fp8(const std::uint8_t* p) noexcept { return unscale_fp8(load_fp8_scaled(p)); }
  static V load_fp8(const std::uint8_t* p, int count) noexcept { return unscale_fp8(load_fp8_scaled(p, count)); }
  static void store(float* p, V v) noexcept { _mm256_storeu_ps(p, v); }
  // As the AVX-512 version; packus keeps the 16-bit results (all in [0, 0xffff]) and the permute
  // undoes its per-128-bit-lane interleave.
  static void store(bf16* p, V v) noexcept {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fff'ffff));
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80'0000));
    const __m256i result = _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7fff), nan);
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(result, result), 0b1000);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
  static V add(V a, V b) noexcept { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) noexcept { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) noexcept { return _mm256_mul_ps(a, b); }
  static V max(V a, V b) noexcept { return _mm256_max_ps(a, b); }
  static V fmadd(V a, V b, V c) noexcept { return _mm256_fmadd_ps(a, b, c); }
  static V fma(V a, V b, V acc) noexcept { return fmadd(a, b, acc); }
  static float first(V v) noexcept { return _mm256_cvtss_f32(v); }
  // Tree: lanes i + (i + 4), then j + (j + 2), then 0 + 1.
  static float reduce_add(V v) noexcept {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
  }
  static float sum(V v) noexcept { return reduce_add(v); }
  static float reduce_max(V v) noexcept {
    const __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    return _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
  }
  static void reduce_rows(const V* rows, float* out) noexcept {
    for (int s = 0; s < reduce_rows_count; ++s) out[s] = reduce_add(rows[s]);
  }
  static V exp(V x) noexcept {
    x = _mm256_max_ps(set1(exp_lo), _mm256_min_ps(set1(exp_hi), x));
    const V tiny = _mm256_cmp_ps(x, set1(exp_zero_below), _CMP_LT_OQ);
    const V n = _mm256_floor_ps(fmadd(x, set1(log2e), set1(0.5f)));
    V r = _mm256_fnmadd_ps(n, set1(ln2_hi), x);
    r = _mm256_fnmadd_ps(n, set1(ln2_lo), r);
    V y = fmadd(set1(exp_p0), r, set1(exp_p1));
    y = fmadd(y, r, set1(exp_p2));
    y = fmadd(y, r, set1(exp_p3));
    y = fmadd(y, r, set1(exp_p4));
    y = fmadd(y, r, set1(exp_p5));
    y = fmadd(y, mul(r, r), r);
    y = add(y, set1(1.0f));
    // 2^n for n in [-127, 128) built in the exponent field; the lanes where that underflows are
    // the `tiny` ones, zeroed here.
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(tiny, mul(y, _mm256_castsi256_ps(bits)));
  }
};

#else
// Portable: 8 lanes as an array; plain loops the compiler may vectorise for the baseline target.
struct Simd {
  static constexpr std::string_view isa = "portable";
  static constexpr int width = 8;
  struct V {
    float lane[width];
  };

  // Full vectors in fixed-count loops; a ragged tail is first copied into a zero-filled block of
  // `width` elements (a zero code decodes to +0).
  template <class T>
  static V load_elements(const T* p) noexcept {
    V v;
    for (int l = 0; l < width; ++l) v.lane[l] = to_float(p[l]);
    return v;
  }
  template <class T>
  struct Padded {
    T values[width] = {};
    Padded(const T* p, int count) noexcept { std::memcpy(values, p, static_cast<std::size_t>(count) * sizeof(T)); }
  };
  static V unscale_fp8(V v) noexcept {
    for (float& l : v.lane) {
      l *= fp8_exponent_offset;
      l = std::fabs(l) == fp8_nan_decoded ? std::bit_cast<float>(canonical_nan_bits) : l;
    }
    return v;
  }

  static V zero() noexcept { return V{}; }
  static V set1(float x) noexcept {
    V v;
    for (float& l : v.lane) l = x;
    return v;
  }
  static V broadcast(float x) noexcept { return set1(x); }
  static V load(const float* p) noexcept { return load_elements(p); }
  static V load(const float* p, int count) noexcept { return load_elements(Padded<float>(p, count).values); }
  static V load(const bf16* p) noexcept { return load_elements(p); }
  static V load(const bf16* p, int count) noexcept { return load_elements(Padded<bf16>(p, count).values); }
  static V load_fp8_scaled(const std::uint8_t* p) noexcept {
    V v;
    for (int l = 0; l < width; ++l) v.lane[l] = fp8_scaled_lane(p[l]);
    return v;
  }
  static V load_fp8_scaled(const std::uint8_t* p, int count) noexcept {
    return load_fp8_scaled(Padded<std::uint8_t>(p, count).values);
  }
  static V load_fp8(const std::uint8_t* p) noexcept { return unscale_fp8(load_fp8_scaled(p)); }
  static V load_fp8(const std::uint8_t* p, int count) noexcept { return unscale_fp8(load_fp8_scaled(p, count)); }
  static void store(float* p, V v) noexcept { std::memcpy(p, v.lane, sizeof v.lane); }
  static void store(bf16* p, V v) noexcept {
    for (int l = 0; l < width; ++l) p[l] = bf16::from_float(v.lane[l]);
  }
  static V add(V a, V b) noexcept {
    for (int l = 0; l < width; ++l) a.lane[l] += b.lane[l];
    return a;
  }
  static V sub(V a, V b) noexcept {
    for (int l = 0; l < width; ++l) a.lane[l] -= b.lane[l];
    return a;
  }
  static V mul(V a, V b) noexcept {
    for (int l = 0; l < width; ++l) a.lane[l] *= b.lane[l];
    return a;
  }
  static V max(V a, V b) noexcept {
    for (int l = 0; l < width; ++l) a.lane[l] = a.lane[l] > b.lane[l] ? a.lane[l] : b.lane[l];
    return a;
  }
  // Multiply and add (two roundings on the baseline target, which has no fused multiply-add; the
  // same code runs for every caller, so linear's batch invariance holds either way).
  static V fmadd(V a, V b, V c) noexcept {
    for (int l = 0; l < width; ++l) {
      const float product = a.lane[l] * b.lane[l];
      c.lane[l] += product;
    }
    return c;
  }
  static V fma(V a, V b, V acc) noexcept { return fmadd(a, b, acc); }
  static float first(V v) noexcept { return v.lane[0]; }
  static float reduce_add(V v) noexcept {
    float s4[4], s2[2];
    for (int l = 0; l < 4; ++l) s4[l] = v.lane[l] + v.lane[l + 4];
    for (int l = 0; l < 2; ++l) s2[l] = s4[l] + s4[l + 2];
    return s2[0] + s2[1];
  }
  static float sum(V v) noexcept { return reduce_add(v); }
  static float reduce_max(V v) noexcept {
    float m = v.lane[0];
    for (int l = 1; l < width; ++l) m = v.lane[l] > m ? v.lane[l] : m;
    return m;
  }
  static void reduce_rows(const V* rows, float* out) noexcept {
    for (int s = 0; s < reduce_rows_count; ++s) out[s] = reduce_add(rows[s]);
  }
  // The same polynomial as the vector levels, one lane at a time.
  static V exp(V x) noexcept {
    for (float& lane : x.lane) {
      if (std::isnan(lane)) continue;
      const float xi = std::max(exp_lo, std::min(exp_hi, lane));
      const float n = std::floor(xi * log2e + 0.5f);
      const float r = (xi - n * ln2_hi) - n * ln2_lo;
      float y = ((((exp_p0 * r + exp_p1) * r + exp_p2) * r + exp_p3) * r + exp_p4) * r + exp_p5;
      y = y * (r * r) + r + 1.0f;
      lane = xi < exp_zero_below ? 0.0f : std::ldexp(y, static_cast<int>(n));
    }
    return x;
  }
};
#endif

static_assert(Simd::width == 8 || Simd::width == 16, "the reduction trees and linear's fp8 blocks assume 8 or 16 lanes");
static_assert(reduce_rows_count % Simd::width == 0, "reduce_rows' output is whole vectors");

}  // namespace qwen::kernels::cpu::simd

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// The vector layer of the CPU kernels that work on fp32 lanes with exponentials (attention's
// online softmax, the sampler's row passes): one `Simd` per instruction set, chosen from the
// compile target, and Cephes' expf on lanes.
//
//   AVX-512F:       16 lanes
//   AVX2 + FMA:     8 lanes
//   otherwise:      8 "lanes" in a plain array (loops the compiler vectorises for the baseline)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
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

// Each Simd provides the lane operations plus
//   reduce_add(v):          the sum of the lanes, in a fixed tree;
//   reduce_rows(rows, out): out[s] = reduce_add(rows[s]) for s < reduce_rows_count, bit for bit
//                           (AVX-512 does the 16 sums as one transposition tree, a quarter of
//                           the shuffles).
#if defined(__AVX512F__)
struct Simd {
  static constexpr const char* isa = "avx512";
  using V = __m512;
  static constexpr int width = 16;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c
  static float first(V v) { return _mm512_cvtss_f32(v); }
  // Tree: lanes i + (i + 8), then j + (j + 4), then k + (k + 2), then 0 + 1.
  static float reduce_add(V v) {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
  }
  static float reduce_max(V v) { return _mm512_reduce_max_ps(v); }
  // The same tree for 16 vectors at once. After the four levels lane 4q + i holds row q + 4i.
  static void reduce_rows(const V* rows, float* out) {
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
  static V exp(V x) {
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
#elif defined(__AVX2__) && defined(__FMA__)
struct Simd {
  static constexpr const char* isa = "avx2";
  using V = __m256;
  static constexpr int width = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float first(V v) { return _mm256_cvtss_f32(v); }
  // Tree: lanes i + (i + 4), then j + (j + 2), then 0 + 1.
  static float reduce_add(V v) {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
  }
  static float reduce_max(V v) {
    const __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    return _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
  }
  static void reduce_rows(const V* rows, float* out) {
    for (int s = 0; s < reduce_rows_count; ++s) out[s] = reduce_add(rows[s]);
  }
  static V exp(V x) {
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
// Portable: 8 lanes as an array; plain loops the compiler vectorises for the baseline target.
struct Simd {
  static constexpr const char* isa = "portable";
  struct V {
    float lane[8];
  };
  static constexpr int width = 8;
  static V load(const float* p) {
    V v;
    for (int i = 0; i < width; ++i) v.lane[i] = p[i];
    return v;
  }
  static void store(float* p, V v) {
    for (int i = 0; i < width; ++i) p[i] = v.lane[i];
  }
  static V zero() { return set1(0.0f); }
  static V set1(float x) {
    V v;
    for (int i = 0; i < width; ++i) v.lane[i] = x;
    return v;
  }
  static V add(V a, V b) {
    for (int i = 0; i < width; ++i) a.lane[i] += b.lane[i];
    return a;
  }
  static V sub(V a, V b) {
    for (int i = 0; i < width; ++i) a.lane[i] -= b.lane[i];
    return a;
  }
  static V mul(V a, V b) {
    for (int i = 0; i < width; ++i) a.lane[i] *= b.lane[i];
    return a;
  }
  static V max(V a, V b) {
    for (int i = 0; i < width; ++i) a.lane[i] = a.lane[i] > b.lane[i] ? a.lane[i] : b.lane[i];
    return a;
  }
  static V fmadd(V a, V b, V c) {
    for (int i = 0; i < width; ++i) c.lane[i] += a.lane[i] * b.lane[i];
    return c;
  }
  static float first(V v) { return v.lane[0]; }
  static float reduce_add(V v) {
    return ((v.lane[0] + v.lane[4]) + (v.lane[2] + v.lane[6])) + ((v.lane[1] + v.lane[5]) + (v.lane[3] + v.lane[7]));
  }
  static float reduce_max(V v) {
    float m = v.lane[0];
    for (int i = 1; i < width; ++i) m = v.lane[i] > m ? v.lane[i] : m;
    return m;
  }
  static void reduce_rows(const V* rows, float* out) {
    for (int s = 0; s < reduce_rows_count; ++s) out[s] = reduce_add(rows[s]);
  }
  // The same polynomial as the vector paths, one lane at a time.
  static V exp(V x) {
    for (int i = 0; i < width; ++i) {
      if (std::isnan(x.lane[i])) continue;
      const float xi = std::max(exp_lo, std::min(exp_hi, x.lane[i]));
      const float n = std::floor(xi * log2e + 0.5f);
      const float r = (xi - n * ln2_hi) - n * ln2_lo;
      float y = ((((exp_p0 * r + exp_p1) * r + exp_p2) * r + exp_p3) * r + exp_p4) * r + exp_p5;
      y = y * (r * r) + r + 1.0f;
      x.lane[i] = xi < exp_zero_below ? 0.0f : std::ldexp(y, static_cast<int>(n));
    }
    return x;
  }
};
#endif

}  // namespace qwen::kernels::cpu::simd

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

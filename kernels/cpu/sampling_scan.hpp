// The passes over a whole row of logits that the sampler makes (qwen/sampling/row_sampler.hpp):
// maximum with a non-finite check, exponentials with block sums, a histogram of the
// exponentials, thresholding, and a skip test for top-k selection. Each reads the row once,
// left to right, with the same instructions whatever thread or batch runs it, so a row's result
// depends on its values only.
//
// The vector lanes and the exp (Cephes' expf, about 1 ulp) are kernels/cpu/simd.hpp's, shared
// with every CPU kernel; Simd::isa names the level.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>

#include <qwen/kernels/cpu/simd.hpp>

// GCC 12's AVX-512 reductions start from _mm512_undefined_*() and trip -Wmaybe-uninitialized when
// inlined (GCC bug 105593, fixed in GCC 13), as in attention.hpp.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace qwen::kernels::cpu::sampling_scan {

using Simd = simd::Simd;

// Block of the exponential row whose sum is kept: the draw finds its block from these sums,
// then scans one block.
inline constexpr std::int64_t block = 1024;
static_assert(block % 64 == 0 && 64 % Simd::width == 0, "a block is a whole number of 64-element groups");

[[nodiscard]] constexpr std::int64_t block_count(std::int64_t n) noexcept { return (n + block - 1) / block; }

struct RowMax {
  float max = -std::numeric_limits<float>::infinity();
  bool has_non_finite = false;  // some element is NaN or +-inf (the caller looks which)
};

// Maximum of x[0, n). NaN lanes may or may not be ignored by the maximum; has_non_finite tells.
[[nodiscard]] inline RowMax row_max(const float* x, std::int64_t n) noexcept {
  using V = Simd::V;
  V m = Simd::set1(-std::numeric_limits<float>::infinity());
  V probe = Simd::zero();  // sum of x * 0: NaN as soon as one x is NaN or infinite
  const std::int64_t vector_end = n - n % Simd::width;
  for (std::int64_t i = 0; i < vector_end; i += Simd::width) {
    const V v = Simd::load(x + i);
    m = Simd::max(m, v);
    probe = Simd::fmadd(v, Simd::zero(), probe);
  }
  RowMax out{Simd::reduce_max(m), std::isnan(Simd::reduce_add(probe))};
  for (std::int64_t i = vector_end; i < n; ++i) {
    out.max = std::max(out.max, x[i]);
    if (!std::isfinite(x[i])) out.has_non_finite = true;
  }
  return out;
}

// Largest of 64 consecutive elements (the top-k scan skips a group whose maximum cannot enter).
[[nodiscard]] inline float max64(const float* x) noexcept {
  Simd::V m = Simd::load(x);
  for (int j = Simd::width; j < 64; j += Simd::width) m = Simd::max(m, Simd::load(x + j));
  return Simd::reduce_max(m);
}

// e[i] = exp((x[i] - max) * inv_temperature) for i < n (exactly 1 at the maximum, 0 for -inf and
// below about e^-87), block_sum[b] = sum of block b of e. Returns the total.
inline double exp_scaled(const float* x, std::int64_t n, float max, float inv_temperature, float* e,
                         double* block_sum) noexcept {
  using V = Simd::V;
  const V vmax = Simd::set1(max), vscale = Simd::set1(inv_temperature);
  double total = 0;
  for (std::int64_t b = 0; b * block < n; ++b) {
    const std::int64_t begin = b * block, end = std::min(n, begin + block);
    V acc = Simd::zero();
    std::int64_t i = begin;
    for (; i + Simd::width <= end; i += Simd::width) {
      const V v = Simd::exp(Simd::mul(Simd::sub(Simd::load(x + i), vmax), vscale));
      Simd::store(e + i, v);
      acc = Simd::add(acc, v);
    }
    float sum = Simd::reduce_add(acc);
    for (; i < end; ++i) {  // the tail through the same exp, one lane used
      alignas(64) float lane[Simd::width] = {};
      lane[0] = (x[i] - max) * inv_temperature;
      Simd::store(lane, Simd::exp(Simd::load(lane)));
      e[i] = lane[0];
      sum += lane[0];
    }
    block_sum[b] = sum;
    total += sum;
  }
  return total;
}

// Histogram of exponentials in [0, 1] by their leading bits: bucket(v) = bits(v) >> 20, the
// exponent and the top 3 mantissa bits, so 8 buckets per octave. Non-negative floats order like
// their bits, so buckets order like values. Bucket 0 holds the exact zeros (and subnormals).
inline constexpr int histogram_shift = 20;
inline constexpr int histogram_buckets = (0x3f800000 >> histogram_shift) + 1;  // 1.0f is the largest value
static_assert(histogram_buckets == 1017);

[[nodiscard]] inline int bucket_of(float v) noexcept { return static_cast<int>(std::bit_cast<std::uint32_t>(v) >> histogram_shift); }
[[nodiscard]] inline float bucket_floor(int bucket) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bucket) << histogram_shift);
}

struct Histogram {
  std::array<float, histogram_buckets> mass;
  std::array<std::int32_t, histogram_buckets> count;
};

// Fills h from e[0, n). Four interleaved partial histograms keep consecutive elements of one
// bucket from waiting on each other's read-modify-write.
inline void histogram(const float* e, std::int64_t n, Histogram& h) noexcept {
  alignas(64) static thread_local float mass[4][histogram_buckets];
  alignas(64) static thread_local std::int32_t count[4][histogram_buckets];
  std::memset(mass, 0, sizeof mass);
  std::memset(count, 0, sizeof count);
  const std::int64_t quad_end = n - n % 4;
  for (std::int64_t i = 0; i < quad_end; i += 4) {
    for (int j = 0; j < 4; ++j) {
      const int b = bucket_of(e[i + j]);
      mass[j][b] += e[i + j];
      ++count[j][b];
    }
  }
  for (std::int64_t i = quad_end; i < n; ++i) {
    const int b = bucket_of(e[i]);
    mass[0][b] += e[i];
    ++count[0][b];
  }
  for (int b = 0; b < histogram_buckets; ++b) {
    h.mass[b] = (mass[0][b] + mass[1][b]) + (mass[2][b] + mass[3][b]);
    h.count[b] = count[0][b] + count[1][b] + count[2][b] + count[3][b];
  }
}

// e[i] = e[i] >= threshold ? e[i] : 0, with block sums as in exp_scaled. Returns the total.
inline double keep_at_least(float* e, std::int64_t n, float threshold, double* block_sum) noexcept {
  double total = 0;
  for (std::int64_t b = 0; b * block < n; ++b) {
    const std::int64_t begin = b * block, end = std::min(n, begin + block);
    float lanes[16] = {};
    std::int64_t i = begin;
    for (; i + 16 <= end; i += 16)
      for (int j = 0; j < 16; ++j) {
        const float v = e[i + j] >= threshold ? e[i + j] : 0.0f;
        e[i + j] = v;
        lanes[j] += v;
      }
    float sum = 0;
    for (int j = 0; j < 16; ++j) sum += lanes[j];
    for (; i < end; ++i) {
      const float v = e[i] >= threshold ? e[i] : 0.0f;
      e[i] = v;
      sum += v;
    }
    block_sum[b] = sum;
    total += sum;
  }
  return total;
}

// Index of the first element equal to max (the row's maximum, so one exists): a vector test per
// group of 64, then a scalar look inside the group that has it.
[[nodiscard]] inline std::int64_t first_index_of(const float* x, std::int64_t n, float max) noexcept {
  std::int64_t i = 0;
  for (; i + 64 <= n; i += 64)
    if (max64(x + i) == max) break;
  for (; i < n; ++i)
    if (x[i] == max) return i;
  return n;  // not reached when max is an element
}

// "Ranked before the pivot": e > pivot, or e == pivot at a lower index (the sampler's ranking:
// higher first, ties by lower token id). pivot < 0 admits every element.
// Returns the sum of e[i] over the i with e[i] >= floor that rank before (pivot, pivot_index);
// with block_sum, also writes that sum per block (as exp_scaled).
inline double sum_ranked_before(const float* e, std::int64_t n, float pivot, std::int64_t pivot_index, float floor,
                                double* block_sum = nullptr) noexcept {
  const auto admitted = [&](std::int64_t i) {
    const float v = e[i];
    return v >= floor && (v > pivot || (v == pivot && i < pivot_index));
  };
  double total = 0;
  for (std::int64_t b = 0; b * block < n; ++b) {
    const std::int64_t begin = b * block, end = std::min(n, begin + block);
    float sum = 0;
    std::int64_t i = begin;
    // The admission test is vector compares on the two vector levels, on Simd's lanes, summed in
    // Simd's one tree. The portable level adds the elements in order instead.
#if defined(QWEN_SIMD_AVX512)
    {
      const __m512 vp = Simd::set1(pivot), vf = Simd::set1(floor);
      const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
      __m512 acc = Simd::zero();
      for (; i + 16 <= end; i += 16) {
        const __m512 v = Simd::load(e + i);
        __mmask16 m = _mm512_cmp_ps_mask(v, vp, _CMP_GT_OQ);
        if (const __mmask16 eq = _mm512_cmp_ps_mask(v, vp, _CMP_EQ_OQ)) {
          // lanes i + k < pivot_index, i.e. k < pivot_index - i (clamped into int range)
          const auto limit = static_cast<int>(std::clamp<std::int64_t>(pivot_index - i, -1, 16));
          m |= eq & _mm512_cmplt_epi32_mask(lane, _mm512_set1_epi32(limit));
        }
        m &= _mm512_cmp_ps_mask(v, vf, _CMP_GE_OQ);
        acc = _mm512_mask_add_ps(acc, m, acc, v);
      }
      sum = Simd::reduce_add(acc);
    }
#elif defined(QWEN_SIMD_AVX2)
    {
      const __m256 vp = Simd::set1(pivot), vf = Simd::set1(floor);
      const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      __m256 acc = Simd::zero();
      for (; i + 8 <= end; i += 8) {
        const __m256 v = Simd::load(e + i);
        __m256 m = _mm256_cmp_ps(v, vp, _CMP_GT_OQ);
        const __m256 eq = _mm256_cmp_ps(v, vp, _CMP_EQ_OQ);
        if (_mm256_movemask_ps(eq)) {
          const auto limit = static_cast<int>(std::clamp<std::int64_t>(pivot_index - i, -1, 8));
          const __m256 before = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(limit), lane));
          m = _mm256_or_ps(m, _mm256_and_ps(eq, before));
        }
        m = _mm256_and_ps(m, _mm256_cmp_ps(v, vf, _CMP_GE_OQ));
        acc = Simd::add(acc, _mm256_and_ps(m, v));
      }
      sum = Simd::reduce_add(acc);
    }
#endif
    for (; i < end; ++i)
      if (admitted(i)) sum += e[i];
    if (block_sum) block_sum[b] = sum;
    total += sum;
  }
  return total;
}

}  // namespace qwen::kernels::cpu::sampling_scan

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

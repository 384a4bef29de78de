// Causal grouped-query attention over a paged KV cache, for a flat batch of tokens from several
// sequences (prefill chunks of any length at any position, and decode tokens, mixed).
//
// Contract
//   q:   [n_tokens, num_heads, HeadDim] fp32, already q_norm'ed and rotated
//   out: [n_tokens, num_heads, HeadDim] fp32, fully overwritten; must not overlap q
//   batch.sequence_of_token[t]: index into batch.block_tables of token t's sequence
//   batch.position[t]:          absolute position of token t; it attends to positions
//                               0 .. position[t] (inclusive) of its own sequence
//   batch.block_tables[s]:      physical block ids of sequence s in logical order (position p is
//                               at slot p % block_size of block block_tables[s][p / block_size]),
//                               e.g. PagedKV::block_table(seq); it must cover every position read
//   kv: one layer's pools, [num_blocks][block_size][num_kv_heads][HeadDim] (qwen/kv/paged_kv.hpp).
//       The K/V of every position a token reads, its own included, is already written; nothing
//       else of the pools is read (unwritten slots may hold anything, NaN included).
//   Query head h uses KV head h / (num_heads / num_kv_heads).
//
//   out[t, h] = sum_p softmax_p(scale * q[t, h] . k[p]) * v[p],   p = 0 .. position[t]
//
// The fast version (paged_attention) computes in fp32 with an online softmax: a running max and
// sum per (token, query head), rescaled once per tile of at most 16 positions inside one block;
// no score matrix over a whole sequence is materialised.
//   - Work item = (query group, KV head). A query group is up to 8 consecutive tokens of the
//     batch from one sequence (a prefill chunk becomes several groups, a decode token is one);
//     its tokens and the query heads of the KV group go through each K/V tile together, so a
//     tile comes from memory once and is reused from L1.
//   - Items are split over the ThreadPool into one contiguous range per thread, of about equal
//     cost (positions read). Consecutive items of one group (several KV heads) are run together,
//     so a position's K/V slot is read as one contiguous piece.
//   - Batch invariance, bit for bit: every (token, query head) sees the same tiles in the same
//     order with the same instructions, whatever its group, run, thread or batch. A token's
//     output depends only on its q, its position and its sequence's K/V.
//
// paged_attention_reference is the oracle: it gathers the sequence's K/V through the block table
// into contiguous arrays and computes a naive softmax attention in double.
//
// The vector path is chosen from the compile target: AVX-512F, else AVX2+FMA, else a portable
// 8-lane version the compiler vectorises.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include <qwen/kernels/cpu/thread_pool.hpp>

#include "qwen/core/error.hpp"
#include "qwen/kv/paged_kv.hpp"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace qwen::kernels::cpu {

// The batch's addressing: which sequence and position each token has, and each sequence's
// block table. Made once per step by the caller (the forward pass), read by every layer.
struct PagedAttentionBatch {
  std::span<const std::int32_t> sequence_of_token;               // [n_tokens]
  std::span<const std::int32_t> position;                        // [n_tokens]
  std::span<const std::span<const std::int32_t>> block_tables;   // [num_sequences][blocks]
};

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and trip -Wmaybe-uninitialized
// when inlined (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace attention_detail {

// Positions per online-softmax step; a tile never crosses a block boundary.
inline constexpr int tile = 16;
// Tokens per query group.
inline constexpr int max_group_tokens = 8;

// Cephes' expf: exp(x) = 2^n * e^r, |r| <= ln2/2, degree-6 polynomial for e^r (about 1 ulp).
// Lanes below -87.33 (where exp is below FLT_MIN) give exactly 0; exp(0) is exactly 1; NaN stays NaN.
inline constexpr float exp_hi = 88.3762626647949f, exp_lo = -88.3762626647949f, exp_zero_below = -87.33654475f;
inline constexpr float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
inline constexpr float exp_p0 = 1.9875691500e-4f, exp_p1 = 1.3981999507e-3f, exp_p2 = 8.3334519073e-3f,
                       exp_p3 = 4.1665795894e-2f, exp_p4 = 1.6666665459e-1f, exp_p5 = 5.0000001201e-1f;

// Each Simd provides the lane operations plus
//   reduce_add(v):          the sum of the lanes, in a fixed tree;
//   reduce_rows(rows, out): out[s] = reduce_add(rows[s]) for s < tile, bit for bit (AVX-512 does
//                           the 16 sums as one transposition tree, a quarter of the shuffles).
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
    for (int s = 0; s < tile; ++s) out[s] = reduce_add(rows[s]);
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
    for (int s = 0; s < tile; ++s) out[s] = reduce_add(rows[s]);
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

static_assert(tile % Simd::width == 0, "a tile is a whole number of vectors");

// The loops over the chunks of a head (HeadDim / width, e.g. 8) must be unrolled so that the
// vectors stay in registers; GCC -O2 does not do it on its own.
#if defined(__clang__)
#define QWEN_ATTENTION_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define QWEN_ATTENTION_UNROLL _Pragma("GCC unroll 32")
#else
#define QWEN_ATTENTION_UNROLL
#endif

// Up to max_group_tokens consecutive tokens of the batch from one sequence.
struct QueryGroup {
  std::int64_t first_token = 0;
  int num_tokens = 0;
};

// Online-softmax state of every (token, query head) of a group of up to group_tokens tokens,
// plus one tile's scores.
struct Scratch {
  Scratch(int group_tokens, int num_heads, int head_dim, int group)
      : heads(static_cast<std::size_t>(num_heads)),
        acc(static_cast<std::size_t>(group_tokens) * heads * static_cast<std::size_t>(head_dim)),
        running_max(static_cast<std::size_t>(group_tokens) * heads),
        running_sum(running_max.size()),
        scores(static_cast<std::size_t>(group) * tile) {}
  std::size_t heads;
  std::vector<float> acc;          // [group_tokens][num_heads][head_dim]  unnormalised sum of p * v
  std::vector<float> running_max;  // [group_tokens][num_heads]
  std::vector<float> running_sum;  // [group_tokens][num_heads]
  std::vector<float> scores;       // [group][tile]  one tile's scores, then probabilities
};

// scores[g][s] = scale * q[g] . k[s] for the `group` query heads q_group ([group][HeadDim]) and
// n <= tile rows of K `stride` floats apart; lanes n .. tile-1 are -inf.
template <int HeadDim>
void tile_scores(const float* q_group, int group, const float* k_rows, std::size_t stride, int n, float scale,
                 float* scores) {
  using S = Simd;
  using V = typename S::V;
  constexpr int chunks = HeadDim / S::width;
  for (int g = 0; g < group; ++g) {
    V qv[chunks];
    QWEN_ATTENTION_UNROLL
    for (int c = 0; c < chunks; ++c) qv[c] = S::load(q_group + static_cast<std::size_t>(g) * HeadDim + c * S::width);
    V rows[tile];
    for (int s = 0; s < n; ++s) {
      const float* k = k_rows + static_cast<std::size_t>(s) * stride;
      V sums[2] = {S::zero(), S::zero()};  // even / odd chunks: half the FMA dependency chain
      QWEN_ATTENTION_UNROLL
      for (int c = 0; c < chunks; ++c) sums[c & 1] = S::fmadd(qv[c], S::load(k + c * S::width), sums[c & 1]);
      rows[s] = S::add(sums[0], sums[1]);
    }
    for (int s = n; s < tile; ++s) rows[s] = S::zero();
    float* row_scores = scores + static_cast<std::size_t>(g) * tile;
    S::reduce_rows(rows, row_scores);
    for (int s = 0; s < tile; s += S::width) S::store(row_scores + s, S::mul(S::load(row_scores + s), S::set1(scale)));
    for (int s = n; s < tile; ++s) row_scores[s] = -std::numeric_limits<float>::infinity();
  }
}

// One online-softmax step for `group` query heads over n rows of V: the scores become
// probabilities against the new running max, the running sum and accumulator are rescaled by
// exp(old max - new max), and p * v is added. running_max / running_sum: [group],
// acc: [group][HeadDim], scores: [group][tile].
template <int HeadDim>
void tile_update(int group, const float* v_rows, std::size_t stride, int n, float* scores, float* running_max,
                 float* running_sum, float* acc) {
  using S = Simd;
  using V = typename S::V;
  constexpr int chunks = HeadDim / S::width;
  for (int g = 0; g < group; ++g) {
    float* p = scores + static_cast<std::size_t>(g) * tile;
    V tile_max = S::load(p);
    for (int s = S::width; s < tile; s += S::width) tile_max = S::max(tile_max, S::load(p + s));
    const float old_max = running_max[g];
    const float new_max = std::max(old_max, S::reduce_max(tile_max));
    // The first tile has old_max = -inf: alpha = 0 and the (zero) accumulator stays zero.
    const float alpha = S::first(S::exp(S::set1(old_max - new_max)));
    V sum = S::zero();
    for (int s = 0; s < tile; s += S::width) {
      const V e = S::exp(S::sub(S::load(p + s), S::set1(new_max)));
      S::store(p + s, e);
      sum = S::add(sum, e);
    }
    running_max[g] = new_max;
    running_sum[g] = running_sum[g] * alpha + S::reduce_add(sum);

    float* acc_g = acc + static_cast<std::size_t>(g) * HeadDim;
    V o[chunks];
    QWEN_ATTENTION_UNROLL
    for (int c = 0; c < chunks; ++c) o[c] = S::mul(S::load(acc_g + c * S::width), S::set1(alpha));
    for (int s = 0; s < n; ++s) {  // only the n valid rows: the rest of the block may hold anything
      const float* v = v_rows + static_cast<std::size_t>(s) * stride;
      const V ps = S::set1(p[s]);
      QWEN_ATTENTION_UNROLL
      for (int c = 0; c < chunks; ++c) o[c] = S::fmadd(ps, S::load(v + c * S::width), o[c]);
    }
    QWEN_ATTENTION_UNROLL
    for (int c = 0; c < chunks; ++c) S::store(acc_g + c * S::width, o[c]);
  }
}

// One run: KV heads [head_begin, head_end) of one query group. Tiles are the outer loop (so a
// tile's rows of the run's KV heads, contiguous in the pool, are read together), then KV heads,
// then the group's tokens, which reuse the tile's K/V rows from L1.
template <int HeadDim>
void attend_run(const float* q, int num_heads, int group, const PagedAttentionBatch& batch, const PagedKVLayerView& kv,
                const QueryGroup& query_group, int head_begin, int head_end, float scale, float* out, Scratch& scratch) {
  const auto first_token = static_cast<std::size_t>(query_group.first_token);
  const auto tokens = static_cast<std::size_t>(query_group.num_tokens);
  const std::size_t heads = static_cast<std::size_t>(num_heads);
  const std::size_t first_head = static_cast<std::size_t>(head_begin) * static_cast<std::size_t>(group);
  const std::size_t end_head = static_cast<std::size_t>(head_end) * static_cast<std::size_t>(group);
  int max_length = 0;
  for (std::size_t j = 0; j < tokens; ++j) {
    max_length = std::max(max_length, batch.position[first_token + j] + 1);
    for (std::size_t h = first_head; h < end_head; ++h) {
      std::fill_n(scratch.acc.begin() + static_cast<std::ptrdiff_t>((j * heads + h) * HeadDim), HeadDim, 0.0f);
      scratch.running_max[j * heads + h] = -std::numeric_limits<float>::infinity();
      scratch.running_sum[j * heads + h] = 0.0f;
    }
  }
  const auto table = batch.block_tables[static_cast<std::size_t>(batch.sequence_of_token[first_token])];
  const std::size_t stride = static_cast<std::size_t>(kv.num_kv_heads) * HeadDim;  // floats between positions
  const int bs = kv.block_size;
  // Tiles in logical order: block b, slots [s0, s0 + tile) with s0 a multiple of `tile`.
  for (int b = 0; b * bs < max_length; ++b) {
    const std::size_t block_row = static_cast<std::size_t>(table[static_cast<std::size_t>(b)]) * static_cast<std::size_t>(bs);
    for (int s0 = 0; s0 < bs && b * bs + s0 < max_length; s0 += tile) {
      const int first = b * bs + s0;
      const std::size_t row_offset = (block_row + static_cast<std::size_t>(s0)) * stride;
      for (int kv_head = head_begin; kv_head < head_end; ++kv_head) {
        const std::size_t offset = row_offset + static_cast<std::size_t>(kv_head) * HeadDim;
        const std::size_t q_head = static_cast<std::size_t>(kv_head) * static_cast<std::size_t>(group);
        for (std::size_t j = 0; j < tokens; ++j) {
          const int length = batch.position[first_token + j] + 1;
          if (first >= length) continue;
          const int n = std::min({tile, bs - s0, length - first});
          const std::size_t state = j * heads + q_head;
          tile_scores<HeadDim>(q + ((first_token + j) * heads + q_head) * HeadDim, group, kv.key + offset, stride, n,
                               scale, scratch.scores.data());
          tile_update<HeadDim>(group, kv.value + offset, stride, n, scratch.scores.data(),
                               scratch.running_max.data() + state, scratch.running_sum.data() + state,
                               scratch.acc.data() + state * HeadDim);
        }
      }
    }
  }
  for (std::size_t j = 0; j < tokens; ++j)
    for (std::size_t h = first_head; h < end_head; ++h) {
      const float inv = 1.0f / scratch.running_sum[j * heads + h];
      const float* acc = scratch.acc.data() + (j * heads + h) * HeadDim;
      float* dst = out + ((first_token + j) * heads + h) * HeadDim;
      for (int i = 0; i < HeadDim; ++i) dst[i] = acc[i] * inv;
    }
}

// Checks the contract's shapes and indices (cheap, on the caller's thread). Every block id a
// token will read is checked against the pool.
inline void check_paged_attention(const char* op, const float* q, int num_heads, const PagedAttentionBatch& batch,
                                  const PagedKVLayerView& kv, float scale, const float* out, int head_dim) {
  if (kv.head_dim != head_dim)
    throw_error<InvalidArgument>(op, ": the cache has head_dim ", kv.head_dim, ", the kernel is compiled for ", head_dim);
  if (kv.key == nullptr || kv.value == nullptr || kv.num_blocks <= 0 || kv.block_size <= 0 || kv.num_kv_heads <= 0)
    throw_error<InvalidArgument>(op, ": empty KV layer view (num_blocks ", kv.num_blocks, ", block_size ", kv.block_size,
                                 ", num_kv_heads ", kv.num_kv_heads, ")");
  if (num_heads <= 0 || num_heads % kv.num_kv_heads != 0)
    throw_error<InvalidArgument>(op, ": num_heads ", num_heads, " is not a positive multiple of num_kv_heads ", kv.num_kv_heads);
  if (!std::isfinite(scale)) throw_error<InvalidArgument>(op, ": scale ", scale, " is not finite");
  if (batch.sequence_of_token.size() != batch.position.size())
    throw_error<InvalidArgument>(op, ": sequence_of_token has ", batch.sequence_of_token.size(), " entries, position has ",
                                 batch.position.size());
  if (!batch.position.empty() && (q == nullptr || out == nullptr)) throw_error<InvalidArgument>(op, ": null q or out");
  std::vector<std::int64_t> blocks_read(batch.block_tables.size(), 0);
  for (std::size_t t = 0; t < batch.position.size(); ++t) {
    const std::int32_t seq = batch.sequence_of_token[t], pos = batch.position[t];
    if (seq < 0 || static_cast<std::size_t>(seq) >= batch.block_tables.size())
      throw_error<InvalidArgument>(op, ": token ", t, " has sequence index ", seq, ", there are ", batch.block_tables.size(),
                                   " block tables");
    if (pos < 0) throw_error<InvalidArgument>(op, ": token ", t, " has position ", pos);
    const std::int64_t needed = static_cast<std::int64_t>(pos) / kv.block_size + 1;
    if (needed > static_cast<std::int64_t>(batch.block_tables[static_cast<std::size_t>(seq)].size()))
      throw_error<InvalidArgument>(op, ": token ", t, " at position ", pos, " needs ", needed, " blocks of ", kv.block_size,
                                   ", the block table of sequence index ", seq, " has ",
                                   batch.block_tables[static_cast<std::size_t>(seq)].size());
    blocks_read[static_cast<std::size_t>(seq)] = std::max(blocks_read[static_cast<std::size_t>(seq)], needed);
  }
  for (std::size_t s = 0; s < batch.block_tables.size(); ++s)
    for (std::int64_t b = 0; b < blocks_read[s]; ++b) {
      const std::int32_t block = batch.block_tables[s][static_cast<std::size_t>(b)];
      if (block < 0 || block >= kv.num_blocks)
        throw_error<InvalidArgument>(op, ": block table of sequence index ", s, " entry ", b, " is block ", block,
                                     ", the pool has ", kv.num_blocks);
    }
}

}  // namespace attention_detail

// The fast version (see the contract at the top). HeadDim: any multiple of 16 (64 and 128 tested).
template <int HeadDim>
void paged_attention(const float* q, int num_heads, const PagedAttentionBatch& batch, const PagedKVLayerView& kv,
                     float scale, float* out, ThreadPool& pool) {
  using namespace attention_detail;
  static_assert(HeadDim > 0 && HeadDim % 16 == 0 && HeadDim % Simd::width == 0,
                "paged_attention: HeadDim must be a positive multiple of 16");
  check_paged_attention("paged_attention", q, num_heads, batch, kv, scale, out, HeadDim);
  const auto n_tokens = static_cast<std::int64_t>(batch.position.size());
  if (n_tokens == 0) return;
  const int kv_heads = kv.num_kv_heads;
  const int group = num_heads / kv_heads;

  // Query groups and their cost (positions read, plus a fixed overhead per token).
  constexpr std::int64_t token_overhead = 16;
  std::vector<QueryGroup> groups;
  std::vector<std::int64_t> group_cost;
  int largest_group = 0;
  for (std::int64_t t = 0; t < n_tokens; ++t) {
    const auto i = static_cast<std::size_t>(t);
    if (groups.empty() || groups.back().num_tokens == max_group_tokens ||
        batch.sequence_of_token[static_cast<std::size_t>(groups.back().first_token)] != batch.sequence_of_token[i]) {
      groups.push_back({t, 0});
      group_cost.push_back(0);
    }
    largest_group = std::max(largest_group, ++groups.back().num_tokens);
    group_cost.back() += static_cast<std::int64_t>(batch.position[i]) + 1 + token_overhead;
  }

  // Items (group, KV head), group-major; one contiguous range of about equal cost per thread.
  const std::int64_t items = static_cast<std::int64_t>(groups.size()) * kv_heads;
  const std::int64_t parts = std::min<std::int64_t>(pool.size(), items);
  std::int64_t total = 0;
  for (std::int64_t cost : group_cost) total += cost * kv_heads;
  std::vector<std::int64_t> range_begin(static_cast<std::size_t>(parts) + 1, items);
  range_begin[0] = 0;
  {
    std::int64_t part = 1, prefix = 0;
    for (std::int64_t i = 0; i < items && part < parts; ++i) {
      prefix += group_cost[static_cast<std::size_t>(i / kv_heads)];
      while (part < parts && prefix * parts >= total * part) range_begin[static_cast<std::size_t>(part++)] = i + 1;
    }
  }

  pool.parallel_for(parts, 1, [&](std::int64_t part_begin, std::int64_t part_end) {
    Scratch scratch(largest_group, num_heads, HeadDim, group);
    for (std::int64_t part = part_begin; part < part_end; ++part) {
      const std::int64_t end = range_begin[static_cast<std::size_t>(part) + 1];
      for (std::int64_t i = range_begin[static_cast<std::size_t>(part)]; i < end;) {
        // The range's items of one group form one run.
        const auto g = static_cast<std::size_t>(i / kv_heads);
        const int head_begin = static_cast<int>(i % kv_heads);
        const int head_end = static_cast<int>(std::min<std::int64_t>(kv_heads, head_begin + (end - i)));
        attend_run<HeadDim>(q, num_heads, group, batch, kv, groups[g], head_begin, head_end, scale, out, scratch);
        i += head_end - head_begin;
      }
    }
  });
}

// The oracle: per token, gather positions 0 .. position of its sequence through the block table
// into contiguous K / V arrays, then scores, softmax and weighted sum in double.
inline void paged_attention_reference(const float* q, int num_heads, const PagedAttentionBatch& batch,
                                      const PagedKVLayerView& kv, float scale, float* out) {
  const int head_dim = kv.head_dim;
  attention_detail::check_paged_attention("paged_attention_reference", q, num_heads, batch, kv, scale, out, head_dim);
  const auto hd = static_cast<std::size_t>(head_dim);
  const auto kv_heads = static_cast<std::size_t>(kv.num_kv_heads);
  const std::size_t group = static_cast<std::size_t>(num_heads) / kv_heads;
  const std::size_t slot = kv_heads * hd;  // floats of one position
  std::vector<double> keys, values, weights;
  for (std::size_t t = 0; t < batch.position.size(); ++t) {
    const auto table = batch.block_tables[static_cast<std::size_t>(batch.sequence_of_token[t])];
    const auto length = static_cast<std::size_t>(batch.position[t]) + 1;
    keys.assign(length * slot, 0.0);
    values.assign(length * slot, 0.0);
    for (std::size_t p = 0; p < length; ++p) {
      const auto block = static_cast<std::size_t>(table[p / static_cast<std::size_t>(kv.block_size)]);
      const std::size_t row = block * static_cast<std::size_t>(kv.block_size) + p % static_cast<std::size_t>(kv.block_size);
      for (std::size_t i = 0; i < slot; ++i) {
        keys[p * slot + i] = kv.key[row * slot + i];
        values[p * slot + i] = kv.value[row * slot + i];
      }
    }
    for (std::size_t h = 0; h < static_cast<std::size_t>(num_heads); ++h) {
      const std::size_t kvh = h / group;
      const float* qh = q + (t * static_cast<std::size_t>(num_heads) + h) * hd;
      weights.assign(length, 0.0);
      double max_score = -std::numeric_limits<double>::infinity();
      for (std::size_t p = 0; p < length; ++p) {
        double dot = 0;
        for (std::size_t i = 0; i < hd; ++i) dot += static_cast<double>(qh[i]) * keys[p * slot + kvh * hd + i];
        weights[p] = dot * static_cast<double>(scale);
        max_score = std::max(max_score, weights[p]);
      }
      double sum = 0;
      for (std::size_t p = 0; p < length; ++p) sum += (weights[p] = std::exp(weights[p] - max_score));
      float* dst = out + (t * static_cast<std::size_t>(num_heads) + h) * hd;
      for (std::size_t i = 0; i < hd; ++i) {
        double acc = 0;
        for (std::size_t p = 0; p < length; ++p) acc += weights[p] * values[p * slot + kvh * hd + i];
        dst[i] = static_cast<float>(acc / sum);
      }
    }
  }
}

#undef QWEN_ATTENTION_UNROLL

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace qwen::kernels::cpu

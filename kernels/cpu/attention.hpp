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

#include <qwen/kernels/cpu/simd.hpp>
#include <qwen/kernels/cpu/thread_pool.hpp>

#include "qwen/core/error.hpp"
#include "qwen/kv/paged_kv.hpp"


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

// The vector lanes and exp are kernels/cpu/simd.hpp's (shared with the sampler's row passes).
using simd::Simd;
static_assert(tile == simd::reduce_rows_count, "a tile's scores are reduced in one reduce_rows");

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

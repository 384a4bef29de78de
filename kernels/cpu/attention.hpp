// Causal grouped-query attention over a paged KV cache, for a flat batch of tokens from several
// sequences (prefill chunks of any length at any position, and decode tokens, mixed).
//
// Contract
//   q:   [n_tokens, num_kv_heads * Group, HeadDim] fp32, already q_norm'ed and rotated
//   out: [n_tokens, num_kv_heads * Group, HeadDim] fp32, fully overwritten; must not overlap q
//   batch.sequence_of_token[t]: index s of token t's sequence, 0 <= s < num_sequences
//   batch.position[t]:          absolute position of token t; it attends to positions
//                               0 .. position[t] (inclusive) of its own sequence
//   batch.block_table_indptr / block_table_indices: the block tables in CSR form. Sequence s's
//                               physical block ids, in logical order, are
//                               indices[indptr[s] .. indptr[s + 1]); position p is at slot
//                               p % block_size of block indices[indptr[s] + p / block_size].
//                               A table must cover every position read; two tables may name
//                               the same block (a shared prefix).
//   kv: one layer's pools, key and value [num_blocks][block_size][num_kv_heads][HeadDim] of fp32
//       or bf16 (PagedKVLayer<T>; the scores and sums are fp32 either way, bf16 read exactly). The
//       K/V of every position a token reads, its own included, is already written; nothing
//       else of the pools is read (unwritten slots may hold anything, NaN included).
//   Query head h uses KV head h / Group.
//
//   out[t, h] = sum_p softmax_p(scale * q[t, h] . k[p]) * v[p],   p = 0 .. position[t]
//
// Plan, then run: PagedAttention reserves its work lists and scratch once (constructor); plan()
// checks a step's batch against the pool geometry and splits the work (once per step, on the
// calling thread); run() computes one layer (once per layer), allocating nothing and checking
// only that the layer has the planned geometry. The batch's arrays are read by plan() and by
// every run(): they must stay alive and unchanged until the last run() of the step.
//
// The fast version computes in fp32 with an online softmax: a running max and sum per (token,
// query head), rescaled once per tile of at most 16 positions inside one block; no score matrix
// over a whole sequence is materialised.
//   - Work item = (query group, KV head). A query group is up to 8 consecutive tokens of the
//     batch from one sequence (a prefill chunk becomes several groups, a decode token is one);
//     its tokens and the Group query heads of the KV head go through each K/V tile together,
//     so a tile comes from memory once and is reused from L1.
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
#include <type_traits>
#include <vector>

#include <qwen/kernels/cpu/simd.hpp>
#include <qwen/kernels/cpu/thread_pool.hpp>
#include <qwen/kernels/cpu/unroll.hpp>

#include "qwen/core/error.hpp"
#include "qwen/core/numeric.hpp"

namespace qwen::kernels::cpu {

// One layer's pools: key, value [num_blocks][block_size][num_kv_heads][HeadDim] of T (float or
// bf16).
template <class T>
struct PagedKVLayer {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16>, "PagedKVLayer: the element type is float or bf16");
  const T* key = nullptr;
  const T* value = nullptr;
  int num_blocks = 0;
  int block_size = 0;
  int num_kv_heads = 0;
};

// A step's addressing: which sequence and position each token has, and each sequence's block
// table in CSR form (FlashInfer's indptr / indices). Made once per step by the caller (the
// forward pass), read by every layer.
struct PagedAttentionBatch {
  std::span<const std::int32_t> sequence_of_token;    // [n_tokens] index of the token's sequence
  std::span<const std::int32_t> position;             // [n_tokens]
  std::span<const std::int32_t> block_table_indptr;   // [num_sequences + 1], indptr[0] = 0, non-decreasing
  std::span<const std::int32_t> block_table_indices;  // [indptr[num_sequences]] physical block ids
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


// Up to max_group_tokens consecutive tokens of the batch from one sequence, with what every
// layer needs of them, found once by plan().
struct QueryGroup {
  std::int64_t first_token = 0;
  int num_tokens = 0;
  int max_length = 0;                         // largest position of its tokens, plus one
  const std::int32_t* block_table = nullptr;  // its sequence's physical block ids
};

// Online-softmax state of every (token, query head) of a query group, plus one tile's scores.
// One per pool thread.
template <int Group>
struct Scratch {
  Scratch(std::size_t num_heads, std::size_t head_dim)
      : acc(max_group_tokens * num_heads * head_dim), running_max(max_group_tokens * num_heads),
        running_sum(running_max.size()) {}
  std::vector<float> acc;          // [max_group_tokens][num_heads][HeadDim]  unnormalised sum of p * v
  std::vector<float> running_max;  // [max_group_tokens][num_heads]
  std::vector<float> running_sum;  // [max_group_tokens][num_heads]
  alignas(64) float scores[Group * tile];  // [Group][tile]  one tile's scores, then probabilities
};

// scores[g][s] = scale * q[g] . k[s] for the Group query heads q_group ([Group][HeadDim]) and
// n <= tile rows of K `stride` elements apart; lanes n .. tile-1 are -inf.
template <int HeadDim, int Group, class T>
void tile_scores(const float* q_group, const T* k_rows, std::size_t stride, int n, float scale, float* scores) {
  using S = Simd;
  using V = typename S::V;
  constexpr int chunks = HeadDim / S::width;
  for (int g = 0; g < Group; ++g) {
    V qv[chunks];
    QWEN_UNROLL(32)
    for (int c = 0; c < chunks; ++c) qv[c] = S::load(q_group + static_cast<std::size_t>(g) * HeadDim + c * S::width);
    V rows[tile];
    for (int s = 0; s < n; ++s) {
      const T* k = k_rows + static_cast<std::size_t>(s) * stride;
      V sums[2] = {S::zero(), S::zero()};  // even / odd chunks: half the FMA dependency chain
      QWEN_UNROLL(32)
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

// One online-softmax step for the Group query heads over n rows of V: the scores become
// probabilities against the new running max, the running sum and accumulator are rescaled by
// exp(old max - new max), and p * v is added. running_max / running_sum: [Group],
// acc: [Group][HeadDim], scores: [Group][tile].
template <int HeadDim, int Group, class T>
void tile_update(const T* v_rows, std::size_t stride, int n, float* scores, float* running_max, float* running_sum,
                 float* acc) {
  using S = Simd;
  using V = typename S::V;
  constexpr int chunks = HeadDim / S::width;
  for (int g = 0; g < Group; ++g) {
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
    QWEN_UNROLL(32)
    for (int c = 0; c < chunks; ++c) o[c] = S::mul(S::load(acc_g + c * S::width), S::set1(alpha));
    for (int s = 0; s < n; ++s) {  // only the n valid rows: the rest of the block may hold anything
      const T* v = v_rows + static_cast<std::size_t>(s) * stride;
      const V ps = S::set1(p[s]);
      QWEN_UNROLL(32)
      for (int c = 0; c < chunks; ++c) o[c] = S::fmadd(ps, S::load(v + c * S::width), o[c]);
    }
    QWEN_UNROLL(32)
    for (int c = 0; c < chunks; ++c) S::store(acc_g + c * S::width, o[c]);
  }
}

// One run: KV heads [head_begin, head_end) of one query group. Tiles are the outer loop (so a
// tile's rows of the run's KV heads, contiguous in the pool, are read together), then KV heads,
// then the group's tokens, which reuse the tile's K/V rows from L1.
template <int HeadDim, int Group, class T>
void attend_run(const float* q, const std::int32_t* position, const PagedKVLayer<T>& kv, const QueryGroup& query_group,
                int head_begin, int head_end, float scale, float* out, Scratch<Group>& scratch) {
  const auto first_token = static_cast<std::size_t>(query_group.first_token);
  const auto tokens = static_cast<std::size_t>(query_group.num_tokens);
  const std::size_t heads = static_cast<std::size_t>(kv.num_kv_heads) * Group;
  const std::size_t first_head = static_cast<std::size_t>(head_begin) * Group;
  const std::size_t end_head = static_cast<std::size_t>(head_end) * Group;
  for (std::size_t j = 0; j < tokens; ++j)
    for (std::size_t h = first_head; h < end_head; ++h) {
      std::fill_n(scratch.acc.begin() + static_cast<std::ptrdiff_t>((j * heads + h) * HeadDim), HeadDim, 0.0f);
      scratch.running_max[j * heads + h] = -std::numeric_limits<float>::infinity();
      scratch.running_sum[j * heads + h] = 0.0f;
    }
  const int max_length = query_group.max_length;
  const std::int32_t* table = query_group.block_table;
  const std::size_t stride = static_cast<std::size_t>(kv.num_kv_heads) * HeadDim;  // elements between positions
  const int bs = kv.block_size;
  // Tiles in logical order: block b, slots [s0, s0 + tile) with s0 a multiple of `tile`.
  // The rows of the run's KV heads at positions [p, p + tile) (within p's block), K and V, asked
  // for one tile ahead of use: a decode token reads each row once, so at long context the tiles
  // come from DRAM and the loop would otherwise wait on each in turn (decode at context 4096: 11.4
  // -> 12.4 tok/s with a bf16 cache on the 0.6B shape; two tiles ahead measured no better).
  // Results do not depend on it.
  const std::size_t run_bytes = static_cast<std::size_t>(head_end - head_begin) * HeadDim * sizeof(T);
  const auto prefetch_tile = [&](int p) {
    if (p >= max_length) return;
    const int offset_in_block = p % bs;
    const int n = std::min({tile, bs - offset_in_block, max_length - p});
    const std::size_t row = static_cast<std::size_t>(table[p / bs]) * static_cast<std::size_t>(bs) + static_cast<std::size_t>(offset_in_block);
    for (int s = 0; s < n; ++s) {
      const std::size_t at = (row + static_cast<std::size_t>(s)) * stride + static_cast<std::size_t>(head_begin) * HeadDim;
      // Every cache line of the run's K and V rows (a row need not start on a line). The lines
      // are addresses, not pointers into the pools: the first may start before the pool.
      for (const T* rows : {kv.key + at, kv.value + at}) {
        const auto first = reinterpret_cast<std::uintptr_t>(rows);
        for (std::uintptr_t line = first & ~std::uintptr_t{63}; line < first + run_bytes; line += 64)
          __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 3);
      }
    }
  };
  for (int b = 0; b * bs < max_length; ++b) {
    const std::size_t block_row = static_cast<std::size_t>(table[b]) * static_cast<std::size_t>(bs);
    for (int s0 = 0; s0 < bs && b * bs + s0 < max_length; s0 += tile) {
      const int first = b * bs + s0;
      prefetch_tile(first + std::min(tile, bs - s0));
      const std::size_t row_offset = (block_row + static_cast<std::size_t>(s0)) * stride;
      for (int kv_head = head_begin; kv_head < head_end; ++kv_head) {
        const std::size_t offset = row_offset + static_cast<std::size_t>(kv_head) * HeadDim;
        const std::size_t q_head = static_cast<std::size_t>(kv_head) * Group;
        for (std::size_t j = 0; j < tokens; ++j) {
          const int length = position[first_token + j] + 1;
          if (first >= length) continue;
          const int n = std::min({tile, bs - s0, length - first});
          const std::size_t state = j * heads + q_head;
          tile_scores<HeadDim, Group, T>(q + ((first_token + j) * heads + q_head) * HeadDim, kv.key + offset, stride, n,
                                      scale, scratch.scores);
          tile_update<HeadDim, Group, T>(kv.value + offset, stride, n, scratch.scores, scratch.running_max.data() + state,
                                      scratch.running_sum.data() + state, scratch.acc.data() + state * HeadDim);
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

// Checks the CSR block tables' shape and returns the number of sequences.
inline int check_block_tables(const char* op, const PagedAttentionBatch& batch) {
  const auto indptr = batch.block_table_indptr;
  if (indptr.empty())
    throw_error<InvalidArgument>(op, ": block_table_indptr is empty (it has num_sequences + 1 entries, the first 0)");
  if (indptr.size() - 1 > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    throw_error<InvalidArgument>(op, ": block_table_indptr has ", indptr.size(), " entries, too many sequences");
  if (indptr[0] != 0) throw_error<InvalidArgument>(op, ": block_table_indptr[0] is ", indptr[0], ", must be 0");
  for (std::size_t s = 1; s < indptr.size(); ++s)
    if (indptr[s] < indptr[s - 1])
      throw_error<InvalidArgument>(op, ": block_table_indptr[", s, "] is ", indptr[s], ", below block_table_indptr[", s - 1,
                                   "] = ", indptr[s - 1]);
  if (static_cast<std::size_t>(indptr.back()) != batch.block_table_indices.size())
    throw_error<InvalidArgument>(op, ": block_table_indptr ends at ", indptr.back(), ", block_table_indices has ",
                                 batch.block_table_indices.size(), " entries");
  return static_cast<int>(indptr.size() - 1);
}

// Checks every token against the tables and the pool geometry: its sequence index, its position,
// its table's length, and every block id it reads. blocks_read: [num_sequences] scratch.
inline void check_tokens(const char* op, const PagedAttentionBatch& batch, int num_sequences, int num_blocks,
                         int block_size, std::span<std::int64_t> blocks_read) {
  if (num_blocks <= 0 || block_size <= 0)
    throw_error<InvalidArgument>(op, ": num_blocks ", num_blocks, " and block_size ", block_size, " must be positive");
  if (batch.sequence_of_token.size() != batch.position.size())
    throw_error<InvalidArgument>(op, ": sequence_of_token has ", batch.sequence_of_token.size(), " entries, position has ",
                                 batch.position.size());
  const auto indptr = batch.block_table_indptr;
  std::fill(blocks_read.begin(), blocks_read.end(), 0);
  for (std::size_t t = 0; t < batch.position.size(); ++t) {
    const std::int32_t seq = batch.sequence_of_token[t], pos = batch.position[t];
    if (seq < 0 || seq >= num_sequences)
      throw_error<InvalidArgument>(op, ": token ", t, " has sequence index ", seq, ", there are ", num_sequences,
                                   " block tables");
    if (pos < 0 || pos == std::numeric_limits<std::int32_t>::max())  // position + 1 must fit
      throw_error<InvalidArgument>(op, ": token ", t, " has position ", pos, ", outside [0, ",
                                   std::numeric_limits<std::int32_t>::max(), ")");
    const auto s = static_cast<std::size_t>(seq);
    const std::int64_t needed = static_cast<std::int64_t>(pos) / block_size + 1;
    const std::int64_t length = indptr[s + 1] - indptr[s];
    if (needed > length)
      throw_error<InvalidArgument>(op, ": token ", t, " at position ", pos, " needs ", needed, " blocks of ", block_size,
                                   ", the block table of sequence index ", seq, " has ", length);
    blocks_read[s] = std::max(blocks_read[s], needed);
  }
  for (std::size_t s = 0; s < static_cast<std::size_t>(num_sequences); ++s)
    for (std::int64_t b = 0; b < blocks_read[s]; ++b) {
      const std::int32_t block = batch.block_table_indices[static_cast<std::size_t>(indptr[s] + b)];
      if (block < 0 || block >= num_blocks)
        throw_error<InvalidArgument>(op, ": block table of sequence index ", s, " entry ", b, " is block ", block,
                                     ", the pool has ", num_blocks);
    }
}

}  // namespace attention_detail

// The fast version (see the contract at the top). HeadDim: a multiple of 16 (64, 128 and 256
// tested); Group: query heads per KV head (1, 2, 4 and 8 tested).
template <int HeadDim, int Group>
class PagedAttention {
  static_assert(HeadDim > 0 && HeadDim % 16 == 0, "PagedAttention: HeadDim must be a positive multiple of 16");
  static_assert(HeadDim % attention_detail::Simd::width == 0, "PagedAttention: a head is a whole number of vectors");
  static_assert(Group > 0, "PagedAttention: Group (query heads per KV head) must be positive");

 public:
  static constexpr int head_dim = HeadDim;
  static constexpr int group = Group;

  // Reserves everything for steps of up to max_tokens tokens and max_sequences sequences: the
  // query groups and their costs, the per-thread ranges, one scratch per pool thread. plan() and
  // run() allocate nothing afterwards. The pool must outlive this object.
  PagedAttention(std::int64_t max_tokens, int max_sequences, int num_kv_heads, ThreadPool& pool)
      : pool_(&pool), max_tokens_(max_tokens), max_sequences_(max_sequences), num_kv_heads_(num_kv_heads) {
    if (max_tokens <= 0 || max_sequences <= 0 || num_kv_heads <= 0)
      throw_error<InvalidArgument>("PagedAttention: max_tokens ", max_tokens, ", max_sequences ", max_sequences,
                                   ", num_kv_heads ", num_kv_heads, " must all be positive");
    groups_.reserve(static_cast<std::size_t>(max_tokens));  // at most one group per token
    group_cost_.reserve(static_cast<std::size_t>(max_tokens));
    blocks_read_.resize(static_cast<std::size_t>(max_sequences));
    range_begin_.reserve(static_cast<std::size_t>(pool.size()) + 1);
    scratch_.reserve(pool.size());
    for (unsigned i = 0; i < pool.size(); ++i) scratch_.emplace_back(static_cast<std::size_t>(num_heads()), HeadDim);
  }

  [[nodiscard]] int num_kv_heads() const noexcept { return num_kv_heads_; }
  [[nodiscard]] int num_heads() const noexcept { return num_kv_heads_ * Group; }

  // Once per step: checks the batch against the pool geometry (sizes within the reserved
  // maxima, CSR tables well formed, every token's sequence index and position valid, its table
  // long enough, every block id it reads inside [0, num_blocks)) and splits the work over the
  // pool. Errors are InvalidArgument naming the token, sequence and values; after an error
  // nothing is planned. Keeps views of the batch's arrays for the runs.
  void plan(const PagedAttentionBatch& batch, int num_blocks, int block_size) {
    using namespace attention_detail;
    planned_ = false;
    const auto n_tokens = static_cast<std::int64_t>(batch.position.size());
    if (n_tokens > max_tokens_)
      throw_error<InvalidArgument>("PagedAttention::plan: ", n_tokens, " tokens, more than max_tokens ", max_tokens_);
    const int num_sequences = check_block_tables("PagedAttention::plan", batch);
    if (num_sequences > max_sequences_)
      throw_error<InvalidArgument>("PagedAttention::plan: ", num_sequences, " sequences, more than max_sequences ",
                                   max_sequences_);
    check_tokens("PagedAttention::plan", batch, num_sequences, num_blocks, block_size,
                 std::span(blocks_read_).first(static_cast<std::size_t>(num_sequences)));

    // Query groups and their cost (positions read, plus a fixed overhead per token).
    constexpr std::int64_t token_overhead = 16;
    groups_.clear();
    group_cost_.clear();
    for (std::int64_t t = 0; t < n_tokens; ++t) {
      const auto i = static_cast<std::size_t>(t);
      const std::int32_t seq = batch.sequence_of_token[i];
      if (groups_.empty() || groups_.back().num_tokens == max_group_tokens ||
          batch.sequence_of_token[static_cast<std::size_t>(groups_.back().first_token)] != seq) {
        const auto first_block = static_cast<std::size_t>(batch.block_table_indptr[static_cast<std::size_t>(seq)]);
        groups_.push_back({t, 0, 0, batch.block_table_indices.data() + first_block});
        group_cost_.push_back(0);
      }
      QueryGroup& query_group = groups_.back();
      ++query_group.num_tokens;
      query_group.max_length = std::max(query_group.max_length, batch.position[i] + 1);
      group_cost_.back() += static_cast<std::int64_t>(batch.position[i]) + 1 + token_overhead;
    }

    // Items (group, KV head), group-major; one contiguous range of about equal cost per thread.
    const std::int64_t items = static_cast<std::int64_t>(groups_.size()) * num_kv_heads_;
    parts_ = std::min<std::int64_t>(pool_->size(), items);
    std::int64_t total = 0;
    for (std::int64_t cost : group_cost_) total += cost * num_kv_heads_;
    range_begin_.assign(static_cast<std::size_t>(parts_) + 1, items);
    range_begin_[0] = 0;
    std::int64_t part = 1, prefix = 0;
    for (std::int64_t i = 0; i < items && part < parts_; ++i) {
      prefix += group_cost_[static_cast<std::size_t>(i / num_kv_heads_)];
      while (part < parts_ && prefix * parts_ >= total * part) range_begin_[static_cast<std::size_t>(part++)] = i + 1;
    }

    position_ = batch.position;
    num_blocks_ = num_blocks;
    block_size_ = block_size;
    planned_ = true;
  }

  // Once per layer: out[t, h] for the planned batch. q, out: [n_tokens, num_heads(), HeadDim].
  // kv must have the planned num_blocks and block_size and the constructor's num_kv_heads.
  // One run at a time per object (the scratch is the object's).
  template <class T>
  void run(const float* q, const PagedKVLayer<T>& kv, float scale, float* out) {
    using namespace attention_detail;
    if (!planned_) throw_error<InvalidArgument>("PagedAttention::run: no batch is planned (call plan first)");
    if (kv.key == nullptr || kv.value == nullptr) throw_error<InvalidArgument>("PagedAttention::run: null K or V pool");
    if (kv.num_blocks != num_blocks_ || kv.block_size != block_size_ || kv.num_kv_heads != num_kv_heads_)
      throw_error<InvalidArgument>("PagedAttention::run: the layer has num_blocks ", kv.num_blocks, ", block_size ",
                                   kv.block_size, ", num_kv_heads ", kv.num_kv_heads, "; planned for ", num_blocks_, ", ",
                                   block_size_, ", ", num_kv_heads_);
    if (!std::isfinite(scale)) throw_error<InvalidArgument>("PagedAttention::run: scale ", scale, " is not finite");
    if (position_.empty()) return;
    if (q == nullptr || out == nullptr) throw_error<InvalidArgument>("PagedAttention::run: null q or out");

    const std::int64_t kv_heads = num_kv_heads_;
    // parts_ <= pool size, so parallel_for gives each chunk exactly one part (chunk c is [c, c + 1)),
    // or runs them all on one thread: scratch_[part_begin] is used by one thread at a time.
    pool_->parallel_for(parts_, 1, [&](std::int64_t part_begin, std::int64_t part_end) {
      Scratch<Group>& scratch = scratch_[static_cast<std::size_t>(part_begin)];
      for (std::int64_t part = part_begin; part < part_end; ++part) {
        const std::int64_t end = range_begin_[static_cast<std::size_t>(part) + 1];
        for (std::int64_t i = range_begin_[static_cast<std::size_t>(part)]; i < end;) {
          // The range's items of one group form one run.
          const auto g = static_cast<std::size_t>(i / kv_heads);
          const int head_begin = static_cast<int>(i % kv_heads);
          const int head_end = static_cast<int>(std::min<std::int64_t>(kv_heads, head_begin + (end - i)));
          attend_run<HeadDim, Group, T>(q, position_.data(), kv, groups_[g], head_begin, head_end, scale, out, scratch);
          i += head_end - head_begin;
        }
      }
    });
  }

 private:
  ThreadPool* pool_;
  std::int64_t max_tokens_;
  int max_sequences_;
  int num_kv_heads_;

  // The plan.
  bool planned_ = false;
  int num_blocks_ = 0, block_size_ = 0;
  std::span<const std::int32_t> position_;              // the batch's positions
  std::vector<attention_detail::QueryGroup> groups_;    // capacity max_tokens
  std::vector<std::int64_t> group_cost_;                // [groups]
  std::vector<std::int64_t> blocks_read_;               // [max_sequences] plan()'s scratch
  std::int64_t parts_ = 0;                              // thread ranges, <= pool size
  std::vector<std::int64_t> range_begin_;               // [parts + 1] first item of each range

  std::vector<attention_detail::Scratch<Group>> scratch_;  // [pool size]
};

// Convenience for tests and one-off calls: plan + run with a temporary PagedAttention (which
// allocates). A forward pass keeps one PagedAttention and plans once per step instead.
template <int HeadDim, int Group, class T>
void paged_attention(const float* q, const PagedAttentionBatch& batch, const PagedKVLayer<T>& kv, float scale, float* out,
                     ThreadPool& pool) {
  const auto n_tokens = static_cast<std::int64_t>(batch.position.size());
  const std::size_t tables = batch.block_table_indptr.empty() ? 0 : batch.block_table_indptr.size() - 1;
  const int num_sequences = static_cast<int>(std::min<std::size_t>(tables, std::numeric_limits<int>::max()));
  PagedAttention<HeadDim, Group> attention(std::max<std::int64_t>(n_tokens, 1), std::max(num_sequences, 1),
                                           kv.num_kv_heads, pool);
  attention.plan(batch, kv.num_blocks, kv.block_size);
  attention.run(q, kv, scale, out);
}

// The oracle, runtime shape: per token, gather positions 0 .. position of its sequence through
// the block table into contiguous K / V arrays, then scores, softmax and weighted sum in double.
// q, out: [n_tokens, num_heads, head_dim]; kv's pools [num_blocks][block_size][num_kv_heads][head_dim].
template <class T>
void paged_attention_reference(const float* q, int num_heads, int head_dim, const PagedAttentionBatch& batch,
                               const PagedKVLayer<T>& kv, float scale, float* out) {
  constexpr const char* op = "paged_attention_reference";
  const auto to_double = [](T x) {
    if constexpr (std::is_same_v<T, bf16>)
      return static_cast<double>(x.to_float());
    else
      return static_cast<double>(x);
  };
  if (head_dim <= 0) throw_error<InvalidArgument>(op, ": head_dim ", head_dim, " must be positive");
  if (kv.key == nullptr || kv.value == nullptr || kv.num_kv_heads <= 0)
    throw_error<InvalidArgument>(op, ": null K or V pool, or num_kv_heads ", kv.num_kv_heads);
  if (num_heads <= 0 || num_heads % kv.num_kv_heads != 0)
    throw_error<InvalidArgument>(op, ": num_heads ", num_heads, " is not a positive multiple of num_kv_heads ", kv.num_kv_heads);
  if (!std::isfinite(scale)) throw_error<InvalidArgument>(op, ": scale ", scale, " is not finite");
  const int num_sequences = attention_detail::check_block_tables(op, batch);
  std::vector<std::int64_t> blocks_read(static_cast<std::size_t>(num_sequences));
  attention_detail::check_tokens(op, batch, num_sequences, kv.num_blocks, kv.block_size, blocks_read);
  if (!batch.position.empty() && (q == nullptr || out == nullptr)) throw_error<InvalidArgument>(op, ": null q or out");

  const auto hd = static_cast<std::size_t>(head_dim);
  const auto kv_heads = static_cast<std::size_t>(kv.num_kv_heads);
  const std::size_t group = static_cast<std::size_t>(num_heads) / kv_heads;
  const std::size_t slot = kv_heads * hd;  // floats of one position
  const auto bs = static_cast<std::size_t>(kv.block_size);
  std::vector<double> keys, values, weights;
  for (std::size_t t = 0; t < batch.position.size(); ++t) {
    const auto seq = static_cast<std::size_t>(batch.sequence_of_token[t]);
    const std::int32_t* table = batch.block_table_indices.data() + batch.block_table_indptr[seq];
    const auto length = static_cast<std::size_t>(batch.position[t]) + 1;
    keys.assign(length * slot, 0.0);
    values.assign(length * slot, 0.0);
    for (std::size_t p = 0; p < length; ++p) {
      const std::size_t row = static_cast<std::size_t>(table[p / bs]) * bs + p % bs;
      for (std::size_t i = 0; i < slot; ++i) {
        keys[p * slot + i] = to_double(kv.key[row * slot + i]);
        values[p * slot + i] = to_double(kv.value[row * slot + i]);
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


#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace qwen::kernels::cpu

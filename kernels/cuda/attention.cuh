// Causal grouped-query attention over a paged KV cache, for a flat batch of tokens from several
// sequences (decode tokens and prefill chunks, mixed). CUDA twin of kernels/cpu/attention.hpp,
// whose contract it keeps, with the differences below.
//
// Contract
//   q:   [n_tokens, num_kv_heads * Group, HeadDim] fp32, already q_norm'ed and rotated
//   out: [n_tokens, num_kv_heads * Group, HeadDim] fp32, fully overwritten; must not overlap q
//   sequence_of_token[t], position[t], block_table_indptr / block_table_indices: as on the
//       CPU (token t attends to positions 0 .. position[t] of its own sequence; position p is at
//       slot p % block_size of block indices[indptr[s] + p / block_size]; tables may share
//       blocks). All four arrays are device pointers.
//   key, value: one layer's pools [num_blocks][block_size][num_kv_heads][HeadDim] of KV
//       (float, or qwen::bf16 as the GPU backend stores them). Only the positions a token attends
//       to are read; unwritten slots and later positions may hold anything, NaN included.
//   Query head h uses KV head h / Group.
//
//   out[t, h] = sum_p softmax_p(scale * q[t, h] . k[p]) * v[p],   p = 0 .. position[t]
//
// Differences from the CPU version
//   - The launcher reads nothing of the batch on the host and never synchronises, so a step is
//     capturable in a CUDA graph. Hence it cannot check sequence indices, positions or block ids:
//     the caller's step plan checks them on the host (as cpu::PagedAttention::plan does), and
//     must pass max_context >= position[t] + 1 for every t. A token whose position + 1
//     exceeds max_context gets NaN in out (made visible rather than silently truncated);
//     an out-of-range sequence index or block id is undefined behaviour (out-of-bounds reads).
//   - The work split is fixed per token (below) and needs a caller-provided device workspace of
//     paged_attention_workspace_bytes<HeadDim, Group>(n_tokens, num_kv_heads, max_context) bytes,
//     16-byte aligned. Its contents between calls do not matter.
//   - Host-visible violations (null pointers, n_tokens < 0, num_kv_heads, block_size,
//     num_blocks <= 0, max_context < 1 or > INT32_MAX, a pool of more than INT32_MAX slots,
//     misaligned pointers, a non-finite scale, a workspace too small) throw InvalidArgument
//     before anything is enqueued. n_tokens == 0 returns cudaSuccess with nothing enqueued.
//
// Design (split-K "flash decoding", two kernels)
//   1. paged_attention_split_kernel: one thread block of 128 threads per work item
//      (token, KV head, split), split s covering the token's positions
//      [s * positions_per_split, (s + 1) * positions_per_split) clipped to position[t] + 1.
//      The grid has num_splits = ceil(max_context / positions_per_split) splits per (token, KV
//      head); a block whose split starts past its token's length returns at once and writes
//      nothing (the merge never reads it). A live block
//        - translates its positions to physical pool rows once (block table lookup, one integer
//          division each) into shared memory, so the K/V loads do not wait on table loads;
//        - divides its threads into row groups of lanes_per_row = HeadDim * sizeof(KV) / 16
//          lanes (16 for bf16 x 128, 32 for fp32 x 128, 8 for bf16 x 64): a row group reads one
//          K row and one V row with one 16-byte load per lane, so a warp's loads are whole
//          contiguous 128-byte lines (coalesced);
//        - every lane keeps the Group query heads' slices of q (pre-multiplied by
//          scale * log2(e)) in registers, so each K/V row is read from memory once for all Group
//          heads; a step reads rows_per_step rows per row group (all loads issued before any
//          use, for memory-level parallelism), computes the Group x rows_per_step partial dots,
//          reduces them across the row group with xor shuffles, and updates a per-row-group
//          online softmax state (running max, running sum, unnormalised accumulator of
//          Group x elements-per-lane floats) in fp32, with exp2f on log2-scaled scores;
//        - merges its row groups: inside a warp with xor shuffles, then across the 4 warps
//          through shared memory in warp order, and writes the split's partial state
//          (max, sum, acc[Group][HeadDim]) to the workspace.
//   2. paged_attention_merge_kernel: one warp per (token, query head) merges the token's own
//      ceil((position + 1) / positions_per_split) partial states in split order (two passes:
//      the max, then the rescaled sums) and writes out = acc / sum.
//   Every barrier and shuffle is reached by whole blocks / warps: loop bounds depend only on the
//   block's item, and rows past the split's end are masked, not skipped.
//
// Batch invariance, bit for bit: the partial state of (token, KV head, split) is computed by
// the same instructions in the same order whatever the grid: positions go to row groups by
// their offset inside the split, and every reduction order is fixed. The merge reads only the
// token's own splits (their number comes from the token's own position, not from max_context),
// in order. So out[t] depends only on q[t], position[t], its sequence's block table and the
// pools: not on the other tokens, their order, or max_context (which only sets the workspace
// layout, and which a token's position must stay below). Results do differ from the CPU version in the last bits (another summation order).
//
// Bandwidth: decode (many single tokens, long contexts) reads each K/V row once per KV head with
// 16-byte loads, 2 * rows_per_step loads in flight per lane, so it should run near DRAM
// bandwidth once the grid covers the GPU (n_tokens * num_kv_heads * splits blocks, e.g. 32
// tokens x 8 heads x 16 splits at 4K context); a single short sequence under-fills the GPU, as
// any split-K scheme with a fixed split does. Extra traffic: the partial states,
// Group * (HeadDim + 2) floats per 256 positions written and read once (about 3% for
// bf16, HeadDim 128, Group 8). Per K/V byte the kernel does 2 * Group / sizeof(KV) FMAs and
// Group * log2(lanes_per_row) / (HeadDim * sizeof(KV)) shuffles; with Group 8 and bf16 the
// issue rate comes close to the memory time (still below it on A100/H100). The workspace grows
// as n_tokens * max_context: long prefills belong to the (later) tensor-core prefill kernel.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include <qwen/kernels/cuda/common.cuh>

namespace qwen::kernels::cuda {

// Positions per split: fixed, so a token's work split depends only on its own position.
inline constexpr int paged_attention_positions_per_split = 256;

// One call's arguments. Every pointer is a device pointer (shapes in the contract at the top).
template <StorageFloat KV>
struct PagedAttentionArgs {
  const float* q = nullptr;                           // [n_tokens, num_kv_heads * Group, HeadDim]
  const std::int32_t* sequence_of_token = nullptr;    // [n_tokens]
  const std::int32_t* position = nullptr;             // [n_tokens]
  const std::int32_t* block_table_indptr = nullptr;   // [num_sequences + 1]
  const std::int32_t* block_table_indices = nullptr;  // [indptr[num_sequences]]
  const KV* key = nullptr;                            // [num_blocks][block_size][num_kv_heads][HeadDim]
  const KV* value = nullptr;                          // [num_blocks][block_size][num_kv_heads][HeadDim]
  float* out = nullptr;                               // [n_tokens, num_kv_heads * Group, HeadDim]
  std::int64_t n_tokens = 0;
  int num_kv_heads = 0;
  int block_size = 0;
  int num_blocks = 0;
  std::int64_t max_context = 0;  // host-known bound: position[t] + 1 <= max_context for every t
  float scale = 0;               // 1 / sqrt(HeadDim) for Qwen3
};

namespace attention_detail {

inline constexpr int split_threads = 128;
inline constexpr int merge_threads = 128;
inline constexpr float log2e = 1.4426950408889634f;

// Number of splits of the grid for a step whose longest context is max_context.
constexpr std::int64_t num_splits(std::int64_t max_context) {
  return (max_context + paged_attention_positions_per_split - 1) / paged_attention_positions_per_split;
}

// The split kernel's shape, derived from HeadDim, Group and the KV element type.
template <int HeadDim, int Group, StorageFloat KV>
struct SplitShape {
  static constexpr int elems_per_lane = 16 / static_cast<int>(sizeof(KV));  // one 16-byte load
  static constexpr int lanes_per_row = HeadDim / elems_per_lane;
  static constexpr int row_groups = split_threads / lanes_per_row;
  static constexpr int warps = split_threads / warp_size;
  // Rows per row group per step: more loads in flight, bounded by registers (Group x rows scores).
  static constexpr int rows_per_step = Group >= 8 ? 2 : 4;
  static constexpr int positions_per_step = row_groups * rows_per_step;

  static_assert(Group >= 1, "paged_attention: Group must be positive");
  static_assert(HeadDim % elems_per_lane == 0, "paged_attention: a head row is whole 16-byte loads");
  static_assert(lanes_per_row >= 1 && lanes_per_row <= warp_size && (lanes_per_row & (lanes_per_row - 1)) == 0,
                "paged_attention: a row must take a power of two of lanes, at most a warp");
  static_assert(elems_per_lane % 4 == 0, "paged_attention: q is loaded as float4");
  static_assert(HeadDim % warp_size == 0, "paged_attention: the merge gives each lane HeadDim / 32 elements");
  static_assert(positions_per_step <= paged_attention_positions_per_split, "paged_attention: a step fits in a split");
};

// Unpacks one 16-byte load of KV elements into floats (element 0 is the lowest address).
template <StorageFloat KV>
__device__ __forceinline__ void unpack(const uint4& raw, float* f) {
  const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
  if constexpr (std::is_same_v<KV, float>) {
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = __uint_as_float(words[i]);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = widen(bf16{static_cast<std::uint16_t>(words[i] & 0xffffu)});
      f[2 * i + 1] = widen(bf16{static_cast<std::uint16_t>(words[i] >> 16)});
    }
  }
}

// Item = (token, KV head, split), split fastest. Writes the split's partial state:
//   partial_acc [n_tokens][num_kv_heads][num_splits][Group][HeadDim]  sum of 2^(s - max) * v
//   partial_max [n_tokens][num_kv_heads][num_splits][Group]           max of the log2-scaled scores
//   partial_sum [n_tokens][num_kv_heads][num_splits][Group]           sum of 2^(s - max)
// score_scale = scale * log2(e).
template <int HeadDim, int Group, StorageFloat KV>
__global__ void __launch_bounds__(split_threads)
    paged_attention_split_kernel(const float* __restrict__ q, const std::int32_t* __restrict__ sequence_of_token,
                                 const std::int32_t* __restrict__ position, const std::int32_t* __restrict__ indptr,
                                 const std::int32_t* __restrict__ indices, const KV* __restrict__ key,
                                 const KV* __restrict__ value, int block_size, int num_kv_heads, float score_scale,
                                 std::int64_t n_tokens, int num_splits, float* __restrict__ partial_acc,
                                 float* __restrict__ partial_max, float* __restrict__ partial_sum) {
  using Shape = SplitShape<HeadDim, Group, KV>;
  constexpr int E = Shape::elems_per_lane;
  constexpr int L = Shape::lanes_per_row;
  constexpr int Rows = Shape::rows_per_step;
  constexpr int P = paged_attention_positions_per_split;
  constexpr float neg_inf = -INFINITY;

  __shared__ std::int32_t pool_row[P];  // physical row (block * block_size + slot) of each position
  __shared__ float warp_max[Shape::warps][Group];
  __shared__ float warp_sum[Shape::warps][Group];
  __shared__ __align__(16) float warp_acc[Shape::warps][Group][HeadDim];

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % warp_size, warp = tid / warp_size;
  const int row_group = tid / L, lane_in_row = tid % L;
  const std::int64_t row_stride = static_cast<std::int64_t>(num_kv_heads) * HeadDim;  // elements per pool row
  const std::int64_t items = n_tokens * num_kv_heads * num_splits;

  for (std::int64_t item = blockIdx.x; item < items; item += gridDim.x) {  // block-uniform
    const int split = static_cast<int>(item % num_splits);
    const std::int64_t token_head = item / num_splits;
    const int kv_head = static_cast<int>(token_head % num_kv_heads);
    const std::int64_t token = token_head / num_kv_heads;
    const std::int64_t length = static_cast<std::int64_t>(position[token]) + 1;
    const int begin = split * P;
    if (begin >= length) continue;  // past the token's context: never merged
    const int n = static_cast<int>(length - begin < P ? length - begin : P);

    // Physical rows of the split's positions. begin + i <= position < INT32_MAX.
    const std::int32_t* table = indices + indptr[sequence_of_token[token]];
    for (int i = tid; i < n; i += split_threads) {
      const int p = begin + i;
      pool_row[i] = table[p / block_size] * block_size + p % block_size;
    }

    // This lane's slice of the Group query heads, in log2 units.
    float q_reg[Group][E];
    const float* q_group = q + (token * num_kv_heads + kv_head) * (static_cast<std::int64_t>(Group) * HeadDim);
#pragma unroll
    for (int g = 0; g < Group; ++g)
#pragma unroll
      for (int c = 0; c < E; c += 4) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(q_group + g * HeadDim + lane_in_row * E + c));
        q_reg[g][c] = v.x * score_scale;
        q_reg[g][c + 1] = v.y * score_scale;
        q_reg[g][c + 2] = v.z * score_scale;
        q_reg[g][c + 3] = v.w * score_scale;
      }

    float running_max[Group], running_sum[Group], acc[Group][E];
#pragma unroll
    for (int g = 0; g < Group; ++g) {
      running_max[g] = neg_inf;
      running_sum[g] = 0.0f;
#pragma unroll
      for (int e = 0; e < E; ++e) acc[g][e] = 0.0f;
    }

    __syncthreads();  // pool_row is written

    const KV* key_lane = key + kv_head * HeadDim + lane_in_row * E;
    const KV* value_lane = value + kv_head * HeadDim + lane_in_row * E;
    for (int first = 0; first < n; first += Shape::positions_per_step) {  // block-uniform bound
      const int local0 = first + row_group * Rows;  // this row group's first position in the split
      uint4 k_raw[Rows], v_raw[Rows];
#pragma unroll
      for (int j = 0; j < Rows; ++j) {
        if (local0 + j < n) {  // positions past the token are never read
          const std::int64_t offset = static_cast<std::int64_t>(pool_row[local0 + j]) * row_stride;
          k_raw[j] = __ldg(reinterpret_cast<const uint4*>(key_lane + offset));
          v_raw[j] = __ldg(reinterpret_cast<const uint4*>(value_lane + offset));
        } else {
          k_raw[j] = make_uint4(0, 0, 0, 0);
          v_raw[j] = make_uint4(0, 0, 0, 0);
        }
      }

      // score[g][j]: this lane's partial dot, then the row group's sum (identical in its lanes:
      // each xor step adds the same two values in either order).
      float score[Group][Rows];
#pragma unroll
      for (int j = 0; j < Rows; ++j) {
        float k[E];
        unpack<KV>(k_raw[j], k);
#pragma unroll
        for (int g = 0; g < Group; ++g) {
          float dot = 0.0f;
#pragma unroll
          for (int e = 0; e < E; ++e) dot = fmaf(q_reg[g][e], k[e], dot);
          score[g][j] = dot;
        }
      }
#pragma unroll
      for (int offset = L / 2; offset > 0; offset /= 2)
#pragma unroll
        for (int g = 0; g < Group; ++g)
#pragma unroll
          for (int j = 0; j < Rows; ++j) score[g][j] += __shfl_xor_sync(0xffffffffu, score[g][j], offset);
#pragma unroll
      for (int j = 0; j < Rows; ++j)
        if (local0 + j >= n)
#pragma unroll
          for (int g = 0; g < Group; ++g) score[g][j] = neg_inf;

      // Online softmax step. ref is the new max, or 0 while the row group has seen nothing
      // (then alpha = 2^-inf = 0 on a zero state and every probability is 2^-inf = 0).
#pragma unroll
      for (int g = 0; g < Group; ++g) {
        float tile_max = score[g][0];
#pragma unroll
        for (int j = 1; j < Rows; ++j) tile_max = fmaxf(tile_max, score[g][j]);
        const float new_max = fmaxf(running_max[g], tile_max);
        const float ref = new_max == neg_inf ? 0.0f : new_max;
        const float alpha = exp2f(running_max[g] - ref);
        running_max[g] = new_max;
        float tile_sum = 0.0f;
#pragma unroll
        for (int j = 0; j < Rows; ++j) {
          score[g][j] = exp2f(score[g][j] - ref);
          tile_sum += score[g][j];
        }
        running_sum[g] = fmaf(running_sum[g], alpha, tile_sum);
#pragma unroll
        for (int e = 0; e < E; ++e) acc[g][e] *= alpha;
      }
#pragma unroll
      for (int j = 0; j < Rows; ++j) {
        float v[E];
        unpack<KV>(v_raw[j], v);
#pragma unroll
        for (int g = 0; g < Group; ++g)
#pragma unroll
          for (int e = 0; e < E; ++e) acc[g][e] = fmaf(score[g][j], v[e], acc[g][e]);
      }
    }

    // Merge the warp's row groups (xor partners hold the same lane_in_row). Products and the sum
    // are rounded separately, so both partners get the same bits.
#pragma unroll
    for (int offset = L; offset < warp_size; offset *= 2)
#pragma unroll
      for (int g = 0; g < Group; ++g) {
        const float other_max = __shfl_xor_sync(0xffffffffu, running_max[g], offset);
        const float other_sum = __shfl_xor_sync(0xffffffffu, running_sum[g], offset);
        const float new_max = fmaxf(running_max[g], other_max);
        const float ref = new_max == neg_inf ? 0.0f : new_max;
        const float self_factor = exp2f(running_max[g] - ref), other_factor = exp2f(other_max - ref);
        running_sum[g] = __fadd_rn(__fmul_rn(running_sum[g], self_factor), __fmul_rn(other_sum, other_factor));
#pragma unroll
        for (int e = 0; e < E; ++e) {
          const float other = __shfl_xor_sync(0xffffffffu, acc[g][e], offset);
          acc[g][e] = __fadd_rn(__fmul_rn(acc[g][e], self_factor), __fmul_rn(other, other_factor));
        }
        running_max[g] = new_max;
      }
    if (lane < L) {
#pragma unroll
      for (int g = 0; g < Group; ++g) {
#pragma unroll
        for (int c = 0; c < E; c += 4)
          *reinterpret_cast<float4*>(&warp_acc[warp][g][lane_in_row * E + c]) =
              make_float4(acc[g][c], acc[g][c + 1], acc[g][c + 2], acc[g][c + 3]);
        if (lane == 0) {
          warp_max[warp][g] = running_max[g];
          warp_sum[warp][g] = running_sum[g];
        }
      }
    }
    __syncthreads();  // warp states are written

    // Merge the warps in warp order. Warp 0 read position `begin` (n >= 1), so the max is finite;
    // an empty warp has max -inf, factor 0 and a zero state.
    float* acc_out = partial_acc + item * (static_cast<std::int64_t>(Group) * HeadDim);
    for (int idx = tid; idx < Group * HeadDim; idx += split_threads) {
      const int g = idx / HeadDim, d = idx % HeadDim;
      float block_max = warp_max[0][g];
#pragma unroll
      for (int w = 1; w < Shape::warps; ++w) block_max = fmaxf(block_max, warp_max[w][g]);
      float a = 0.0f, sum = 0.0f;
      const float ref = block_max == -INFINITY ? 0.0f : block_max;  // all -inf only for infinite q or K
#pragma unroll
      for (int w = 0; w < Shape::warps; ++w) {
        const float factor = exp2f(warp_max[w][g] - ref);
        a = fmaf(warp_acc[w][g][d], factor, a);
        sum = fmaf(warp_sum[w][g], factor, sum);
      }
      acc_out[idx] = a;
      if (d == 0) {
        partial_max[item * Group + g] = block_max;
        partial_sum[item * Group + g] = sum;
      }
    }
    // No barrier needed before the next item: its writes of pool_row come after this item's
    // last read of it (before the barrier above), its writes of the warp states after the next
    // item's first barrier, which every thread reaches only after finishing this merge.
  }
}

// One warp per (token, query head): merges the token's own splits in order, out = acc / sum.
template <int HeadDim, int Group>
__global__ void __launch_bounds__(merge_threads)
    paged_attention_merge_kernel(const std::int32_t* __restrict__ position, const float* __restrict__ partial_acc,
                                 const float* __restrict__ partial_max, const float* __restrict__ partial_sum,
                                 int num_kv_heads, std::int64_t n_tokens, int num_splits, std::int64_t max_context,
                                 float* __restrict__ out) {
  constexpr int per_lane = HeadDim / warp_size;
  constexpr int warps = merge_threads / warp_size;
  constexpr int P = paged_attention_positions_per_split;
  const int lane = static_cast<int>(threadIdx.x) % warp_size, warp = static_cast<int>(threadIdx.x) / warp_size;
  const std::int64_t num_heads = static_cast<std::int64_t>(num_kv_heads) * Group;
  const std::int64_t items = n_tokens * num_heads;
  for (std::int64_t item = static_cast<std::int64_t>(blockIdx.x) * warps + warp; item < items;
       item += static_cast<std::int64_t>(gridDim.x) * warps) {  // warp-uniform
    const std::int64_t token = item / num_heads;
    const int head = static_cast<int>(item % num_heads);
    const int kv_head = head / Group, g = head % Group;
    const std::int64_t length = static_cast<std::int64_t>(position[token]) + 1;
    const std::int64_t used = length <= 0 ? 0 : (length + P - 1) / P;
    float* dst = out + item * HeadDim;
    if (length <= 0 || length > max_context) {  // position outside [0, max_context): contract violated
#pragma unroll
      for (int k = 0; k < per_lane; ++k) dst[lane + k * warp_size] = __int_as_float(0x7fffffff);
      continue;
    }
    const std::int64_t first_state = (token * num_kv_heads + kv_head) * num_splits;
    float max_all = -INFINITY;
    for (std::int64_t s = 0; s < used; ++s) max_all = fmaxf(max_all, partial_max[(first_state + s) * Group + g]);
    if (max_all == -INFINITY) max_all = 0.0f;  // every score -inf: only for infinite q or K
    float sum = 0.0f, acc[per_lane];
#pragma unroll
    for (int k = 0; k < per_lane; ++k) acc[k] = 0.0f;
    for (std::int64_t s = 0; s < used; ++s) {
      const std::int64_t state = (first_state + s) * Group + g;
      const float factor = exp2f(partial_max[state] - max_all);
      sum = fmaf(partial_sum[state], factor, sum);
      const float* src = partial_acc + state * HeadDim;
#pragma unroll
      for (int k = 0; k < per_lane; ++k) acc[k] = fmaf(src[lane + k * warp_size], factor, acc[k]);
    }
#pragma unroll
    for (int k = 0; k < per_lane; ++k) dst[lane + k * warp_size] = acc[k] / sum;
  }
}

inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

}  // namespace attention_detail

// Bytes of device workspace paged_attention needs for a step: the partial states of
// n_tokens * num_kv_heads * ceil(max_context / positions_per_split) splits, each
// Group * (HeadDim + 2) floats. Throws InvalidArgument for n_tokens < 0, num_kv_heads <= 0,
// max_context outside [1, INT32_MAX] or a size that overflows.
template <int HeadDim, int Group>
[[nodiscard]] std::int64_t paged_attention_workspace_bytes(std::int64_t n_tokens, int num_kv_heads, std::int64_t max_context) {
  constexpr const char* op = "cuda::paged_attention_workspace_bytes";
  check_extent(op, "n_tokens", n_tokens);
  if (num_kv_heads <= 0) throw_error<InvalidArgument>(op, ": num_kv_heads is ", num_kv_heads, ", must be positive");
  if (max_context < 1 || max_context > std::numeric_limits<std::int32_t>::max())
    throw_error<InvalidArgument>(op, ": max_context is ", max_context, ", must be in [1, ",
                                 std::numeric_limits<std::int32_t>::max(), "]");
  const std::int64_t per_item = static_cast<std::int64_t>(Group) * (HeadDim + 2) * static_cast<std::int64_t>(sizeof(float));
  const std::int64_t per_token = num_kv_heads * attention_detail::num_splits(max_context) * per_item;
  if (n_tokens > std::numeric_limits<std::int64_t>::max() / per_token)
    throw_error<InvalidArgument>(op, ": ", n_tokens, " tokens of ", per_token, " bytes each overflow");
  return n_tokens * per_token;
}

// Enqueues args.out = attention(args.q, paged K/V) for the batch on stream (contract at the
// top). workspace: device memory of at least paged_attention_workspace_bytes<HeadDim, Group>(
// n_tokens, num_kv_heads, max_context) bytes, 16-byte aligned, not used by a concurrent launch.
// Throws InvalidArgument for a host-visible contract violation; returns the launch status
// otherwise.
template <int HeadDim, int Group, StorageFloat KV>
[[nodiscard]] cudaError_t paged_attention(const PagedAttentionArgs<KV>& args, void* workspace, std::int64_t workspace_bytes,
                                          cudaStream_t stream) {
  using namespace attention_detail;
  constexpr const char* op = "cuda::paged_attention";
  check_extent(op, "n_tokens", args.n_tokens);
  if (args.num_kv_heads <= 0 || args.block_size <= 0 || args.num_blocks <= 0)
    throw_error<InvalidArgument>(op, ": num_kv_heads ", args.num_kv_heads, ", block_size ", args.block_size, ", num_blocks ",
                                 args.num_blocks, " must all be positive");
  if (static_cast<std::int64_t>(args.num_blocks) * args.block_size > std::numeric_limits<std::int32_t>::max())
    throw_error<InvalidArgument>(op, ": the pool has ", args.num_blocks, " blocks of ", args.block_size,
                                 " slots, more than INT32_MAX slots");
  if (args.max_context < 1 || args.max_context > std::numeric_limits<std::int32_t>::max())
    throw_error<InvalidArgument>(op, ": max_context is ", args.max_context, ", must be in [1, ",
                                 std::numeric_limits<std::int32_t>::max(), "]");
  if (!std::isfinite(args.scale)) throw_error<InvalidArgument>(op, ": scale ", args.scale, " is not finite");
  if (args.key == nullptr || args.value == nullptr) throw_error<InvalidArgument>(op, ": null K or V pool");
  if (!aligned16(args.key) || !aligned16(args.value))
    throw_error<InvalidArgument>(op, ": the K and V pools must be 16-byte aligned");
  if (args.n_tokens == 0) return cudaSuccess;

  if (args.q == nullptr || args.out == nullptr || workspace == nullptr)
    throw_error<InvalidArgument>(op, ": null q, out or workspace");
  if (args.sequence_of_token == nullptr || args.position == nullptr || args.block_table_indptr == nullptr ||
      args.block_table_indices == nullptr)
    throw_error<InvalidArgument>(op, ": null sequence_of_token, position, block_table_indptr or block_table_indices");
  if (!aligned16(args.q) || !aligned16(args.out) || !aligned16(workspace))
    throw_error<InvalidArgument>(op, ": q, out and workspace must be 16-byte aligned");
  const std::int64_t needed =
      paged_attention_workspace_bytes<HeadDim, Group>(args.n_tokens, args.num_kv_heads, args.max_context);
  if (workspace_bytes < needed)
    throw_error<InvalidArgument>(op, ": workspace of ", workspace_bytes, " bytes, ", needed, " needed for ", args.n_tokens,
                                 " tokens, ", args.num_kv_heads, " KV heads, max_context ", args.max_context);

  const auto splits = static_cast<int>(num_splits(args.max_context));
  const std::int64_t states = args.n_tokens * args.num_kv_heads * splits;
  auto* partial_acc = static_cast<float*>(workspace);
  float* partial_max = partial_acc + states * Group * HeadDim;
  float* partial_sum = partial_max + states * Group;

  const auto split_grid = static_cast<unsigned>(std::min(states, max_grid_x));
  paged_attention_split_kernel<HeadDim, Group, KV><<<split_grid, split_threads, 0, stream>>>(
      args.q, args.sequence_of_token, args.position, args.block_table_indptr, args.block_table_indices, args.key,
      args.value, args.block_size, args.num_kv_heads, args.scale * log2e, args.n_tokens, splits, partial_acc, partial_max,
      partial_sum);
  if (const cudaError_t status = cudaGetLastError(); status != cudaSuccess) return status;

  constexpr int merge_warps = merge_threads / warp_size;
  const std::int64_t heads = args.n_tokens * args.num_kv_heads * Group;
  const auto merge_grid = static_cast<unsigned>(std::min((heads + merge_warps - 1) / merge_warps, max_grid_x));
  paged_attention_merge_kernel<HeadDim, Group><<<merge_grid, merge_threads, 0, stream>>>(
      args.position, partial_acc, partial_max, partial_sum, args.num_kv_heads, args.n_tokens, splits, args.max_context, args.out);
  return cudaGetLastError();
}

}  // namespace qwen::kernels::cuda

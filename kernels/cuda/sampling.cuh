// Token sampling on the GPU: one token per row of a batch of logits, without sorting the
// vocabulary, so that a decode step need not copy logits to the host. The twin of the CPU
// sampler's last stage (qwen/sampling/row_sampler.hpp, whose header states the rules):
//
//   greedy (temperature < greedy_temperature_below): the first index of the maximum.
//   otherwise: e = exp((l - max) / T) in fp32; keep top_k (exactly k: ties at the k-th logit
//   go to lower ids), then top_p over the top_k-renormalised mass (token j kept iff the mass
//   ranked before it is < top_p * mass), then min_p (e >= min_p, e_max being 1); draw by
//   inverse CDF with u = uniform_draw(seed, step, 0) (Philox-4x32-10, computed here).
//
// logits [rows, vocab] fp32, params [rows], tokens [rows] int32: device memory.
//
// Out of scope: the rows must be processed already. Penalties, logit_bias and min_tokens
// masking, and the raw logprobs, are the caller's (qwen/sampling/logits_processors.hpp);
// parameters are validated on the host before upload (row_sampling_params calls
// qwen::sampling::validate). The kernel still keeps out-of-range values harmless (a NaN
// temperature is greedy, top_p outside (0, 1) is off, min_p is clamped to [0, 1]).
//
// Bad rows: where the CPU sampler throws for the row's logits (a NaN or +inf logit, or every
// logit -inf), the token is -1 (invalid_token), greedy or not. The engine checks for it.
//
// Ranking: by processed logit, higher first, equal logits (-0 == +0) by lower id, as the CPU.
// Each token gets a unique rank key R = order_key(l) << id_bits | (vocab - 1 - id), so rank
// order is R descending and "ranked at or before token j" is R >= R_j. Weights are e in fixed
// point, w = round(e * 2^40) (uint64: sums are exact and associative, hence deterministic;
// the sum of 2^23 weights is at most 2^63: it fits a uint64).
//
// Algorithm, one thread block per row (grid-strided), every step reading the row from global
// memory (L2) again instead of storing e:
//   1. max pass: the top token (block max of a key packing logit and id), and a NaN / +inf
//      flag. Greedy, top_k = 1 and bad rows end here.
//   2. top_k: radix select by count over R, 8 bits per pass from the top: a shared histogram of
//      the next digit among tokens matching the prefix chosen so far, a block scan over the 256
//      bins from the highest, the bin where the count ranked before reaches k. It stops as soon
//      as the bin is entirely kept (or holds one key). The cut c_k: kept iff R >= c_k.
//   3. top_p: the same radix select by weight over the tokens with R >= c_k and w > 0: the
//      first token in rank order whose inclusive mass reaches ceil(top_p * kept mass) is the
//      last one kept (the mass before it is < the target; every later one has mass before it
//      >= the target). Stops when the chosen bin holds one token. At most 7 passes each.
//   4. min_p is an element-wise test, e >= min_p.
//   5. total kept weight (block reduce), target = floor(u * total) exactly (53-bit u times a
//      64-bit integer), then a block-wide scan in token-id order, 2048 tokens a tile: the first
//      kept token whose inclusive weight exceeds the target.
// Everything is integer arithmetic on values computed by the same instructions in every pass,
// so a row's token is a pure function of its logits and parameters: batch invariant and the
// same run to run.
//
// What matches the CPU sampler exactly: the greedy token (and top_k = 1), the bad-row
// decision, the top_k set (on logits, no exp involved), the uniform u (bit for bit). What
// matches up to rounding: the kept set at the top_p boundary (CUDA's expf vs the CPU's Cephes
// exp, fp32 / double sums vs exact sums of 2^-40-quantised weights: a token whose mass before
// it is within about 1e-6 relative of top_p * mass may fall either side) and at the min_p
// threshold (e within an ulp or two of min_p). What matches in distribution only: the drawn
// token. The CPU scans kept tokens in rank order (small top_k) or in id order, with fp32 /
// double sums; here in id order with exact integer sums, so for one (seed, step) the two may
// pick different tokens, while each token's probability is its weight over the kept weight
// in both. Weights below 2^-41 (e < 4.5e-13) round to 0 and are never drawn: at most
// vocab * 2^-41 (7e-8 at Qwen3's vocabulary) of probability moves to the other tokens.
//
// Cost: 3 reads of the row (max, total, draw; the draw stops at the drawn token's tile) plus
// one per select level (at most 7 each for top_k and top_p; a host emulation on rows of
// 151,936 logits took 3 to 4 for distinct logits, 6 to 7 where the cut falls in a group of
// tied logits, as with bf16-rounded ones: the id digits run). The histograms use shared atomics, which contend where
// many logits share a digit (the first digits of unsorted logits); the top_p select skips
// tokens of zero weight. 512 threads a row, 92 registers on sm_90a: one row per SM at a time.
// Not measured yet.
#pragma once

#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cstdint>
#include <string>

#include <qwen/kernels/cuda/common.cuh>

#include "qwen/core/error.hpp"
#include "qwen/sampling/params.hpp"
#include "qwen/sampling/philox.hpp"

namespace qwen::kernels::cuda {

// One row's processed sampling parameters as the kernel reads them (trivially copyable, 48
// bytes; upload an array of them). Make them with row_sampling_params.
struct RowSamplingParams {
  double temperature = 1.0;  // < sampling::greedy_temperature_below: greedy
  double top_p = 1.0;        // in (0, 1]; 1: off
  double min_p = 0.0;        // in [0, 1]; 0: off
  std::uint64_t seed = 0;    // the request's resolved seed (Sampler::admit_seed)
  std::uint64_t step = 0;    // the draw counter: tokens generated so far
  std::int32_t top_k = 0;    // 0 or -1: off; >= vocab: off
};
static_assert(sizeof(RowSamplingParams) == 48);

// The kernel's parameters for a request: p validated for the vocabulary (throws
// InvalidArgument naming the parameter, as the CPU sampler does), seed and step as the CPU
// sampler uses them (RowRequest::seed, output_tokens.size()).
[[nodiscard]] inline RowSamplingParams row_sampling_params(const sampling::SamplingParams& p, std::int64_t vocab,
                                                           std::uint64_t seed, std::uint64_t step,
                                                           const std::string& where = "") {
  sampling::validate(p, vocab, where);
  return {p.temperature, p.top_p, p.min_p, seed, step, p.top_k};
}

// The token of a row whose logits the CPU sampler rejects (NaN, +inf, or all -inf).
inline constexpr std::int32_t invalid_token = -1;

inline constexpr int sampling_threads = 512;
// Vocabularies up to this: rank keys fit 55 bits (7 digits), weight sums at most 2^63.
inline constexpr std::int64_t sampling_max_vocab = std::int64_t{1} << 23;

namespace detail {

inline constexpr int sampling_digit_bits = 8;
inline constexpr int sampling_bins = 1 << sampling_digit_bits;
inline constexpr int sampling_weight_bits = 40;     // w = round(e * 2^40)
inline constexpr int sampling_scan_items = 4;       // draw: consecutive tokens per thread per tile
inline constexpr int sampling_max_id_bits = 23;     // bit_width(sampling_max_vocab - 1)
static_assert(sampling_max_vocab - 1 < (std::int64_t{1} << sampling_max_id_bits));
static_assert(sampling_weight_bits + sampling_max_id_bits <= 63, "a row's weight sum (at most 2^63) must fit a uint64");
static_assert(32 + sampling_max_id_bits + sampling_digit_bits <= 63, "rank keys: the top digit's shift + 8 must stay < 64");

// Monotone key of a non-NaN float: a < b iff key(a) < key(b); -0 and +0 share the key of +0
// (the CPU ranks them equal), -inf has the smallest key.
__device__ __forceinline__ std::uint32_t order_key(float x) {
  const std::uint32_t bits = x == 0.0f ? 0u : __float_as_uint(x);
  return (bits & 0x8000'0000u) != 0 ? ~bits : bits | 0x8000'0000u;
}
inline constexpr std::uint32_t order_key_of_negative_infinity = ~0xff80'0000u;

// Philox-4x32-10, the same function as qwen::sampling::philox4x32_10 (the host one is not
// callable here): the 53 random bits of sampling::uniform_draw(seed, step, round).
__device__ __forceinline__ std::uint64_t uniform_bits(std::uint64_t seed, std::uint64_t step, std::uint32_t round) {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;  // round multipliers
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;  // Weyl key increments
  std::uint32_t c0 = static_cast<std::uint32_t>(step), c1 = static_cast<std::uint32_t>(step >> 32),
                c2 = static_cast<std::uint32_t>(sampling::DrawPurpose::token), c3 = round;
  std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    const std::uint32_t hi0 = __umulhi(m0, c0), lo0 = m0 * c0, hi1 = __umulhi(m1, c2), lo1 = m1 * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += w0;
    k1 += w1;
  }
  return (std::uint64_t{c0} << 32 | c1) >> 11;
}

}  // namespace detail

// sampling::uniform_draw(seed, step, round) on the device, bit for bit.
__device__ __forceinline__ double uniform_draw(std::uint64_t seed, std::uint64_t step, std::uint32_t round = 0) {
  return static_cast<double>(detail::uniform_bits(seed, step, round)) * 0x1p-53;
}

namespace detail {

// What one row's block shares. Each broadcast slot is written by one thread before a barrier
// and read by all after it; the comments say what keeps the next write after the last read.
template <int Threads>
struct SamplingShared {
  using Scan = cub::BlockScan<std::uint64_t, Threads>;
  using Reduce = cub::BlockReduce<std::uint64_t, Threads>;
  union {
    typename Scan::TempStorage scan;
    typename Reduce::TempStorage reduce;
  } temp;
  std::uint64_t mass[sampling_bins];   // histogram of the select: weight per digit
  std::uint32_t count[sampling_bins];  // tokens per digit
  // The select's state after a level, in two slots by the level's parity: a level's fallback
  // write (before its first barrier) must not race the reads of the level before.
  struct Level {
    std::uint64_t prefix, above;
    int done;
  } level[2];
  std::uint64_t top;    // the packed top token of the row
  std::uint64_t total;  // the kept weight of the row
  std::int32_t token;   // the drawn token
};

struct MaxOp {
  __device__ __forceinline__ std::uint64_t operator()(std::uint64_t a, std::uint64_t b) const { return a > b ? a : b; }
};

// The constants of one row's non-greedy draw.
struct RowShape {
  const float* row;
  std::int64_t vocab;
  int id_bits;      // bit_width(vocab - 1)
  int top_shift;    // shift of the highest digit of a rank key
  float row_max;    // the row's maximum logit
  float inv_t;      // 1 / temperature in fp32 (as the CPU's exp_scaled multiplies)
  float min_p;      // in [0, 1]

  __device__ __forceinline__ std::uint64_t rank(float x, std::int64_t i) const {
    return std::uint64_t{order_key(x)} << id_bits | static_cast<std::uint64_t>(vocab - 1 - i);
  }
  // Explicitly rounded operations: no pass may contract them differently, so every pass sees
  // the same e for a token (the CPU's exp_scaled does the same subtraction and product).
  __device__ __forceinline__ float scaled_exp(float x) const { return expf(__fmul_rn(__fsub_rn(x, row_max), inv_t)); }
  // e * 2^40 is exact (e <= 1); rounding to the nearest integer is the only quantisation.
  __device__ __forceinline__ static std::uint64_t fixed_weight(float e) {
    return __float2ull_rn(e * static_cast<float>(std::uint64_t{1} << sampling_weight_bits));
  }
  // The weight of token i with logit x if kept (R >= cut and e >= min_p), else 0.
  __device__ __forceinline__ std::uint64_t kept_weight(float x, std::int64_t i, std::uint64_t cut) const {
    if (rank(x, i) < cut) return 0;
    const float e = scaled_exp(x);
    return e >= min_p ? fixed_weight(e) : 0;
  }
};

// ceil(top_p * total) in [1, total]: token j is kept iff the (integer) mass ranked before it is
// below top_p * total, i.e. below this.
__device__ __forceinline__ std::uint64_t top_p_target(double top_p, std::uint64_t total) {
  const std::uint64_t target = __double2ull_ru(top_p * static_cast<double>(total));
  return target < 1 ? 1 : (target > total ? total : target);
}

// Radix select over rank keys, run by the whole block; returns the cut (the same in every
// thread): tokens with R >= cut are kept.
//   ByMass false (top_k): the cut is the k-th ranked key, k = need (1 < k < vocab).
//   ByMass true (top_p): among tokens with R >= lower and w > 0, the key of the first in rank
//   order whose inclusive weight reaches top_p_target(top_p, their total weight).
// Invariant at each level: above (measure ranked before the prefix's range) < need <= above +
// the measure inside the range, so exactly one bin is chosen.
template <int Threads, bool ByMass>
__device__ std::uint64_t select_cut(const RowShape& shape, std::uint64_t need, double top_p, std::uint64_t lower,
                                    SamplingShared<Threads>& s) {
  const int tid = static_cast<int>(threadIdx.x);
  std::uint64_t prefix = 0, above = 0;
  __syncthreads();  // the last reads of s.level by a select before this one are done
  for (int shift = shape.top_shift, parity = 0; shift >= 0; shift -= sampling_digit_bits, parity ^= 1) {
    auto& state = s.level[parity];
    for (int b = tid; b < sampling_bins; b += Threads) {
      s.count[b] = 0;
      if constexpr (ByMass) s.mass[b] = 0;
    }
    // A fallback the chosen bin's thread overwrites (the invariant says one always is). The
    // slot was last read two levels ago; every thread has passed a barrier since.
    if (tid == 0) state = {prefix, above, shift == 0};
    __syncthreads();  // the histogram is zero before any thread adds to it

    const int high = shift + sampling_digit_bits;  // the bits above the digit: the prefix
    for (std::int64_t i = tid; i < shape.vocab; i += Threads) {
      const float x = shape.row[i];
      const std::uint64_t r = shape.rank(x, i);
      if ((r >> high) != (prefix >> high)) continue;
      const auto digit = static_cast<int>(r >> shift) & (sampling_bins - 1);
      if constexpr (ByMass) {
        if (r < lower) continue;
        const std::uint64_t w = RowShape::fixed_weight(shape.scaled_exp(x));
        if (w == 0) continue;  // a zero weight never reaches the target: it cannot be the cut
        atomicAdd(reinterpret_cast<unsigned long long*>(&s.mass[digit]), static_cast<unsigned long long>(w));
      }
      atomicAdd(&s.count[digit], 1u);
    }
    __syncthreads();  // the histogram is complete

    // Thread t holds bin 255 - t: the inclusive scan is the measure of the bins from the top.
    const int bin = sampling_bins - 1 - tid;
    std::uint64_t measure = 0;
    if (tid < sampling_bins) {
      if constexpr (ByMass)
        measure = s.mass[bin];
      else
        measure = s.count[bin];
    }
    std::uint64_t inclusive = 0, level_total = 0;
    typename SamplingShared<Threads>::Scan(s.temp.scan).InclusiveSum(measure, inclusive, level_total);
    if (ByMass && shift == shape.top_shift) need = top_p_target(top_p, level_total);  // every thread alike
    if (tid < sampling_bins) {
      const std::uint64_t through = above + inclusive, before = through - measure;
      if (before < need && through >= need) {
        // Done when the bin is kept whole (top_k), holds the one token that reaches the target
        // (top_p), or is the last digit (one key per bin).
        const bool last = shift == 0 || (ByMass ? s.count[bin] == 1 : through == need);
        state = {prefix | std::uint64_t(bin) << shift, before, last};
      }
    }
    __syncthreads();  // the choice is visible; the scan's storage and the histogram are free again
    prefix = state.prefix;
    above = state.above;
    if (state.done != 0) break;  // block-uniform
  }
  // The cut is the chosen bin's lowest key. For top_p that bin may reach below lower, whose
  // tokens were not candidates: never cut below lower.
  if constexpr (ByMass) return prefix > lower ? prefix : lower;
  return prefix;
}

}  // namespace detail

// logits [rows, vocab], params [rows], tokens [rows]; 1 <= vocab <= sampling_max_vocab.
// id_bits = bit_width(vocab - 1), top_shift = the highest digit's shift of a rank key.
// Launched with Threads = sampling_threads (a template so that the header defines it inline).
template <int Threads>
__global__ void __launch_bounds__(Threads)
    sample_tokens_kernel(const float* __restrict__ logits, const RowSamplingParams* __restrict__ params,
                         std::int32_t* __restrict__ tokens, std::int64_t rows, std::int64_t vocab, int id_bits, int top_shift) {
  using detail::sampling_scan_items;
  static_assert(detail::sampling_bins <= Threads && Threads % warp_size == 0 && Threads <= 1024);
  using Shared = detail::SamplingShared<Threads>;
  __shared__ Shared s;
  const int tid = static_cast<int>(threadIdx.x);
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    __syncthreads();  // the previous row's last reads of s are done
    const float* row = logits + r * vocab;
    const RowSamplingParams p = params[r];

    // 1. The top token: the largest order_key(l) << 32 | (2^32 - 1 - id) is the highest logit at
    //    its lowest id.
    std::uint64_t best = 0;
    bool bad = false;
    for (std::int64_t i = tid; i < vocab; i += Threads) {
      const float x = row[i];
      bad |= isnan(x) || x == INFINITY;
      const std::uint64_t packed = std::uint64_t{detail::order_key(x)} << 32 | (0xffff'ffffu - static_cast<std::uint32_t>(i));
      best = packed > best ? packed : best;
    }
    best = typename Shared::Reduce(s.temp.reduce).Reduce(best, detail::MaxOp{});
    if (tid == 0) s.top = best;  // valid in thread 0 only; the row's first barrier ordered the last read
    bad = __syncthreads_or(bad) != 0;
    const std::uint64_t top = s.top;
    const auto top_key = static_cast<std::uint32_t>(top >> 32);
    const auto top_token = static_cast<std::int32_t>(0xffff'ffffu - static_cast<std::uint32_t>(top));
    const bool greedy = !(p.temperature >= sampling::greedy_temperature_below);  // NaN: greedy
    if (bad || top_key == detail::order_key_of_negative_infinity || greedy || p.top_k == 1) {
      if (tid == 0) tokens[r] = bad || top_key == detail::order_key_of_negative_infinity ? invalid_token : top_token;
      continue;  // block-uniform: every thread read the same s.top and flag
    }

    const float row_max = __uint_as_float((top_key & 0x8000'0000u) != 0 ? top_key & 0x7fff'ffffu : ~top_key);
    const double inv_t = 1.0 / p.temperature;
    const detail::RowShape shape{row,
                                 vocab,
                                 id_bits,
                                 top_shift,
                                 row_max,
                                 static_cast<float>(inv_t > FLT_MIN ? inv_t : FLT_MIN),  // as the CPU's inverse_temperature
                                 p.min_p > 0 ? (p.min_p < 1 ? static_cast<float>(p.min_p) : 1.0f) : 0.0f};

    // 2-3. The cut of top_k, then of top_p inside it.
    std::uint64_t cut = 0;
    if (p.top_k > 1 && p.top_k < vocab) cut = detail::select_cut<Threads, false>(shape, static_cast<std::uint64_t>(p.top_k), 1.0, 0, s);
    if (p.top_p > 0 && p.top_p < 1) cut = detail::select_cut<Threads, true>(shape, 0, p.top_p, cut, s);

    // 5. Total kept weight (>= 2^40: the top token is always kept, with e = 1).
    std::uint64_t partial = 0;
    for (std::int64_t i = tid; i < vocab; i += Threads) partial += shape.kept_weight(row[i], i, cut);
    const std::uint64_t sum = typename Shared::Reduce(s.temp.reduce).Sum(partial);
    if (tid == 0) {
      s.total = sum;        // valid in thread 0 only
      s.token = top_token;  // a fallback the draw always overwrites
    }
    __syncthreads();  // total and the fallback are visible; the reduce's storage is free
    const std::uint64_t total = s.total;
    // floor(u * total) exactly, u = bits * 2^-53: below total.
    const std::uint64_t target = __umul64hi(detail::uniform_bits(p.seed, p.step, 0) << 11, total);

    // The first kept token in id order whose inclusive weight exceeds target. Thread t holds
    // tokens base + t * items + [0, items), so the exclusive scan of the threads' sums is the
    // weight of every lower id in the tile.
    constexpr std::int64_t tile = std::int64_t{Threads} * sampling_scan_items;
    std::uint64_t before_tile = 0;
    for (std::int64_t base = 0; base < vocab; base += tile) {
      const std::int64_t first = base + std::int64_t{tid} * sampling_scan_items;
      std::uint64_t w[sampling_scan_items];
      std::uint64_t mine = 0;
#pragma unroll
      for (int j = 0; j < sampling_scan_items; ++j) {
        w[j] = first + j < vocab ? shape.kept_weight(row[first + j], first + j, cut) : 0;
        mine += w[j];
      }
      std::uint64_t before = 0, tile_total = 0;
      typename Shared::Scan(s.temp.scan).ExclusiveSum(mine, before, tile_total);
      if (before_tile + tile_total > target) {  // block-uniform: the token is in this tile
        std::uint64_t cumulative = before_tile + before;
#pragma unroll
        for (int j = 0; j < sampling_scan_items; ++j) {
          if (w[j] > 0 && cumulative <= target && target < cumulative + w[j]) s.token = static_cast<std::int32_t>(first + j);
          cumulative += w[j];
        }
        break;
      }
      before_tile += tile_total;
      __syncthreads();  // the scan's storage is reused by the next tile
    }
    __syncthreads();  // the finder's write is visible
    if (tid == 0) tokens[r] = s.token;
  }
}

// Enqueues the sampling of rows rows on stream; tokens[r] is row r's token (invalid_token for
// a row the CPU sampler would reject). Throws InvalidArgument for rows < 0, vocab outside
// [1, sampling_max_vocab], or a null pointer when rows > 0; returns the launch status
// (cudaSuccess with nothing enqueued when rows == 0). No allocation, no synchronisation:
// capturable in a CUDA graph.
[[nodiscard]] inline cudaError_t sample_tokens(const float* logits, const RowSamplingParams* params, std::int32_t* tokens,
                                               std::int64_t rows, std::int64_t vocab, cudaStream_t stream) {
  constexpr const char* op = "cuda::sample_tokens";
  check_extent(op, "rows", rows);
  if (vocab <= 0 || vocab > sampling_max_vocab)
    throw_error<InvalidArgument>(op, ": vocab is ", vocab, ", must be in [1, ", sampling_max_vocab, "]");
  if (rows == 0) return cudaSuccess;
  if (logits == nullptr || params == nullptr || tokens == nullptr)
    throw_error<InvalidArgument>(op, ": null pointer (logits ", static_cast<const void*>(logits), ", params ",
                                 static_cast<const void*>(params), ", tokens ", static_cast<const void*>(tokens), ") for ",
                                 rows, " rows");
  const int id_bits = std::bit_width(static_cast<std::uint64_t>(vocab - 1));
  const int digits = (32 + id_bits + detail::sampling_digit_bits - 1) / detail::sampling_digit_bits;
  const int top_shift = (digits - 1) * detail::sampling_digit_bits;
  const auto grid = static_cast<unsigned>(std::min(rows, max_grid_x));
  sample_tokens_kernel<sampling_threads><<<grid, sampling_threads, 0, stream>>>(logits, params, tokens, rows, vocab, id_bits, top_shift);
  return cudaGetLastError();
}

}  // namespace qwen::kernels::cuda

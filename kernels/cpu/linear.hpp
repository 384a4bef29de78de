// A Linear layer without bias on the CPU:  y[n, out] = x[n, in] · W[out, in]ᵀ
//
// Contract
//   x:  fp32 [n, in], row-major, rows contiguous (row stride = in).
//   W:  [out, in] row-major, used in place (it may point into the checkpoint's mapping; it is
//       never copied or repacked), one of
//         float or bf16                            linear / linear_reference
//         fp8 e4m3 + scale_inv float or bf16       linear_fp8 / linear_fp8_reference
//           scale_inv: [ceil(out/128), ceil(in/128)] row-major,
//           W[r][c] = float(q[r][c]) * float(scale_inv[r/128][c/128])  (one fp32 rounding, as
//           kernels/cpu/fp8_dequant.hpp; exact for bf16 scales).
//   y:  fp32 [n, out], row-major, fully overwritten. y must not overlap x, W or scale_inv.
//   n >= 0 (0 writes nothing), in >= 1, out >= 1; pointers non-null. Violations throw
//   InvalidArgument naming the values. A thread's first call with more than widen_min_tokens
//   tokens allocates its 1 MiB scratch (std::bad_alloc if it cannot) unless
//   reserve_linear_scratch already did, for the threads of that pool.
//
// Numerics: the weights are converted to fp32 exactly (fp8: the one rounding above), products
// and sums are fp32. The result equals the exact sum of x·W up to the rounding of the
// summation order below: |y - exact| <= (ceil(in/width) + log2(width) + 1) · 2^-24 · Σ|x·W|.
// fp8 NaN codes (0x7f, 0xff), which no checkpoint holds, are not propagated (see linear_lanes.hpp).
//
// Summation order (the same for every n, every thread count and every tile shape, so y[i, j]
// depends only on row i of x and row j of W, bit for bit — the batch invariance the forward pass
// needs): one accumulator of `width` lanes (16 with AVX-512, 8 otherwise) per output element,
//   acc = 0;  for each k-vector v = 0, 1, ...:  acc = fma(x[i, v·width + l], W[j, v·width + l], acc)
// with the ragged last vector zero-padded, then y[i, j] = Lanes::sum(acc) (a fixed tree).
//
// Tiling: a micro-tile is R weight rows × T tokens of accumulators held in registers
// (AVX-512: 4 × up to 6; AVX2: 2 × up to 4); each weight vector is converted once per k-step and
// used for T tokens. A token group's x rows stay in L1 over a k-block (KB columns); when a row
// needs more than one k-block the accumulators are saved to a per-thread buffer between blocks
// and reloaded (exact, so the order above holds). A 128-row chunk of W stays in L2 across the
// token groups. A unit of many tokens (more than widen_min_tokens) first converts its rows to
// fp32 once into a per-thread buffer and its tiles read that: the same values, so the same bits.
//
// The ceiling of this form, measured on the 2-core AVX-512 machine: a 4 × 6 tile with x and W in
// L1 reaches about 0.68 of the register-only fp32-FMA probe (each k-step loads 10 full vectors
// for 24 FMAs, and the loads bind), against about 0.84 for an outer-product tile (2 weight
// vectors of 16 outputs and 12 broadcast x values per k). The outer product sums each output in
// one chain along k, a different order, so it would have to serve decode too (batch invariance)
// and wants W repacked into 16-output panels: not done; see docs/forward-pass.md.
//
// Threading: the work is cut into units of one 128-row chunk of `out` (aligned with the fp8
// scale blocks and, for 64-byte aligned y rows, with cache lines) × a range of tokens (one range
// unless there are fewer chunks than threads to keep busy), and the ThreadPool hands each thread
// a contiguous run of units. Decode (small n) therefore streams each thread's part of W once.
//
// linear_reference / linear_fp8_reference: the plain definition, one element at a time,
// accumulated in double, single-threaded. They are the oracle for the tests.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <memory>
#include <new>
#include <string_view>
#include <utility>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/core/numeric.hpp"
#include <qwen/kernels/cpu/fp8_dequant.hpp>
#include <qwen/kernels/cpu/linear_lanes.hpp>
#include <qwen/kernels/cpu/thread_pool.hpp>
#include <qwen/kernels/cpu/unroll.hpp>

namespace qwen::kernels::cpu {

// Element types of an unquantised weight.
template <class T>
concept LinearPlainWeight = std::same_as<T, float> || std::same_as<T, bf16>;

// Which vector path linear was compiled with: "avx512", "avx2" or "portable".
inline constexpr std::string_view linear_isa = linear_detail::Lanes::isa;

namespace linear_detail {

inline constexpr std::int64_t block = fp8_default_block;  // fp8 scale block (rows and columns)
inline constexpr std::int64_t chunk_rows = block;         // rows of W per work unit

#if defined(QWEN_LINEAR_AVX512)
inline constexpr int tile_rows = 4, max_tile_tokens = 6;  // 24 accumulators + 4 weights + 1 x of 32 registers
#elif defined(QWEN_LINEAR_AVX2)
inline constexpr int tile_rows = 2, max_tile_tokens = 4;  // 8 accumulators + 2 weights + 1 x of 16 registers
#else
inline constexpr int tile_rows = 1, max_tile_tokens = 4;
#endif
// Weight rows are prefetched into L2 (once per 64-byte line) this far ahead of the tile reading
// them: two tiles. Measured on the 2-core AVX-512 machine with bench/bench_linear.cpp, bf16
// decode (n = 1) streams W at about 0.6 of the read bandwidth with the hardware prefetchers alone
// (every tile starts R new streams), 0.8 with a prefetch into L1 and about 0.9 with this.
inline constexpr int prefetch_rows_ahead = 2 * tile_rows;
// Bytes of x a token group may keep in L1 during one k-block.
inline constexpr std::int64_t x_tile_bytes = 24 * 1024;

static_assert(chunk_rows % tile_rows == 0, "a micro-tile never straddles a 128-row chunk (one fp8 scale row)");
static_assert(block % Lanes::width == 0, "a k-vector never straddles an fp8 scale block");
static_assert(max_tile_tokens * tile_rows + tile_rows + 1 <= (Lanes::width == 16 ? 32 : 16), "the tile fits the register file");

using V = Lanes::V;

// ---- weight rows of one micro-tile: load(r, k) is W[r0 + r, k .. k + width) as fp32 ----------
// A hint to fetch the line at base + bytes into L2. The address may lie past the end of W (the
// last tiles look ahead into nothing): it is formed as an integer, and a prefetch never faults.
inline void prefetch_l2(const void* base, std::int64_t bytes) noexcept {
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(base) + static_cast<std::uintptr_t>(bytes)), 0, 2);
}

// prefetch(r, k) asks for the cache line holding W[r0 + r, k] in L2; line_elements weights share
// a 64-byte line.
template <LinearPlainWeight W>
struct PlainRows {
  static constexpr std::int64_t line_elements = 64 / sizeof(W);
  const W* rows;  // W[r0, 0]
  std::int64_t in;
  void prefetch(int r, std::int64_t k) const noexcept { prefetch_l2(rows, (r * in + k) * static_cast<std::int64_t>(sizeof(*rows))); }
  V load(int r, std::int64_t k) const noexcept { return Lanes::load(rows + r * in + k); }
  V load(int r, std::int64_t k, int count) const noexcept { return Lanes::load(rows + r * in + k, count); }
};

// fp8 rows with the block scales of their 128-row chunk. scale[c] = scale_inv[chunk][c] * 2^8,
// which undoes load_fp8_scaled's offset in the same multiplication: code·2^-8 · (s·2^8) is the
// exact real q·s, so the one rounding gives float(q) * s bit for bit.
struct Fp8Rows {
  static constexpr std::int64_t line_elements = 64;
  const std::uint8_t* rows;
  std::int64_t in;
  const float* scale;
  void prefetch(int r, std::int64_t k) const noexcept { prefetch_l2(rows, (r * in + k) * static_cast<std::int64_t>(sizeof(*rows))); }
  V load(int r, std::int64_t k) const noexcept {
    return Lanes::mul(Lanes::load_fp8_scaled(rows + r * in + k), Lanes::broadcast(scale[k / block]));
  }
  V load(int r, std::int64_t k, int count) const noexcept {
    return Lanes::mul(Lanes::load_fp8_scaled(rows + r * in + k, count), Lanes::broadcast(scale[k / block]));
  }
};
// The same for a chunk where some s·2^8 overflows (|s| >= 2^120) or s is not finite: scale holds s
// itself and the offset is undone first (exact), then s is applied (the one rounding).
struct Fp8RowsWide {
  static constexpr std::int64_t line_elements = 64;
  const std::uint8_t* rows;
  std::int64_t in;
  const float* scale;
  void prefetch(int r, std::int64_t k) const noexcept { prefetch_l2(rows, (r * in + k) * static_cast<std::int64_t>(sizeof(*rows))); }
  V load(int r, std::int64_t k) const noexcept { return apply(Lanes::load_fp8_scaled(rows + r * in + k), k); }
  V load(int r, std::int64_t k, int count) const noexcept { return apply(Lanes::load_fp8_scaled(rows + r * in + k, count), k); }
  V apply(V codes, std::int64_t k) const noexcept {
    return Lanes::mul(Lanes::mul(codes, Lanes::broadcast(fp8_exponent_offset)), Lanes::broadcast(scale[k / block]));
  }
};

// ---- the micro-tile ---------------------------------------------------------------------------
// R weight rows × T tokens over columns [k_begin, k_end) of a row of length `in`.
//   x: token 0's row (tokens are `in` apart); y: y[token 0, row 0] (tokens are `out` apart).
//   saved: R·T·width floats holding the accumulators between k-blocks (unused when the k-block
//   is the whole row). first: start from zero; last: reduce into y.
template <int R, int T, class Rows>
void tile(const float* x, std::int64_t in, const Rows& w, std::int64_t k_begin, std::int64_t k_end, float* saved, bool first,
          bool last, float* y, std::int64_t out) noexcept {
  // Every loop over t and r is unrolled so that acc lives in registers.
  V acc[T][R];
QWEN_UNROLL(8)
  for (int t = 0; t < T; ++t)
QWEN_UNROLL(8)
    for (int r = 0; r < R; ++r) acc[t][r] = first ? Lanes::zero() : Lanes::load(saved + (t * R + r) * Lanes::width);
  const auto step = [&](std::int64_t k, auto load_w, auto load_x) {
    V wv[R];
QWEN_UNROLL(8)
    for (int r = 0; r < R; ++r) wv[r] = load_w(r, k);
QWEN_UNROLL(8)
    for (int t = 0; t < T; ++t) {
      const V xv = load_x(x + t * in + k);
QWEN_UNROLL(8)
      for (int r = 0; r < R; ++r) acc[t][r] = Lanes::fma(xv, wv[r], acc[t][r]);
    }
  };
  std::int64_t k = k_begin;
  for (; k + Lanes::width <= k_end; k += Lanes::width) {
    if (k % Rows::line_elements == 0)
QWEN_UNROLL(8)
      for (int r = 0; r < R; ++r) w.prefetch(r + prefetch_rows_ahead, k);
    step(k, [&](int r, std::int64_t kk) { return w.load(r, kk); }, [](const float* p) { return Lanes::load(p); });
  }
  if (k < k_end) {  // only the end of the row is ragged: k-blocks are multiples of the width
    const int count = static_cast<int>(k_end - k);
    step(k, [&](int r, std::int64_t kk) { return w.load(r, kk, count); }, [&](const float* p) { return Lanes::load(p, count); });
  }
QWEN_UNROLL(8)
  for (int t = 0; t < T; ++t)
QWEN_UNROLL(8)
    for (int r = 0; r < R; ++r) {
      if (last)
        y[t * out + r] = Lanes::sum(acc[t][r]);
      else
        Lanes::store(saved + (t * R + r) * Lanes::width, acc[t][r]);
    }
}

// Calls f.template operator()<T>() for the runtime token count t in [1, max_tile_tokens]: the
// one place where the tile's token count becomes a template parameter.
template <class F>
void with_tile_tokens(int t, F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (void)((t == I + 1 ? (f.template operator()<I + 1>(), true) : false) || ...);
  }(std::make_integer_sequence<int, max_tile_tokens>{});
}

// Accumulators saved between k-blocks: one fixed buffer per thread, big enough for a whole
// 128-row chunk of the widest tile (no allocation inside a step).
inline constexpr std::size_t saved_floats = static_cast<std::size_t>(chunk_rows) * max_tile_tokens * Lanes::width;
inline float* saved_accumulators() noexcept {
  alignas(64) thread_local float buffer[saved_floats];
  return buffer;
}

// Rows [row_begin, row_end) (inside one 128-row chunk) for tokens [t_begin, t_end), each
// weight vector loaded through make_rows(r0) (the weight rows starting at row r0) by every tile.
template <class MakeRows>
void run_groups(const float* x, std::int64_t in, std::int64_t t_begin, std::int64_t t_end, std::int64_t row_begin,
                std::int64_t row_end, const MakeRows& make_rows, float* y, std::int64_t out) {
  for (std::int64_t t0 = t_begin; t0 < t_end; t0 += max_tile_tokens) {
    const int tokens = static_cast<int>(std::min<std::int64_t>(max_tile_tokens, t_end - t0));
    // The widest k-block whose x rows fit x_tile_bytes: a multiple of the fp8 block, or all of in.
    const std::int64_t row_bytes = tokens * static_cast<std::int64_t>(sizeof(float));
    const std::int64_t kb = in * row_bytes <= x_tile_bytes ? in : std::max<std::int64_t>(1, x_tile_bytes / (row_bytes * block)) * block;
    float* saved = kb < in ? saved_accumulators() : nullptr;  // (row_end - row_begin) <= chunk_rows
    const float* xt = x + t0 * in;
    with_tile_tokens(tokens, [&]<int T>() {
      for (std::int64_t k0 = 0; k0 < in; k0 += kb) {
        const std::int64_t k1 = std::min(in, k0 + kb);
        const bool first = k0 == 0, last = k1 == in;
        for (std::int64_t r0 = row_begin; r0 < row_end;) {
          float* s = saved ? saved + (r0 - row_begin) * T * Lanes::width : nullptr;
          float* yt = y + t0 * out + r0;
          if (r0 + tile_rows <= row_end) {
            tile<tile_rows, T>(xt, in, make_rows(r0), k0, k1, s, first, last, yt, out);
            r0 += tile_rows;
          } else {
            tile<1, T>(xt, in, make_rows(r0), k0, k1, s, first, last, yt, out);
            r0 += 1;
          }
        }
      }
    });
  }
}

// ---- the many-token path: weight rows widened to fp32 once, read by every token group --------
// Converting a weight vector (bf16: a zero-extension and a shift; fp8: the decode and the scale)
// takes FMA-port slots in every tile that reads it. When many token groups read the same rows,
// the rows are converted once into a per-thread fp32 buffer (the value the tile would have
// loaded, bit for bit, so the summation order above and every result are unchanged) and the
// tiles read that buffer from L2.
//
// Units with more than widen_min_tokens tokens take this path. Measured with
// bench/bench_linear.cpp on the 2-core AVX-512 Xeon (bf16, 0.6B shapes): at n = 512 the
// linear reaches 0.53-0.62 of the fp32-FMA probe instead of 0.48-0.50; at n = 8..32 with
// weights from DRAM the separate widening pass is slower than converting in the tiles (0.34-0.36
// of the read bandwidth instead of 0.54-0.59 at n = 8), and at n = 64..256 the two are within
// noise. Only 0.6B shapes were measured: a long row (in = 12288, 25600) is widened in many
// sub-blocks, each re-reading the x rows, which was not measured.
//
// The buffer holds up to widened_floats floats (sized for L2 with room for the x rows): a
// 128-row chunk whose widened rows would not fit is widened and run in equal sub-blocks of
// whole tiles.
inline constexpr std::int64_t widen_min_tokens = 128;
inline constexpr std::int64_t widened_floats = 256 * 1024;  // 1 MiB

// Widened rows, interleaved by tile: the rows of tile g (rows r_begin + g·tile_rows ...) lie in
// g·tile_floats(in) .. as [k-vector][row of the tile][lane], so that a tile reads one contiguous
// stream. A one-row tile at the end reads its row's slots of a partly filled group.
inline constexpr std::int64_t widened_step = tile_rows * Lanes::width;  // floats from one k-vector to the next
[[nodiscard]] constexpr std::int64_t tile_floats(std::int64_t in) noexcept { return (in + Lanes::width - 1) / Lanes::width * widened_step; }
// Row `row` (counted from the buffer's first row) at k-vector 0.
[[nodiscard]] inline float* widened_row(float* buffer, std::int64_t in, std::int64_t row) noexcept {
  return buffer + row / tile_rows * tile_floats(in) + row % tile_rows * Lanes::width;
}
struct WidenedRows {
  static constexpr std::int64_t line_elements = Lanes::width;
  const float* rows;  // row 0 at k-vector 0
  void prefetch(int, std::int64_t) const noexcept {}  // already in L2: written just before
  V load(int r, std::int64_t k) const noexcept { return Lanes::load(rows + k / Lanes::width * widened_step + r * Lanes::width); }
  // The ragged last vector whole: its lanes past `count` hold what the source's load gave them
  // (0, or NaN where an fp8 scale is infinite: 0 · inf), exactly as the tile would have used them.
  V load(int r, std::int64_t k, int) const noexcept { return load(r, k); }
};

// One buffer per thread, allocated by the thread's first many-token call or, for the threads of
// a pool, ahead of time by reserve_linear_scratch (CpuBackend does it at construction, so that no
// step allocates). Through the aligned operator new, which allocation counters can see.
inline float* widened_buffer() {
  struct Delete {
    void operator()(float* p) const noexcept { ::operator delete(p, std::align_val_t{64}); }
  };
  thread_local std::unique_ptr<float, Delete> buffer;
  if (!buffer) buffer.reset(static_cast<float*>(::operator new(widened_floats * sizeof(float), std::align_val_t{64})));
  return buffer.get();
}

template <class MakeRows>
void run_unit_widened(const float* x, std::int64_t in, std::int64_t t_begin, std::int64_t t_end, std::int64_t row_begin,
                      std::int64_t row_end, const MakeRows& make_rows, float* y, std::int64_t out) {
  const std::int64_t rows = row_end - row_begin;
  const std::int64_t fit = widened_floats / tile_floats(in) * tile_rows;  // >= tile_rows: run_unit checks
  const std::int64_t parts = (rows + fit - 1) / fit;
  const std::int64_t part_rows = ((rows + parts - 1) / parts + tile_rows - 1) / tile_rows * tile_rows;
  float* buffer = widened_buffer();
  for (std::int64_t r_begin = row_begin; r_begin < row_end; r_begin += part_rows) {
    const std::int64_t r_end = std::min(row_end, r_begin + part_rows);
    const auto source = make_rows(r_begin);
    for (std::int64_t r = 0; r < r_end - r_begin; ++r) {
      float* dst = widened_row(buffer, in, r);
      std::int64_t k = 0;
      for (; k + Lanes::width <= in; k += Lanes::width, dst += widened_step) Lanes::store(dst, source.load(static_cast<int>(r), k));
      if (k < in) Lanes::store(dst, source.load(static_cast<int>(r), k, static_cast<int>(in - k)));
    }
    run_groups(x, in, t_begin, t_end, r_begin, r_end, [&](std::int64_t r0) { return WidenedRows{widened_row(buffer, in, r0 - r_begin)}; }, y,
               out);
  }
}

// Rows [row_begin, row_end) (inside one 128-row chunk) for tokens [t_begin, t_end).
// make_rows(r0) gives the weight rows starting at row r0.
template <class MakeRows>
void run_unit(const float* x, std::int64_t in, std::int64_t t_begin, std::int64_t t_end, std::int64_t row_begin,
              std::int64_t row_end, const MakeRows& make_rows, float* y, std::int64_t out) {
  if (t_end - t_begin > widen_min_tokens && tile_floats(in) <= widened_floats)  // a longer row (in > 2^16) is not widened
    run_unit_widened(x, in, t_begin, t_end, row_begin, row_end, make_rows, y, out);
  else
    run_groups(x, in, t_begin, t_end, row_begin, row_end, make_rows, y, out);
}

// Splits `chunks` 128-row chunks × [0, n) tokens into units and runs run_chunk(chunk, t_begin,
// t_end) on the pool. Each unit is one chunk; tokens are split too only when there are fewer
// chunks than threads could share evenly and enough tokens for several tiles.
template <class RunChunk>
void parallel_units(std::int64_t n, std::int64_t chunks, ThreadPool& pool, const RunChunk& run_chunk) {
  const std::int64_t threads = pool.size();
  const std::int64_t token_groups = (n + max_tile_tokens - 1) / max_tile_tokens;
  const std::int64_t token_ranges =
      (chunks >= 4 * threads || chunks % threads == 0) ? 1 : std::min(threads, token_groups);
  pool.parallel_for(chunks * token_ranges, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t unit = begin; unit < end; ++unit) {
      const std::int64_t chunk = unit / token_ranges, range = unit % token_ranges;
      // Token ranges are cut at tile boundaries so that no range makes an extra small tile.
      const std::int64_t t_begin = std::min(n, range * token_groups / token_ranges * max_tile_tokens);
      const std::int64_t t_end = std::min(n, (range + 1) * token_groups / token_ranges * max_tile_tokens);
      if (t_begin < t_end) run_chunk(chunk, t_begin, t_end);
    }
  });
}

// [begin, begin + count) of two arrays overlap.
inline bool overlaps(const void* a, std::int64_t a_bytes, const void* b, std::int64_t b_bytes) noexcept {
  const auto a0 = reinterpret_cast<std::uintptr_t>(a), b0 = reinterpret_cast<std::uintptr_t>(b);
  return a_bytes > 0 && b_bytes > 0 && a0 < b0 + static_cast<std::uintptr_t>(b_bytes) && b0 < a0 + static_cast<std::uintptr_t>(a_bytes);
}

// The argument checks shared by every entry point; weight_bytes / scale_bytes are the sizes of W
// and scale_inv (scale may be null for unquantised weights).
inline void check_linear(std::string_view op, const float* x, std::int64_t n, std::int64_t in, const void* w,
                         std::int64_t weight_bytes, const void* scale, std::int64_t scale_bytes, std::int64_t out,
                         const float* y) {
  if (n < 0 || in < 1 || out < 1)
    throw_error<InvalidArgument>(op, ": bad shape: n = ", n, " (must be >= 0), in = ", in, ", out = ", out, " (must be >= 1)");
  if (n == 0) return;
  if (x == nullptr || w == nullptr || y == nullptr || (scale_bytes > 0 && scale == nullptr))
    throw_error<InvalidArgument>(op, ": null pointer for x [", n, ", ", in, "], W [", out, ", ", in, "] or y [", n, ", ", out, "]");
  const std::int64_t y_bytes = n * out * static_cast<std::int64_t>(sizeof(float));
  if (overlaps(y, y_bytes, x, n * in * static_cast<std::int64_t>(sizeof(float))) || overlaps(y, y_bytes, w, weight_bytes) ||
      overlaps(y, y_bytes, scale, scale_bytes))
    throw_error<InvalidArgument>(op, ": y [", n, ", ", out, "] overlaps x [", n, ", ", in, "], W or its scales");
}

}  // namespace linear_detail

// ---- the plain definitions (double accumulation, one thread) ----------------------------------

template <LinearPlainWeight W>
void linear_reference(const float* x, std::int64_t n, std::int64_t in, const W* w, std::int64_t out, float* y) {
  linear_detail::check_linear("linear_reference", x, n, in, w, out * in * static_cast<std::int64_t>(sizeof(W)), nullptr, 0, out, y);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < out; ++j) {
      double sum = 0;
      for (std::int64_t k = 0; k < in; ++k) sum += static_cast<double>(x[i * in + k]) * to_float(w[j * in + k]);
      y[i * out + j] = static_cast<float>(sum);
    }
}

template <Fp8ScaleElement Scale>
void linear_fp8_reference(const float* x, std::int64_t n, std::int64_t in, const fp8_e4m3* w, const Scale* scale_inv,
                          std::int64_t out, float* y) {
  const std::int64_t scale_cols = fp8_scale_blocks(in, linear_detail::block);
  const std::int64_t scale_count = fp8_scale_blocks(out, linear_detail::block) * scale_cols;
  linear_detail::check_linear("linear_fp8_reference", x, n, in, w, out * in, scale_inv,
                              scale_count * static_cast<std::int64_t>(sizeof(Scale)), out, y);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < out; ++j) {
      double sum = 0;
      for (std::int64_t k = 0; k < in; ++k) {
        const float weight = w[j * in + k].to_float() *
                             to_float(scale_inv[(j / linear_detail::block) * scale_cols + k / linear_detail::block]);
        sum += static_cast<double>(x[i * in + k]) * weight;
      }
      y[i * out + j] = static_cast<float>(sum);
    }
}

// ---- weight views: a Linear layer's W as the fast kernels read it ----------------------------

// An unquantised W [out, in], row-major, in place.
template <LinearPlainWeight W>
struct PlainLinear {
  const W* weight = nullptr;
  std::int64_t out = 0, in = 0;
};

// A block-FP8 W [out, in] with its scales prepared once (prepare_fp8_scales), so that no step
// converts them again. scales: [ceil(out/128)][ceil(in/128)] floats; for a 128-row chunk whose
// wide[chunk] is 0 they are scale_inv · 2^8 (undoing load_fp8_scaled's offset in the one
// multiplication), for a wide chunk (some |scale_inv| >= 2^120, or not finite) scale_inv itself.
// A layer that an FP8 checkpoint left unquantised (no weight_scale_inv) has codes == nullptr and
// its bf16 W in `unquantized` instead.
struct Fp8Linear {
  const std::uint8_t* codes = nullptr;
  const float* scales = nullptr;
  const std::uint8_t* wide = nullptr;
  std::int64_t out = 0, in = 0;
  const bf16* unquantized = nullptr;
};

// Owner of the prepared scales of one Fp8Linear.
struct Fp8Scales {
  std::vector<float> scales;
  std::vector<std::uint8_t> wide;
};

template <Fp8ScaleElement Scale>
[[nodiscard]] Fp8Scales prepare_fp8_scales(const Scale* scale_inv, std::int64_t out, std::int64_t in) {
  const std::int64_t rows = fp8_scale_blocks(out, linear_detail::block), cols = fp8_scale_blocks(in, linear_detail::block);
  Fp8Scales p;
  p.scales.resize(static_cast<std::size_t>(rows * cols));
  p.wide.resize(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    bool fits = true;
    for (std::int64_t c = 0; c < cols; ++c) fits = fits && std::abs(to_float(scale_inv[r * cols + c])) < 0x1p120f;  // false for NaN
    p.wide[static_cast<std::size_t>(r)] = fits ? 0 : 1;
    for (std::int64_t c = 0; c < cols; ++c) {
      const float s = to_float(scale_inv[r * cols + c]);
      p.scales[static_cast<std::size_t>(r * cols + c)] = fits ? s * linear_detail::fp8_exponent_offset : s;
    }
  }
  return p;
}

[[nodiscard]] inline Fp8Linear fp8_linear_view(const fp8_e4m3* w, const Fp8Scales& s, std::int64_t out, std::int64_t in) {
  return {reinterpret_cast<const std::uint8_t*>(w), s.scales.data(), s.wide.data(), out, in};
}

template <class V>
concept LinearView = std::same_as<V, PlainLinear<float>> || std::same_as<V, PlainLinear<bf16>> || std::same_as<V, Fp8Linear>;

namespace linear_detail {

// Runs 128-row chunk `chunk` of one weight view for tokens [t_begin, t_end).
template <LinearPlainWeight W>
void run_chunk(const PlainLinear<W>& w, const float* x, std::int64_t chunk, std::int64_t t_begin, std::int64_t t_end, float* y) {
  const std::int64_t in = w.in, row_begin = chunk * chunk_rows, row_end = std::min(w.out, row_begin + chunk_rows);
  run_unit(x, in, t_begin, t_end, row_begin, row_end, [&](std::int64_t r0) { return PlainRows<W>{w.weight + r0 * in, in}; }, y, w.out);
}

inline void run_chunk(const Fp8Linear& w, const float* x, std::int64_t chunk, std::int64_t t_begin, std::int64_t t_end, float* y) {
  if (w.codes == nullptr) return run_chunk(PlainLinear<bf16>{w.unquantized, w.out, w.in}, x, chunk, t_begin, t_end, y);
  const std::int64_t in = w.in, row_begin = chunk * chunk_rows, row_end = std::min(w.out, row_begin + chunk_rows);
  const float* scales = w.scales + chunk * fp8_scale_blocks(in, block);
  if (w.wide[chunk] == 0)
    run_unit(x, in, t_begin, t_end, row_begin, row_end, [&](std::int64_t r0) { return Fp8Rows{w.codes + r0 * in, in, scales}; }, y, w.out);
  else
    run_unit(x, in, t_begin, t_end, row_begin, row_end, [&](std::int64_t r0) { return Fp8RowsWide{w.codes + r0 * in, in, scales}; }, y,
             w.out);
}

template <class W>
[[nodiscard]] std::int64_t weight_bytes(const PlainLinear<W>& w) noexcept { return w.out * w.in * static_cast<std::int64_t>(sizeof(W)); }
[[nodiscard]] inline std::int64_t weight_bytes(const Fp8Linear& w) noexcept { return w.out * w.in * (w.codes ? 1 : 2); }
template <class W>
[[nodiscard]] const void* weight_data(const PlainLinear<W>& w) noexcept { return w.weight; }
[[nodiscard]] inline const void* weight_data(const Fp8Linear& w) noexcept {
  return w.codes ? static_cast<const void*>(w.codes) : static_cast<const void*>(w.unquantized);
}

}  // namespace linear_detail

// ---- the fast versions ------------------------------------------------------------------------

// Several Linear layers that read the same x, in one pass over the pool:
//   y[p][n, w[p].out] = x[n, in] · w[p]ᵀ   for p < K, every w[p].in == in
// (q/k/v, gate/up). The 128-row chunks of all K weights form one list of work units, so the
// threads share one hand-over instead of K. Every element is computed exactly as by a separate
// linear(): the same bits.
template <LinearView View, std::size_t K>
void linear_fused(const float* x, std::int64_t n, std::int64_t in, const std::array<View, K>& w, const std::array<float*, K>& y,
                  ThreadPool& pool) {
  using namespace linear_detail;
  static_assert(K >= 1);
  std::array<std::int64_t, K + 1> first_chunk{};
  for (std::size_t p = 0; p < K; ++p) {
    if (w[p].in != in)
      throw_error<InvalidArgument>("linear_fused: weight ", p, " has ", w[p].in, " input columns, x has ", in);
    check_linear("linear", x, n, in, weight_data(w[p]), weight_bytes(w[p]), nullptr, 0, w[p].out, y[p]);
    for (std::size_t q = 0; q < p; ++q)
      if (n > 0 && overlaps(y[p], n * w[p].out * 4, y[q], n * w[q].out * 4))
        throw_error<InvalidArgument>("linear_fused: outputs ", q, " and ", p, " overlap");
    first_chunk[p + 1] = first_chunk[p] + fp8_scale_blocks(w[p].out, chunk_rows);
  }
  if (n == 0) return;
  parallel_units(n, first_chunk[K], pool, [&](std::int64_t chunk, std::int64_t t_begin, std::int64_t t_end) {
    std::size_t p = 0;
    while (chunk >= first_chunk[p + 1]) ++p;
    run_chunk(w[p], x, chunk - first_chunk[p], t_begin, t_end, y[p]);
  });
}

template <LinearView View>
void linear(const float* x, std::int64_t n, const View& w, float* y, ThreadPool& pool) {
  linear_fused<View, 1>(x, n, w.in, {w}, {y}, pool);
}

template <LinearPlainWeight W>
void linear(const float* x, std::int64_t n, std::int64_t in, const W* w, std::int64_t out, float* y, ThreadPool& pool) {
  linear(x, n, PlainLinear<W>{w, out, in}, y, pool);
}

// One-off form: the scales are prepared on every call (a model prepares them once, at load).
template <Fp8ScaleElement Scale>
void linear_fp8(const float* x, std::int64_t n, std::int64_t in, const fp8_e4m3* w, const Scale* scale_inv, std::int64_t out,
                float* y, ThreadPool& pool) {
  using namespace linear_detail;
  static_assert(sizeof(fp8_e4m3) == 1, "the weight is read as bytes");
  const std::int64_t scale_count = fp8_scale_blocks(out, block) * fp8_scale_blocks(in, block);
  check_linear("linear_fp8", x, n, in, w, out * in, scale_inv, scale_count * static_cast<std::int64_t>(sizeof(Scale)), out, y);
  if (n == 0) return;
  const Fp8Scales scales = prepare_fp8_scales(scale_inv, out, in);
  linear(x, n, fp8_linear_view(w, scales, out, in), y, pool);
}

// Allocates linear's per-thread scratch (the many-token path's 1 MiB buffer) on every thread of
// the pool now, so that later calls on that pool allocate nothing. Calling it is optional.
inline void reserve_linear_scratch(ThreadPool& pool) {
  pool.parallel_for(pool.size(), 1, [](std::int64_t, std::int64_t) { (void)linear_detail::widened_buffer(); });
}

}  // namespace qwen::kernels::cpu

// Dequantisation of an official Qwen3 FP8 block-quantised weight (CPU).
//
// Contract (shared by kernels/cuda/fp8_dequant.cuh)
//   weight:    fp8 e4m3,      [rows, cols] row-major   (rows = out_features, cols = in_features)
//   scale_inv: float or bf16, [ceil(rows / Block), ceil(cols / Block)] row-major
//   out:       float or bf16, [rows, cols] row-major; must not overlap the inputs
//
//   out[r][c] = float(weight[r][c]) * float(scale_inv[r / Block][c / Block])
//
//   The product is one float multiplication (round to nearest even); a bf16 output is that float
//   rounded with RNE (bf16::from_float). An fp8 NaN code gives NaN. Block is 128 in every
//   official checkpoint ("weight_block_size": [128, 128]); the last row and column blocks may be
//   partial. rows and cols may be 0 (nothing is written).
//
// fp8_dequant_reference is the plain scalar definition; fp8_dequant is the fast version (a
// 256-entry fp8 -> float table; AVX-512 or AVX2 gathers when the compile target has them) and
// gives the same bits. The TensorView overload checks dtypes and shapes and throws
// InvalidArgument naming them.
#pragma once

#include <algorithm>
#include <array>
#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>

#include "qwen/core/error.hpp"
#include "qwen/core/numeric.hpp"
#include "qwen/core/tensor.hpp"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace qwen::kernels {

inline constexpr std::int64_t fp8_default_block = 128;

// Element types a block scale may have in a checkpoint, and the types the weight dequantises to.
template <class T>
concept Fp8ScaleElement = std::same_as<T, float> || std::same_as<T, bf16>;
template <class T>
concept Fp8DequantOutput = std::same_as<T, float> || std::same_as<T, bf16>;

// Number of Block-wide blocks covering an extent: ceil(extent / block).
[[nodiscard]] constexpr std::int64_t fp8_scale_blocks(std::int64_t extent, std::int64_t block) noexcept {
  return (extent + block - 1) / block;
}

struct Fp8DequantShape {
  std::int64_t rows;
  std::int64_t cols;
};

// Validates the TensorView form of the contract above for an output of out_elements elements;
// returns [rows, cols]. op names the caller in the message.
template <std::int64_t Block = fp8_default_block>
Fp8DequantShape check_fp8_dequant_views(std::string_view op, const TensorView& weight, const TensorView& scale_inv,
                                        std::size_t out_elements) {
  static_assert(Block > 0);
  if (weight.dtype != DType::F8_E4M3)
    throw_error<InvalidArgument>(op, ": weight must be F8_E4M3, is ", dtype_name(weight.dtype));
  if (scale_inv.dtype != DType::F32 && scale_inv.dtype != DType::BF16)
    throw_error<InvalidArgument>(op, ": weight_scale_inv must be F32 or BF16, is ", dtype_name(scale_inv.dtype));
  if (weight.rank() != 2 || !weight.is_contiguous())
    throw_error<InvalidArgument>(op, ": weight must be a contiguous [rows, cols] matrix, has shape ",
                                 shape_string(weight.shape));
  const std::int64_t rows = weight.shape[0], cols = weight.shape[1];
  const Shape expected = {fp8_scale_blocks(rows, Block), fp8_scale_blocks(cols, Block)};
  if (scale_inv.shape != expected || !scale_inv.is_contiguous())
    throw_error<InvalidArgument>(op, ": weight_scale_inv shape ", shape_string(scale_inv.shape),
                                 (scale_inv.is_contiguous() ? "" : " (not contiguous)"), " does not fit weight shape ",
                                 shape_string(weight.shape), " with ", Block, "x", Block, " blocks: expected contiguous ",
                                 shape_string(expected));
  if (out_elements != static_cast<std::size_t>(rows * cols))
    throw_error<InvalidArgument>(op, ": output holds ", out_elements, " elements, weight shape ",
                                 shape_string(weight.shape), " needs ", rows * cols);
  return {rows, cols};
}

// Validates the pointer form of the contract: non-negative extents, non-null pointers unless empty.
inline void check_fp8_dequant_pointers(std::string_view op, const void* weight, const void* scale_inv, const void* out,
                                       std::int64_t rows, std::int64_t cols) {
  if (rows < 0 || cols < 0) throw_error<InvalidArgument>(op, ": negative weight shape [", rows, ", ", cols, "]");
  if (rows > 0 && cols > 0 && (weight == nullptr || scale_inv == nullptr || out == nullptr))
    throw_error<InvalidArgument>(op, ": null pointer for a weight of shape [", rows, ", ", cols, "]");
}

}  // namespace qwen::kernels

namespace qwen::kernels::cpu {

// The plain definition: one element at a time, straight from the contract.
template <std::int64_t Block = fp8_default_block, Fp8ScaleElement Scale, Fp8DequantOutput Out>
void fp8_dequant_reference(const fp8_e4m3* weight, const Scale* scale_inv, Out* out, std::int64_t rows,
                           std::int64_t cols) {
  static_assert(Block > 0);
  check_fp8_dequant_pointers("fp8_dequant_reference", weight, scale_inv, out, rows, cols);
  const std::int64_t scale_cols = fp8_scale_blocks(cols, Block);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      const float value = weight[r * cols + c].to_float() * to_float(scale_inv[(r / Block) * scale_cols + c / Block]);
      if constexpr (std::same_as<Out, float>)
        out[r * cols + c] = value;
      else
        out[r * cols + c] = bf16::from_float(value);
    }
  }
}

namespace detail {

// fp8 e4m3 code -> float, for all 256 codes.
alignas(64) inline constexpr std::array<float, 256> fp8_e4m3_to_float_table = [] {
  std::array<float, 256> table{};
  for (unsigned code = 0; code < 256; ++code) table[code] = fp8_e4m3::from_bits(static_cast<std::uint8_t>(code)).to_float();
  return table;
}();

#if defined(__AVX512F__) || defined(__AVX2__)
#if defined(__AVX512F__)
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and trip -Wmaybe-uninitialized
// when inlined (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
inline constexpr std::int64_t fp8_dequant_lanes = 16;
using FloatLanes = __m512;
// Sixteen codes -> sixteen floats times scale.
inline FloatLanes dequant_lanes(const std::uint8_t* codes, float scale) {
  const __m512i index = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
  return _mm512_mul_ps(_mm512_i32gather_ps(index, fp8_e4m3_to_float_table.data(), 4), _mm512_set1_ps(scale));
}
inline void store_lanes(float* out, FloatLanes v) { _mm512_storeu_ps(out, v); }
// bf16::from_float on every lane: NaN -> 0x7fff, otherwise add 0x7fff plus the kept LSB and drop
// the low half (the carry never reaches the sign bit: |finite| + 0x8000 < 2^31).
inline void store_lanes(bf16* out, FloatLanes v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fff'ffff));
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f80'0000));
  const __m512i result = _mm512_mask_blend_epi32(nan, rounded, _mm512_set1_epi32(0x7fff));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi32_epi16(result));
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
inline constexpr std::string_view fp8_dequant_isa = "avx512f";
#else
inline constexpr std::int64_t fp8_dequant_lanes = 8;
using FloatLanes = __m256;
// Eight codes -> eight floats times scale.
inline FloatLanes dequant_lanes(const std::uint8_t* codes, float scale) {
  const __m256i index = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes)));
  return _mm256_mul_ps(_mm256_i32gather_ps(fp8_e4m3_to_float_table.data(), index, 4), _mm256_set1_ps(scale));
}
inline void store_lanes(float* out, FloatLanes v) { _mm256_storeu_ps(out, v); }
// As the AVX-512 version; packus keeps the 16-bit results (all in [0, 0xffff]) and the permute
// undoes its per-128-bit-lane interleave.
inline void store_lanes(bf16* out, FloatLanes v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fff'ffff));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80'0000));
  const __m256i result = _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7fff), nan);
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(result, result), 0b1000);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(packed));
}
inline constexpr std::string_view fp8_dequant_isa = "avx2";
#endif
#else
inline constexpr std::int64_t fp8_dequant_lanes = 0;  // no vector path
inline constexpr std::string_view fp8_dequant_isa = "scalar table";
#endif

// out[i] = table[codes[i]] * scale for i in [0, n): vector lanes first, then a scalar tail.
template <Fp8DequantOutput Out>
void dequant_run(const std::uint8_t* codes, float scale, Out* out, std::int64_t n) {
  std::int64_t i = 0;
#if defined(__AVX512F__) || defined(__AVX2__)
  for (; i + fp8_dequant_lanes <= n; i += fp8_dequant_lanes) store_lanes(out + i, dequant_lanes(codes + i, scale));
#endif
  for (; i < n; ++i) {
    const float value = fp8_e4m3_to_float_table[codes[i]] * scale;
    if constexpr (std::same_as<Out, float>)
      out[i] = value;
    else
      out[i] = bf16::from_float(value);
  }
}

}  // namespace detail

// Which vector path fp8_dequant was compiled with: "avx512f", "avx2" or "scalar table".
inline constexpr std::string_view fp8_dequant_isa = detail::fp8_dequant_isa;

// The fast version: same bits as fp8_dequant_reference. Each row is walked block by block so the
// scale is loaded once per Block columns.
template <std::int64_t Block = fp8_default_block, Fp8ScaleElement Scale, Fp8DequantOutput Out>
void fp8_dequant(const fp8_e4m3* weight, const Scale* scale_inv, Out* out, std::int64_t rows, std::int64_t cols) {
  static_assert(Block > 0);
  static_assert(sizeof(fp8_e4m3) == 1, "the weight is read as bytes");
  check_fp8_dequant_pointers("fp8_dequant", weight, scale_inv, out, rows, cols);
  const std::int64_t scale_cols = fp8_scale_blocks(cols, Block);
  const auto* codes = reinterpret_cast<const std::uint8_t*>(weight);
  for (std::int64_t r = 0; r < rows; ++r) {
    const Scale* scale_row = scale_inv + (r / Block) * scale_cols;
    for (std::int64_t block = 0; block < scale_cols; ++block) {
      const std::int64_t c0 = block * Block;
      const std::int64_t n = std::min(Block, cols - c0);
      detail::dequant_run(codes + r * cols + c0, to_float(scale_row[block]), out + r * cols + c0, n);
    }
  }
}

// Checked form: weight F8_E4M3 [rows, cols], scale_inv F32 or BF16 [ceil(rows/Block), ceil(cols/Block)],
// both contiguous, out.size() == rows * cols. Throws InvalidArgument naming the shapes otherwise.
template <std::int64_t Block = fp8_default_block, Fp8DequantOutput Out>
void fp8_dequant(const TensorView& weight, const TensorView& scale_inv, std::span<Out> out) {
  const auto [rows, cols] = check_fp8_dequant_views<Block>("fp8_dequant", weight, scale_inv, out.size());
  const auto* w = weight.as<fp8_e4m3>(DType::F8_E4M3);
  if (scale_inv.dtype == DType::F32)
    fp8_dequant<Block>(w, scale_inv.as<float>(DType::F32), out.data(), rows, cols);
  else
    fp8_dequant<Block>(w, scale_inv.as<bf16>(DType::BF16), out.data(), rows, cols);
}

}  // namespace qwen::kernels::cpu

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
// fp8_dequant_reference is the plain scalar definition; fp8_dequant is the fast version (the
// lanes of kernels/cpu/simd.hpp decode the codes exactly, without a table) and gives the same
// bits. The TensorView overload checks dtypes and shapes and throws InvalidArgument naming them.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>

#include "qwen/core/error.hpp"
#include "qwen/core/numeric.hpp"
#include "qwen/core/tensor.hpp"
#include <qwen/kernels/cpu/simd.hpp>

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

using Lanes = simd::Simd;

// out[i] = float(codes[i]) * scale for i in [0, n): whole vectors through the lanes' exact decode
// (Simd::load_fp8, NaN codes included), then a scalar tail through fp8_e4m3::to_float. Either
// way the product is the one rounding of the contract.
template <Fp8DequantOutput Out>
void dequant_run(const std::uint8_t* codes, float scale, Out* out, std::int64_t n) {
  const Lanes::V s = Lanes::broadcast(scale);
  const std::int64_t vector_end = n - n % Lanes::width;
  for (std::int64_t i = 0; i < vector_end; i += Lanes::width) Lanes::store(out + i, Lanes::mul(Lanes::load_fp8(codes + i), s));
  for (std::int64_t i = vector_end; i < n; ++i) {
    const float value = fp8_e4m3::from_bits(codes[i]).to_float() * scale;
    if constexpr (std::same_as<Out, float>)
      out[i] = value;
    else
      out[i] = bf16::from_float(value);
  }
}

}  // namespace detail

// Which vector path fp8_dequant was compiled with (kernels/cpu/simd.hpp): "avx512", "avx2" or
// "portable", the same name as every other CPU kernel.
inline constexpr std::string_view fp8_dequant_isa = detail::Lanes::isa;

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

// Dequantisation of an official Qwen3 FP8 block-quantised weight (CUDA twin of
// kernels/cpu/fp8_dequant.hpp; the contract is stated there and holds here unchanged):
//
//   out[r][c] = float(weight[r][c]) * float(scale_inv[r / Block][c / Block])
//
// weight [rows, cols] e4m3, scale_inv [ceil(rows/Block), ceil(cols/Block)] float or bf16,
// out [rows, cols] float or bf16 (RNE), all row-major and in device memory.
// One float multiplication per element, never fused with anything, so the result equals the CPU
// version bit for bit, provided the code is not built with --use_fast_math or -ftz=true (flushing
// subnormal products would change them). NaN results are NaN; a bf16 NaN is written as 0x7fff,
// as on the CPU. tests/cuda/fp8_dequant_gpu.cu compares the two; it needs a GPU to run.
//
// Design: a load-time, bandwidth-bound op (1 byte in, 2 or 4 bytes out per element). One thread
// block per row (grid-stride over rows), consecutive threads on consecutive columns so a warp's
// byte loads and its stores are coalesced; the row's scale pointer is computed once per row.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <span>

#include <qwen/kernels/cpu/fp8_dequant.hpp>  // the shared contract: element types, shape checks

namespace qwen::kernels::cuda {

namespace detail {

// e4m3 -> half is exact (every e4m3 value is a half), half -> float is exact.
__device__ inline float fp8_e4m3_to_float(std::uint8_t code) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(code, __NV_E4M3)));
}

__device__ inline float scale_to_float(float s) { return s; }
__device__ inline float scale_to_float(bf16 s) { return __uint_as_float(static_cast<unsigned>(s.bits) << 16); }

__device__ inline void store(float* out, float v) { *out = v; }
__device__ inline void store(bf16* out, float v) {
  out->bits = isnan(v) ? std::uint16_t{0x7fff} : __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

}  // namespace detail

// weight, scale_inv, out: device pointers, shapes as in the contract; rows, cols >= 0.
template <std::int64_t Block, Fp8ScaleElement Scale, Fp8DequantOutput Out>
__global__ void fp8_dequant_kernel(const fp8_e4m3* __restrict__ weight, const Scale* __restrict__ scale_inv,
                                   Out* __restrict__ out, std::int64_t rows, std::int64_t cols) {
  static_assert(Block > 0);
  const std::int64_t scale_cols = (cols + Block - 1) / Block;
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const fp8_e4m3* weight_row = weight + r * cols;
    const Scale* scale_row = scale_inv + (r / Block) * scale_cols;
    Out* out_row = out + r * cols;
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      detail::store(out_row + c,
                    detail::fp8_e4m3_to_float(weight_row[c].bits) * detail::scale_to_float(scale_row[c / Block]));
  }
}

inline constexpr int fp8_dequant_threads = 256;
inline constexpr std::int64_t fp8_dequant_max_grid = 1 << 20;  // rows beyond this are grid-strided

// Enqueues the dequantisation on stream. Throws InvalidArgument for a contract violation (negative
// extents, null pointers); returns the launch status otherwise (cudaSuccess when there is nothing
// to do). Errors during execution surface at the next synchronisation, as usual.
template <std::int64_t Block = fp8_default_block, Fp8ScaleElement Scale, Fp8DequantOutput Out>
[[nodiscard]] cudaError_t fp8_dequant(const fp8_e4m3* weight, const Scale* scale_inv, Out* out, std::int64_t rows,
                                      std::int64_t cols, cudaStream_t stream) {
  check_fp8_dequant_pointers("cuda::fp8_dequant", weight, scale_inv, out, rows, cols);
  if (rows == 0 || cols == 0) return cudaSuccess;
  const auto grid = static_cast<unsigned>(std::min(rows, fp8_dequant_max_grid));
  fp8_dequant_kernel<Block><<<grid, fp8_dequant_threads, 0, stream>>>(weight, scale_inv, out, rows, cols);
  return cudaGetLastError();
}

// Checked form, as the CPU one: the views and the span point to device memory; dtypes and shapes
// are validated on the host and a mismatch throws InvalidArgument naming them.
template <std::int64_t Block = fp8_default_block, Fp8DequantOutput Out>
[[nodiscard]] cudaError_t fp8_dequant(const TensorView& weight, const TensorView& scale_inv, std::span<Out> out,
                                      cudaStream_t stream) {
  const auto [rows, cols] = check_fp8_dequant_views<Block>("cuda::fp8_dequant", weight, scale_inv, out.size());
  const auto* w = weight.as<fp8_e4m3>(DType::F8_E4M3);
  if (scale_inv.dtype == DType::F32)
    return fp8_dequant<Block>(w, scale_inv.as<float>(DType::F32), out.data(), rows, cols, stream);
  return fp8_dequant<Block>(w, scale_inv.as<bf16>(DType::BF16), out.data(), rows, cols, stream);
}

}  // namespace qwen::kernels::cuda

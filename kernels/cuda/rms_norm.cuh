// RMSNorm on the GPU, twin of kernels/cpu/rms_norm.hpp:
//   out[r, i] = weight[i] * (x[r, i] * inv_r),  inv_r = 1 / sqrt(mean_i(x[r, i]^2) + eps)
// x, out [rows, dim] fp32 (out may be x; a partial overlap is refused), weight [dim] float or bf16;
// all device memory.
//
// add_rms_norm fuses the residual add that precedes every RMSNorm after the first:
//   residual[r, i] += x[r, i]   (one fp32 addition, as the CPU backend's add: bit for bit)
//   out[r, i] = RMSNorm(residual[r, :])[i]
// residual is read and written in place; residual, x and out must not overlap (checked).
//
// Numerics: the sum of squares is fp32 (per-thread partial sums, then a warp tree, then the
// warps in a fixed order), inv = 1.0f / sqrtf(mean + eps) with IEEE sqrt and division; the
// scaling is the CPU's expression in the same order. The CPU sums in 16 lanes and combines them
// in double, so the two differ by the sums' rounding only: a few 1e-7 relative
// (tests/cuda/small_ops_gpu.cu derives its bound). The result of a row depends on that row only
// (fixed reduction order): batch invariant.
//
// Design: one thread block per row (grid-strided), 256 threads; two passes over the row (the
// second one mostly hits L1/L2), coalesced. A row of Qwen3 is 1024 .. 8192 floats.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include <qwen/kernels/cuda/common.cuh>

namespace qwen::kernels::cuda {

inline constexpr int rms_norm_threads = 256;

namespace detail {

// inv of one row held at `row` (fp32, dim elements), the same value in every thread.
__device__ __forceinline__ float rms_inverse(const float* row, std::int64_t dim, float eps) {
  float partial = 0;
  for (std::int64_t i = threadIdx.x; i < dim; i += rms_norm_threads) partial += row[i] * row[i];
  const float sum = block_sum<rms_norm_threads>(partial);
  return 1.0f / sqrtf(sum / static_cast<float>(dim) + eps);
}

}  // namespace detail

template <StorageFloat W>
__global__ void __launch_bounds__(rms_norm_threads) rms_norm_kernel(const float* x, std::int64_t rows, std::int64_t dim,
                                                                    const W* __restrict__ weight, float eps, float* out) {
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* row = x + r * dim;
    const float inv = detail::rms_inverse(row, dim, eps);
    float* dst = out + r * dim;
    for (std::int64_t i = threadIdx.x; i < dim; i += rms_norm_threads) dst[i] = widen(weight[i]) * (row[i] * inv);
  }
}

template <StorageFloat W>
__global__ void __launch_bounds__(rms_norm_threads) add_rms_norm_kernel(float* __restrict__ residual, const float* __restrict__ x,
                                                                        std::int64_t rows, std::int64_t dim, const W* __restrict__ weight,
                                                                        float eps, float* __restrict__ out) {
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float* row = residual + r * dim;
    const float* add = x + r * dim;
    // Each thread adds the elements it will read again below: no barrier needed before the sum.
    for (std::int64_t i = threadIdx.x; i < dim; i += rms_norm_threads) row[i] += add[i];
    const float inv = detail::rms_inverse(row, dim, eps);
    float* dst = out + r * dim;
    for (std::int64_t i = threadIdx.x; i < dim; i += rms_norm_threads) dst[i] = widen(weight[i]) * (row[i] * inv);
  }
}

namespace detail {
inline void check_rms_norm(const char* op, std::int64_t rows, std::int64_t dim, float eps) {
  check_extent(op, "rows", rows);
  if (dim <= 0) throw_error<InvalidArgument>(op, ": dim ", dim, " must be > 0");
  if (!(eps >= 0.0f)) throw_error<InvalidArgument>(op, ": eps ", eps, " must be >= 0");
}
}  // namespace detail

template <StorageFloat W>
[[nodiscard]] cudaError_t rms_norm(const float* x, std::int64_t rows, std::int64_t dim, const W* weight, float eps, float* out,
                                   cudaStream_t stream) {
  detail::check_rms_norm("cuda::rms_norm", rows, dim, eps);
  if (rows == 0) return cudaSuccess;
  if (x == nullptr || weight == nullptr || out == nullptr) throw_error<InvalidArgument>("cuda::rms_norm: null pointer");
  const std::int64_t bytes = rows * dim * 4;
  if (out != x && overlaps(out, bytes, x, bytes))
    throw_error<InvalidArgument>("cuda::rms_norm: out overlaps x without being x (rows ", rows, ", dim ", dim, ")");
  const auto grid = static_cast<unsigned>(std::min(rows, max_grid_x));
  rms_norm_kernel<<<grid, rms_norm_threads, 0, stream>>>(x, rows, dim, weight, eps, out);
  return cudaGetLastError();
}

template <StorageFloat W>
[[nodiscard]] cudaError_t add_rms_norm(float* residual, const float* x, std::int64_t rows, std::int64_t dim, const W* weight, float eps,
                                       float* out, cudaStream_t stream) {
  detail::check_rms_norm("cuda::add_rms_norm", rows, dim, eps);
  if (rows == 0) return cudaSuccess;
  if (residual == nullptr || x == nullptr || weight == nullptr || out == nullptr)
    throw_error<InvalidArgument>("cuda::add_rms_norm: null pointer");
  const std::int64_t bytes = rows * dim * 4;
  if (overlaps(out, bytes, residual, bytes) || overlaps(out, bytes, x, bytes) || overlaps(x, bytes, residual, bytes))
    throw_error<InvalidArgument>("cuda::add_rms_norm: residual, x and out must not overlap (rows ", rows, ", dim ", dim, ")");
  const auto grid = static_cast<unsigned>(std::min(rows, max_grid_x));
  add_rms_norm_kernel<<<grid, rms_norm_threads, 0, stream>>>(residual, x, rows, dim, weight, eps, out);
  return cudaGetLastError();
}

}  // namespace qwen::kernels::cuda

// The SwiGLU gate on the GPU, twin of kernels/cpu/silu_mul.hpp:
//   out[i] = silu(gate[i]) * up[i],  silu(g) = g / (1 + exp(-g))
// evaluated in fp32 in that order with CUDA's expf (max 2 ulp; not --use_fast_math), so it is
// within a few ulp of the CPU's, not bit for bit (tests/cuda/small_ops_gpu.cu states the bound).
//
// Two layouts:
//   silu_mul:       gate, up, out [count] (out may alias gate or up), the CPU contract;
//   silu_mul_fused: gate_up [rows, 2 * inter], each row [gate | up] as one fused gate/up
//                   projection writes it; out [rows, inter], must not overlap gate_up (checked).
// Design: elementwise, grid-strided, coalesced; bandwidth-bound.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include <qwen/kernels/cuda/common.cuh>

namespace qwen::kernels::cuda {

inline constexpr int silu_mul_threads = 256;

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

static __global__ void __launch_bounds__(silu_mul_threads)
    silu_mul_kernel(const float* gate, const float* up, float* out, std::int64_t count) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride)
    out[i] = silu_times(gate[i], up[i]);
}

static __global__ void __launch_bounds__(silu_mul_threads)
    silu_mul_fused_kernel(const float* __restrict__ gate_up, std::int64_t rows, std::int64_t inter, float* __restrict__ out) {
  const std::int64_t count = rows * inter;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    const std::int64_t r = i / inter, c = i - r * inter;
    const float* row = gate_up + r * 2 * inter;
    out[i] = silu_times(row[c], row[inter + c]);
  }
}

namespace detail {
[[nodiscard]] inline unsigned elementwise_grid(std::int64_t count) {
  constexpr std::int64_t max_blocks = 65536;  // enough to fill any GPU; the rest is grid-strided
  return static_cast<unsigned>(std::min((count + silu_mul_threads - 1) / silu_mul_threads, max_blocks));
}
}  // namespace detail

[[nodiscard]] inline cudaError_t silu_mul(const float* gate, const float* up, float* out, std::int64_t count, cudaStream_t stream) {
  check_extent("cuda::silu_mul", "count", count);
  if (count == 0) return cudaSuccess;
  if (gate == nullptr || up == nullptr || out == nullptr) throw_error<InvalidArgument>("cuda::silu_mul: null pointer");
  silu_mul_kernel<<<detail::elementwise_grid(count), silu_mul_threads, 0, stream>>>(gate, up, out, count);
  return cudaGetLastError();
}

[[nodiscard]] inline cudaError_t silu_mul_fused(const float* gate_up, std::int64_t rows, std::int64_t inter, float* out,
                                                cudaStream_t stream) {
  check_extent("cuda::silu_mul_fused", "rows", rows);
  if (inter <= 0) throw_error<InvalidArgument>("cuda::silu_mul_fused: inter ", inter, " must be > 0");
  if (rows == 0) return cudaSuccess;
  if (gate_up == nullptr || out == nullptr) throw_error<InvalidArgument>("cuda::silu_mul_fused: null pointer");
  if (overlaps(gate_up, rows * 2 * inter * 4, out, rows * inter * 4))
    throw_error<InvalidArgument>("cuda::silu_mul_fused: out overlaps gate_up (use a separate buffer)");
  silu_mul_fused_kernel<<<detail::elementwise_grid(rows * inter), silu_mul_threads, 0, stream>>>(gate_up, rows, inter, out);
  return cudaGetLastError();
}

}  // namespace qwen::kernels::cuda

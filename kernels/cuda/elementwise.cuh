// The two data-movement ops of the forward pass that need no arithmetic beyond one addition;
// their CPU twins are CpuBackend::add and CpuBackend::gather_logit_rows (backend/cpu.hpp):
//   add:         x[i] += y[i]                         (fp32, count elements; bit for bit)
//   gather_rows: dst[r, :] = src[rows[r], :]           (width floats per row; bit for bit)
// rows is a device array; its entries are checked on the host when the step is planned (every
// logit row is a token of the step), so the kernel trusts them.
// Design: grid-strided and coalesced; bandwidth-bound and small.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include <qwen/kernels/cuda/common.cuh>

namespace qwen::kernels::cuda {

inline constexpr int elementwise_threads = 256;

static __global__ void __launch_bounds__(elementwise_threads)
    add_kernel(float* x, const float* y, std::int64_t count) {  // not __restrict__: x == y is allowed
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) x[i] += y[i];
}

static __global__ void __launch_bounds__(elementwise_threads)
    gather_rows_kernel(const float* __restrict__ src, const std::int32_t* __restrict__ rows, std::int64_t num_rows, std::int64_t width,
                       float* __restrict__ dst) {
  for (std::int64_t r = blockIdx.x; r < num_rows; r += gridDim.x) {
    const float* from = src + static_cast<std::int64_t>(rows[r]) * width;
    float* to = dst + r * width;
    for (std::int64_t i = threadIdx.x; i < width; i += blockDim.x) to[i] = from[i];
  }
}

// x and y must not overlap (except x == y, which doubles x).
[[nodiscard]] inline cudaError_t add(float* x, const float* y, std::int64_t count, cudaStream_t stream) {
  check_extent("cuda::add", "count", count);
  if (count == 0) return cudaSuccess;
  if (x == nullptr || y == nullptr) throw_error<InvalidArgument>("cuda::add: null pointer");
  constexpr std::int64_t max_blocks = 65536;
  const auto grid = static_cast<unsigned>(std::min((count + elementwise_threads - 1) / elementwise_threads, max_blocks));
  add_kernel<<<grid, elementwise_threads, 0, stream>>>(x, y, count);
  return cudaGetLastError();
}

// dst must not overlap src.
[[nodiscard]] inline cudaError_t gather_rows(const float* src, const std::int32_t* rows, std::int64_t num_rows, std::int64_t width, float* dst,
                                             cudaStream_t stream) {
  check_extent("cuda::gather_rows", "num_rows", num_rows);
  if (width <= 0) throw_error<InvalidArgument>("cuda::gather_rows: width ", width, " must be > 0");
  if (num_rows == 0) return cudaSuccess;
  if (src == nullptr || rows == nullptr || dst == nullptr) throw_error<InvalidArgument>("cuda::gather_rows: null pointer");
  const auto grid = static_cast<unsigned>(std::min(num_rows, max_grid_x));
  gather_rows_kernel<<<grid, elementwise_threads, 0, stream>>>(src, rows, num_rows, width, dst);
  return cudaGetLastError();
}

}  // namespace qwen::kernels::cuda

// Embedding lookup on the GPU, twin of kernels/cpu/embedding.hpp:
//   out[t, :] = float(table[tokens[t], :])
// table [vocab, hidden] float or bf16, tokens [n] int32, out [n, hidden] fp32, all device memory.
// Exact (a bf16 widens to float without rounding), so it equals the CPU version bit for bit.
//
// The CPU version throws for a token outside [0, vocab); a kernel cannot, and the token ids are
// checked on the host when the step is made (StepPlan validation), before they are uploaded. A
// token id that is out of range anyway produces a row of NaN, so it cannot pass unnoticed as a
// plausible embedding.
//
// Design: one thread block per token (grid-strided past max_grid_x), consecutive threads on
// consecutive elements, so reads and writes are coalesced. A load-bound op of n * hidden elements.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include <qwen/kernels/cuda/common.cuh>

namespace qwen::kernels::cuda {

inline constexpr int embedding_threads = 256;

template <StorageFloat W>
__global__ void __launch_bounds__(embedding_threads) embedding_kernel(const W* __restrict__ table, std::int64_t vocab, std::int64_t hidden,
                                                                      const std::int32_t* __restrict__ tokens, std::int64_t n,
                                                                      float* __restrict__ out) {
  for (std::int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    const std::int32_t token = tokens[t];
    float* dst = out + t * hidden;
    if (token < 0 || token >= vocab) {
      for (std::int64_t i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = __int_as_float(0x7fc00000);
      continue;
    }
    const W* row = table + static_cast<std::int64_t>(token) * hidden;
    for (std::int64_t i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = widen(row[i]);
  }
}

template <StorageFloat W>
[[nodiscard]] cudaError_t embedding(const W* table, std::int64_t vocab, std::int64_t hidden, const std::int32_t* tokens, std::int64_t n,
                                    float* out, cudaStream_t stream) {
  check_extent("cuda::embedding", "n", n);
  if (vocab <= 0 || hidden <= 0) throw_error<InvalidArgument>("cuda::embedding: vocab ", vocab, " and hidden ", hidden, " must be > 0");
  if (n == 0) return cudaSuccess;
  if (table == nullptr || tokens == nullptr || out == nullptr) throw_error<InvalidArgument>("cuda::embedding: null pointer");
  const auto grid = static_cast<unsigned>(std::min(n, max_grid_x));
  embedding_kernel<<<grid, embedding_threads, 0, stream>>>(table, vocab, hidden, tokens, n, out);
  return cudaGetLastError();
}

}  // namespace qwen::kernels::cuda

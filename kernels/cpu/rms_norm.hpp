// RMSNorm over the last dimension, as transformers' Qwen3RMSNorm computes it in fp32:
//   out[r, i] = weight[i] * (x[r, i] * rsqrt(mean_i(x[r, i]^2) + eps))
// x, out: [rows, dim] fp32, row-major (out may alias x). weight: [dim], float or bf16.
#pragma once

#include <cmath>
#include <cstdint>

#include "qwen/core/error.hpp"
#include "qwen/core/numeric.hpp"

namespace qwen::kernels::cpu {

// The oracle: sum of squares in double.
template <class W>
void rms_norm_reference(const float* x, std::int64_t rows, std::int64_t dim, const W* weight, float eps, float* out) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * dim;
    double sum = 0;
    for (std::int64_t i = 0; i < dim; ++i) sum += static_cast<double>(row[i]) * row[i];
    const double inv = 1.0 / std::sqrt(sum / static_cast<double>(dim) + eps);
    for (std::int64_t i = 0; i < dim; ++i)
      out[r * dim + i] = static_cast<float>(static_cast<double>(to_float(weight[i])) * (row[i] * inv));
  }
}

// The production version: the sum of squares in 16 fp32 lanes (vectorised by the compiler),
// combined in double; the scaling in fp32 as transformers does it.
template <class W>
void rms_norm(const float* x, std::int64_t rows, std::int64_t dim, const W* weight, float eps, float* out) {
  if (rows < 0 || dim <= 0) throw_error<InvalidArgument>("rms_norm: rows ", rows, ", dim ", dim);
  constexpr int lanes = 16;
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * dim;
    float partial[lanes] = {};
    std::int64_t i = 0;
    for (; i + lanes <= dim; i += lanes)
      for (int l = 0; l < lanes; ++l) partial[l] += row[i + l] * row[i + l];
    double sum = 0;
    for (int l = 0; l < lanes; ++l) sum += partial[l];
    for (; i < dim; ++i) sum += static_cast<double>(row[i]) * row[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<float>(sum / static_cast<double>(dim)) + eps));
    float* dst = out + r * dim;
    for (std::int64_t j = 0; j < dim; ++j) dst[j] = to_float(weight[j]) * (row[j] * inv);
  }
}

}  // namespace qwen::kernels::cpu

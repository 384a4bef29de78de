// The SwiGLU gate of Qwen3's MLP: out[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + exp(-x)).
// gate, up, out: [count] fp32; out may alias gate or up.
#pragma once

#include <cmath>
#include <cstdint>

namespace qwen::kernels::cpu {

inline void silu_mul_reference(const float* gate, const float* up, float* out, std::int64_t count) {
  for (std::int64_t i = 0; i < count; ++i) {
    const double g = gate[i];
    out[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * up[i]);
  }
}

inline void silu_mul(const float* gate, const float* up, float* out, std::int64_t count) {
  for (std::int64_t i = 0; i < count; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace qwen::kernels::cpu

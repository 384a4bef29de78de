// Rotary position embedding, NeoX / rotate_half style over the whole head, as transformers'
// Qwen3 applies it to q and k after q_norm / k_norm:
//   for i < d/2, angle = position * inv_freq[i]:
//     out[i]       = x[i] * cos - x[i + d/2] * sin
//     out[i + d/2] = x[i + d/2] * cos + x[i] * sin      (cos, sin scaled by attention_scaling)
// The frequencies (inv_freq and attention_scaling) reproduce transformers' fp32 computation for
// plain RoPE and for YaRN (modeling_rope_utils: _compute_default_rope_parameters and
// _compute_yarn_parameters, truncate = true).
//
// Per step: rope_cos_sin makes the step's cos / sin of every token's angles once;
// apply_rope<HeadDim> rotates q and k of every layer with them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <optional>
#include <vector>

#include "qwen/core/error.hpp"

namespace qwen::kernels::cpu {

struct YarnParams {
  double factor = 1.0;
  double original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  std::optional<double> attention_factor;  // default 0.1 * ln(factor) + 1 (1 when factor <= 1)
};

// What a model's RoPE is: the inverse frequencies and the attention scaling (1 without YaRN).
struct RopeFrequencies {
  int head_dim = 0;
  std::vector<float> inv_freq;  // [head_dim / 2]
  float attention_scaling = 1.0f;
};

[[nodiscard]] inline RopeFrequencies make_rope_frequencies(double theta, int head_dim, const std::optional<YarnParams>& yarn = std::nullopt) {
  if (head_dim <= 0 || head_dim % 2 != 0) throw_error<InvalidArgument>("rope: head_dim ", head_dim, " must be even and positive");
  if (!(theta > 1.0) || !std::isfinite(theta)) throw_error<InvalidArgument>("rope: theta ", theta, " must be finite and > 1");
  const int half = head_dim / 2;
  RopeFrequencies t;
  t.head_dim = head_dim;
  t.inv_freq.resize(static_cast<std::size_t>(half));
  // pos_freqs = theta ** (float32(2i) / dim) in fp32, as torch computes `base ** tensor`.
  std::vector<float> pos_freqs(static_cast<std::size_t>(half));
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    pos_freqs[static_cast<std::size_t>(i)] = static_cast<float>(std::pow(theta, static_cast<double>(exponent)));
  }
  if (!yarn) {
    for (int i = 0; i < half; ++i) t.inv_freq[static_cast<std::size_t>(i)] = 1.0f / pos_freqs[static_cast<std::size_t>(i)];
    return t;
  }
  const YarnParams& y = *yarn;
  if (!(y.factor >= 1.0) || !(y.original_max_position_embeddings > 0))
    throw_error<InvalidArgument>("rope: YaRN factor ", y.factor, " / original_max_position_embeddings ",
                                 y.original_max_position_embeddings, " out of range");
  const double attention = y.attention_factor ? *y.attention_factor : (y.factor <= 1.0 ? 1.0 : 0.1 * std::log(y.factor) + 1.0);
  t.attention_scaling = static_cast<float>(attention);
  // The correction range: the dimensions whose wavelength crosses beta_fast .. beta_slow
  // rotations over the original context, floored / ceiled and clamped to [0, dim - 1].
  auto correction_dim = [&](double rotations) {
    return (head_dim * std::log(y.original_max_position_embeddings / (rotations * 2 * std::numbers::pi))) / (2 * std::log(theta));
  };
  double low = std::max(std::floor(correction_dim(y.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(y.beta_slow)), static_cast<double>(head_dim - 1));
  if (low == high) high += 0.001;
  const float factor = static_cast<float>(y.factor);
  for (int i = 0; i < half; ++i) {
    const float ramp = std::clamp(static_cast<float>((static_cast<float>(i) - low) / (high - low)), 0.0f, 1.0f);
    const float extrapolation_weight = 1.0f - ramp;
    const float extrapolation = 1.0f / pos_freqs[static_cast<std::size_t>(i)];
    const float interpolation = 1.0f / (factor * pos_freqs[static_cast<std::size_t>(i)]);
    t.inv_freq[static_cast<std::size_t>(i)] = interpolation * (1.0f - extrapolation_weight) + extrapolation * extrapolation_weight;
  }
  return t;
}

// The step's cos / sin. positions: [n]; cos_sin: [n][head_dim], per token
// [cos 0 .. head_dim/2 | sin 0 .. head_dim/2], scaled by attention_scaling. The angle is formed
// in fp32 as transformers forms it (position.float() * inv_freq); cos and sin are computed in
// double and rounded.
inline void rope_cos_sin(const RopeFrequencies& frequencies, const std::int32_t* positions, std::int64_t n, float* cos_sin) {
  const int d = frequencies.head_dim, half = d / 2;
  if (d <= 0 || d % 2 != 0 || frequencies.inv_freq.size() != static_cast<std::size_t>(half))
    throw_error<InvalidArgument>("rope_cos_sin: head_dim ", d, " with ", frequencies.inv_freq.size(),
                                 " inverse frequencies (make them with make_rope_frequencies)");
  for (std::int64_t t = 0; t < n; ++t) {
    float* cos_row = cos_sin + t * d;
    float* sin_row = cos_row + half;
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[t]) * frequencies.inv_freq[static_cast<std::size_t>(i)];
      cos_row[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * frequencies.attention_scaling;
      sin_row[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * frequencies.attention_scaling;
    }
  }
}

// x: [n, heads, HeadDim] fp32, rotated in place; cos_sin: [n][HeadDim] from rope_cos_sin for
// the same n tokens (frequencies with head_dim HeadDim).
template <int HeadDim>
void apply_rope(float* x, std::int64_t n, std::int64_t heads, const float* cos_sin) {
  static_assert(HeadDim > 0 && HeadDim % 2 == 0, "apply_rope: HeadDim must be even and positive (RoPE rotates pairs)");
  constexpr int half = HeadDim / 2;
  for (std::int64_t t = 0; t < n; ++t) {
    const float* cos_row = cos_sin + t * HeadDim;
    const float* sin_row = cos_row + half;
    for (std::int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * HeadDim;
      for (int i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        const float c = cos_row[i], s = sin_row[i];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

// The oracle: the same fp32 angles (that rounding is part of the definition: transformers forms
// position * inv_freq in fp32), cos, sin and the rotation in double.
inline void apply_rope_reference(float* x, std::int64_t n, std::int64_t heads, const std::int32_t* positions,
                                 const RopeFrequencies& frequencies) {
  const int d = frequencies.head_dim, half = d / 2;
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * d;
      for (int i = 0; i < half; ++i) {
        const double angle = static_cast<float>(positions[t]) * frequencies.inv_freq[static_cast<std::size_t>(i)];
        const double c = std::cos(angle) * frequencies.attention_scaling, s = std::sin(angle) * frequencies.attention_scaling;
        const double a = v[i], b = v[i + half];
        v[i] = static_cast<float>(a * c - b * s);
        v[i + half] = static_cast<float>(b * c + a * s);
      }
    }
}

}  // namespace qwen::kernels::cpu

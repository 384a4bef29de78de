// The Qwen3-MoE router after its gate projection: softmax over all experts in fp32, the top k
// probabilities, renormalised to sum to one when norm_topk_prob (transformers'
// Qwen3MoeTopKRouter). Ties between equal probabilities go to the lower expert id.
// logits: [n, experts]; expert_ids, weights: [n, k], each row ordered by descending weight.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "qwen/core/error.hpp"

namespace qwen::kernels::cpu {

// scratch: 2 * experts floats' worth (probabilities and an ordering), so that a step does not
// allocate; the overload without it allocates its own.
inline void moe_route(const float* logits, std::int64_t n, int experts, int k, bool norm_topk_prob, std::int32_t* expert_ids,
                      float* weights, float* probs, std::int32_t* order) {
  if (experts <= 0 || k <= 0 || k > experts)
    throw_error<InvalidArgument>("moe_route: top ", k, " of ", experts, " experts");
  for (std::int64_t t = 0; t < n; ++t) {
    const float* row = logits + t * experts;
    const float max = *std::max_element(row, row + experts);
    float sum = 0;
    for (int e = 0; e < experts; ++e) sum += probs[e] = std::exp(row[e] - max);
    for (int e = 0; e < experts; ++e) probs[e] /= sum;
    std::iota(order, order + experts, 0);
    std::partial_sort(order, order + k, order + experts, [&](std::int32_t a, std::int32_t b) {
      const float pa = probs[a], pb = probs[b];
      return pa > pb || (pa == pb && a < b);
    });
    float kept = 0;
    for (int j = 0; j < k; ++j) kept += probs[order[j]];
    for (int j = 0; j < k; ++j) {
      const std::int32_t e = order[j];
      expert_ids[t * k + j] = e;
      weights[t * k + j] = norm_topk_prob ? probs[e] / kept : probs[e];
    }
  }
}

inline void moe_route(const float* logits, std::int64_t n, int experts, int k, bool norm_topk_prob, std::int32_t* expert_ids,
                      float* weights) {
  if (experts <= 0 || k <= 0 || k > experts)
    throw_error<InvalidArgument>("moe_route: top ", k, " of ", experts, " experts");
  std::vector<float> probs(static_cast<std::size_t>(experts));
  std::vector<std::int32_t> order(static_cast<std::size_t>(experts));
  moe_route(logits, n, experts, k, norm_topk_prob, expert_ids, weights, probs.data(), order.data());
}

}  // namespace qwen::kernels::cpu

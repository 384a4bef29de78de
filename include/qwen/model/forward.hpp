// The Qwen3 forward pass, written once over a Backend (ARCHITECTURE.md §3):
//   x = embed(tokens)
//   per layer:  h = x + o_proj(attention(rope(k_norm(k_proj(n))), rope(q_norm(q_proj(n))), v_proj(n)))
//               with n = input_layernorm(x); then x = h + mlp(post_attention_layernorm(h))
//   logits = lm_head(norm(x)) at the requested rows
// The MLP is SwiGLU (dense) or the top-k mixture of SwiGLU experts (MoE). K and V go to a
// paged cache and attention reads them only through each sequence's block table.
//
// The Backend supplies buffers and ops (see backend/cpu.hpp for the contract); nothing here
// depends on where the memory lives. Every op computes a token's result independently of the
// other tokens in the step, so a sequence's logits do not depend on the batch it is in.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/io/model_config.hpp"
#include "qwen/kv/paged_kv.hpp"
#include "qwen/model/qwen3.hpp"
#include "qwen/model/step.hpp"
#include "qwen/model/weights.hpp"

namespace qwen {

template <Qwen3Type Model, class Backend, int BlockSize = 16>
class Qwen3Forward {
 public:
  static constexpr int hidden = Model::hidden_size;
  static constexpr int head_dim = Model::head_dim;
  static constexpr int vocab = Model::vocab_size;

  // kv_blocks: the cache's capacity in blocks of BlockSize positions (shared by all sequences).
  Qwen3Forward(const Weights<Model>& weights, const io::ModelConfig& config, Backend& backend, int kv_blocks)
      : weights_(weights),
        backend_(backend),
        rope_(backend.make_rope(config)),
        eps_(static_cast<float>(config.rms_norm_eps)),
        max_positions_(config.max_position_embeddings),
        kv_(Model::num_layers, Model::num_kv_heads, head_dim, kv_blocks) {}

  int add_sequence() {
    const int id = kv_.add_sequence();
    cached_[id] = 0;
    return id;
  }
  void remove_sequence(int sequence) {
    kv_.remove_sequence(sequence);
    cached_.erase(sequence);
  }
  // Positions of `sequence` whose K/V are in the cache.
  [[nodiscard]] int cached_length(int sequence) const {
    const auto it = cached_.find(sequence);
    if (it == cached_.end()) throw_error<InvalidArgument>("sequence ", sequence, " does not exist");
    return it->second;
  }
  [[nodiscard]] const PagedKV<BlockSize>& kv_cache() const noexcept { return kv_; }

  // Runs one step over `chunks`; `logits` becomes [rows, vocab] (rows in chunk order, as the
  // chunks asked for them). On an error nothing is changed: the plan and the cache capacity
  // are checked before any K/V is written.
  void step(std::span<const SequenceChunk> chunks, std::vector<float>& logits) {
    const StepPlan plan = make_step_plan(chunks, vocab, max_positions_, [&](int s) {
      const auto it = cached_.find(s);
      if (it == cached_.end()) throw_error<InvalidArgument>("step: sequence ", s, " does not exist");
      return it->second;
    });
    reserve_all(chunks);
    run(plan, logits);
    for (const SequenceChunk& c : chunks) cached_[c.sequence] = c.start_position + static_cast<int>(c.tokens.size());
  }

 private:
  using Buffer = typename Backend::Buffer;

  void reserve_all(std::span<const SequenceChunk> chunks) {
    // Check the total first so that a failure leaves every sequence as it was.
    std::int64_t needed = 0;
    for (const SequenceChunk& c : chunks) {
      const std::int64_t end = c.start_position + static_cast<std::int64_t>(c.tokens.size());
      const std::int64_t blocks = (end + BlockSize - 1) / BlockSize;
      needed += std::max<std::int64_t>(0, blocks - static_cast<std::int64_t>(kv_.block_table(c.sequence).size()));
    }
    if (needed > kv_.num_free_blocks())
      throw_error<InvalidArgument>("step: the KV cache needs ", needed, " more blocks of ", BlockSize, " positions, ",
                                   kv_.num_free_blocks(), " are free");
    for (const SequenceChunk& c : chunks) kv_.reserve(c.sequence, c.start_position + static_cast<int>(c.tokens.size()));
  }

  void run(const StepPlan& plan, std::vector<float>& logits) {
    const std::int64_t n = plan.num_tokens();
    Backend& b = backend_;
    b.resize(x_, n * hidden);
    b.resize(normed_, n * hidden);
    b.resize(q_, n * Model::q_size);
    b.resize(k_, n * Model::kv_size);
    b.resize(v_, n * Model::kv_size);
    b.resize(attn_, n * Model::q_size);
    b.resize(proj_, n * hidden);

    b.embedding(weights_.embed_tokens, plan.tokens.data(), n, b.data(x_));
    for (int l = 0; l < Model::num_layers; ++l) {
      const auto& layer = weights_.layers[static_cast<std::size_t>(l)];
      const auto& a = layer.self_attn;
      b.rms_norm(b.data(x_), n, hidden, layer.input_layernorm, eps_, b.data(normed_));
      b.linear(b.data(normed_), n, a.q_proj, b.data(q_));
      b.linear(b.data(normed_), n, a.k_proj, b.data(k_));
      b.linear(b.data(normed_), n, a.v_proj, b.data(v_));
      b.rms_norm(b.data(q_), n * Model::num_heads, head_dim, a.q_norm, eps_, b.data(q_));
      b.rms_norm(b.data(k_), n * Model::num_kv_heads, head_dim, a.k_norm, eps_, b.data(k_));
      b.rope(b.data(q_), n, Model::num_heads, plan.positions.data(), rope_);
      b.rope(b.data(k_), n, Model::num_kv_heads, plan.positions.data(), rope_);
      b.write_kv(kv_, l, plan, b.data(k_), b.data(v_));
      b.attention(kv_, l, plan, b.data(q_), Model::num_heads, 1.0f / std::sqrt(static_cast<float>(head_dim)), b.data(attn_));
      b.linear(b.data(attn_), n, a.o_proj, b.data(proj_));
      b.add(b.data(x_), b.data(proj_), n * hidden);

      b.rms_norm(b.data(x_), n, hidden, layer.post_attention_layernorm, eps_, b.data(normed_));
      if constexpr (Model::is_moe)
        moe(layer.mlp, n);
      else
        mlp(layer.mlp, b.data(normed_), n, b.data(proj_));
      b.add(b.data(x_), b.data(proj_), n * hidden);
    }

    // Only the requested rows go through the final norm and lm_head.
    const auto rows = static_cast<std::int64_t>(plan.logit_rows.size());
    logits.resize(static_cast<std::size_t>(rows * vocab));
    if (rows == 0) return;
    b.resize(last_, rows * hidden);
    b.gather_rows(b.data(x_), hidden, plan.logit_rows.data(), rows, b.data(last_));
    b.rms_norm(b.data(last_), rows, hidden, weights_.norm, eps_, b.data(last_));
    b.linear_to_host(b.data(last_), rows, LinearWeight{weights_.lm_head, std::nullopt}, logits.data());
  }

  // out[n, hidden] = down(silu(gate(x)) * up(x))
  void mlp(const MlpWeights& m, const float* x, std::int64_t n, float* out) {
    Backend& b = backend_;
    const std::int64_t width = m.gate_proj.weight.shape[0];
    b.resize(gate_, n * width);
    b.resize(up_, n * width);
    b.linear(x, n, m.gate_proj, b.data(gate_));
    b.linear(x, n, m.up_proj, b.data(up_));
    b.silu_mul(b.data(gate_), b.data(up_), b.data(gate_), n * width);
    b.linear(b.data(gate_), n, m.down_proj, out);
  }

  // proj_[n, hidden] = sum over each token's top-k experts, in ascending expert id, of
  // weight * expert(normed_). Tokens are grouped by expert so that each expert's weights are
  // read once per step (one matrix product per expert, not one per token).
  void moe(const MoEWeights& m, std::int64_t n) {
    Backend& b = backend_;
    using moe_dims_t = moe_dims<Model>;
    constexpr int experts = moe_dims_t::num_experts, k = moe_dims_t::experts_per_token;
    b.resize(router_, n * experts);
    b.linear(b.data(normed_), n, LinearWeight{m.router, std::nullopt}, b.data(router_));
    expert_ids_.resize(static_cast<std::size_t>(n * k));
    expert_weights_.resize(static_cast<std::size_t>(n * k));
    b.moe_route(b.data(router_), n, experts, k, moe_dims_t::norm_topk_prob, expert_ids_.data(), expert_weights_.data());

    // Group (token, weight) pairs by expert; within an expert, tokens in ascending order.
    // Member lists, cleared rather than rebuilt: every layer of every step groups again.
    auto& tokens_of = expert_tokens_;
    auto& weights_of = expert_token_weights_;
    tokens_of.resize(experts);
    weights_of.resize(experts);
    for (int e = 0; e < experts; ++e) tokens_of[static_cast<std::size_t>(e)].clear(), weights_of[static_cast<std::size_t>(e)].clear();
    for (std::int64_t t = 0; t < n; ++t)
      for (int j = 0; j < k; ++j) {
        const auto e = static_cast<std::size_t>(expert_ids_[static_cast<std::size_t>(t * k + j)]);
        tokens_of[e].push_back(static_cast<std::int32_t>(t));
        weights_of[e].push_back(expert_weights_[static_cast<std::size_t>(t * k + j)]);
      }
    b.fill_zero(b.data(proj_), n * hidden);
    for (int e = 0; e < experts; ++e) {
      const auto& rows = tokens_of[static_cast<std::size_t>(e)];
      if (rows.empty()) continue;
      const auto count = static_cast<std::int64_t>(rows.size());
      b.resize(expert_in_, count * hidden);
      b.resize(expert_out_, count * hidden);
      b.gather_rows(b.data(normed_), hidden, rows.data(), count, b.data(expert_in_));
      mlp(m.experts[static_cast<std::size_t>(e)], b.data(expert_in_), count, b.data(expert_out_));
      b.scatter_add_scaled(b.data(expert_out_), hidden, rows.data(), weights_of[static_cast<std::size_t>(e)].data(), count,
                           b.data(proj_));
    }
  }

  const Weights<Model>& weights_;
  Backend& backend_;
  typename Backend::Rope rope_;
  float eps_;
  int max_positions_;
  PagedKV<BlockSize> kv_;
  std::unordered_map<int, int> cached_;  // sequence id -> positions in the cache
  Buffer x_, normed_, q_, k_, v_, attn_, proj_, gate_, up_, last_, router_, expert_in_, expert_out_;
  std::vector<std::int32_t> expert_ids_;
  std::vector<float> expert_weights_;
  std::vector<std::vector<std::int32_t>> expert_tokens_;      // [experts]: the tokens routed to each
  std::vector<std::vector<float>> expert_token_weights_;      // [experts]: their routing weights
};

}  // namespace qwen

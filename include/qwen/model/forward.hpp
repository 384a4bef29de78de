// The Qwen3 forward pass, written once over a Backend (ARCHITECTURE.md §3):
//   x = embed(tokens)
//   per layer:  h = x + o_proj(attention(rope(k_norm(k)), rope(q_norm(q)), v)),  [q, k, v] = qkv_proj(n)
//               with n = input_layernorm(x); then x = h + mlp(post_attention_layernorm(h))
//   logits = lm_head(norm(x)) at the requested rows
// The MLP is SwiGLU (dense) or the top-k mixture of SwiGLU experts (MoE, inside the backend).
//
// Qwen3Forward keeps no sequences: it owns the KV storage and the activation buffers and runs a
// StepPlan (model/step.hpp) against them. Which blocks belong to which sequence is the books'
// (kv/block_manager.hpp), and plan_step turns a batch of chunks into the plan. Every buffer is
// allocated at construction for the largest step (ForwardOptions); a step allocates nothing.
//
// Every op computes a token's result independently of the other tokens in the step, so a
// sequence's logits do not depend on the batch it is in.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "qwen/backend/backend.hpp"
#include "qwen/core/error.hpp"
#include "qwen/io/model_config.hpp"
#include "qwen/model/placed_weights.hpp"
#include "qwen/model/qwen3.hpp"
#include "qwen/model/step.hpp"
#include "qwen/model/weights.hpp"

namespace qwen {

template <Qwen3Type Model, class BackendT, int BlockSize = 16>
  requires BackendFor<BackendT, Model, BlockSize>
class Qwen3Forward {
 public:
  static constexpr int hidden = Model::hidden_size;
  static constexpr int head_dim = Model::head_dim;
  static constexpr int vocab = Model::vocab_size;
  static constexpr int block_size = BlockSize;
  using KVCache = typename BackendT::template KVCache<BlockSize>;

  Qwen3Forward(const Weights<Model>& weights, const io::ModelConfig& config, BackendT& backend, const ForwardOptions& options)
      : backend_(accepting(backend)),
        limits_(checked_limits(config, options)),
        eps_(static_cast<float>(config.rms_norm_eps)),
        kv_(backend.template make_kv_cache<BlockSize>(Model::num_layers, Model::num_kv_heads, head_dim, options.kv_blocks)),
        step_(backend.template make_step<Model>(limits_, config)),
        x_(alloc(hidden)),
        normed_(alloc(hidden)),
        q_(alloc(Model::q_size)),
        k_(alloc(Model::kv_size)),
        v_(alloc(Model::kv_size)),
        attn_(alloc(Model::q_size)),
        proj_(alloc(hidden)),
        gate_(alloc(Model::is_moe ? 0 : Model::intermediate_size)),
        up_(alloc(Model::is_moe ? 0 : Model::intermediate_size)),
        last_(backend.template allocate<typename BackendT::Activation>(limits_.max_logit_rows * hidden)),
        logits_(backend.template allocate<typename BackendT::Activation>(limits_.max_logit_rows * vocab)),
        weights_(place_weights<Model>(backend, weights)) {}

  [[nodiscard]] const StepLimits& limits() const noexcept { return limits_; }
  [[nodiscard]] const KVCache& kv_cache() const noexcept { return kv_; }

  // Runs one step; afterwards logits() holds [plan.num_logit_rows(), vocab] (rows in the plan's
  // order) in backend memory. The plan must come from plan_step with this forward pass's
  // limits() and a BlockManager over kv_blocks blocks of BlockSize.
  void run(const StepPlan& plan) {
    const std::int64_t n = plan.num_tokens();
    if (n > limits_.max_tokens || plan.num_sequences() > limits_.max_sequences || plan.num_logit_rows() > limits_.max_logit_rows)
      throw_error<InvalidArgument>("forward: a plan of ", n, " tokens / ", plan.num_sequences(), " sequences / ", plan.num_logit_rows(),
                                   " logit rows, built for at most ", limits_.max_tokens, " / ", limits_.max_sequences, " / ",
                                   limits_.max_logit_rows);
    BackendT& b = backend_;
    b.prepare(step_, plan, kv_);
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    float *x = b.data(x_), *normed = b.data(normed_), *q = b.data(q_), *k = b.data(k_), *v = b.data(v_), *attn = b.data(attn_),
          *proj = b.data(proj_);

    b.embedding(step_, weights_.embed_tokens, x);
    for (int l = 0; l < Model::num_layers; ++l) {
      const auto& layer = weights_.layers[static_cast<std::size_t>(l)];
      b.rms_norm(x, n, hidden, layer.input_layernorm, eps_, normed);
      b.linear(normed, n, layer.qkv, {q, k, v});
      if constexpr (fused_qk_norm_rope) {
        b.qk_norm_rope_write_kv(step_, kv_, l, layer.q_norm, layer.k_norm, eps_, q, k, v);
      } else {
        b.rms_norm(q, n * Model::num_heads, head_dim, layer.q_norm, eps_, q);
        b.rms_norm(k, n * Model::num_kv_heads, head_dim, layer.k_norm, eps_, k);
        b.rope(step_, q, k);
        b.write_kv(step_, kv_, l, k, v);
      }
      b.attention(step_, kv_, l, q, scale, attn);
      b.linear(attn, n, layer.o_proj, proj);
      b.add(x, proj, n * hidden);

      b.rms_norm(x, n, hidden, layer.post_attention_layernorm, eps_, normed);
      if constexpr (Model::is_moe) {
        b.moe(step_, layer.mlp, normed, proj);
      } else {
        float *gate = b.data(gate_), *up = b.data(up_);
        b.linear(normed, n, layer.mlp.gate_up, {gate, up});
        b.silu_mul(gate, up, gate, n * Model::intermediate_size);
        b.linear(gate, n, layer.mlp.down, proj);
      }
      b.add(x, proj, n * hidden);
    }

    // Only the requested rows go through the final norm and lm_head.
    rows_ = plan.num_logit_rows();
    if (rows_ == 0) return;
    b.gather_logit_rows(step_, x, b.data(last_));
    b.rms_norm(b.data(last_), rows_, hidden, weights_.norm, eps_, b.data(last_));
    b.linear(b.data(last_), rows_, weights_.lm_head, b.data(logits_));
  }

  // The last step's logits, [rows, vocab], in backend memory.
  [[nodiscard]] const auto& logits() const noexcept { return logits_; }
  [[nodiscard]] std::int64_t logit_rows() const noexcept { return rows_; }

  // The last step's logits copied to the host: `out` becomes [rows, vocab].
  void copy_logits_to_host(std::vector<float>& out) const {
    out.resize(static_cast<std::size_t>(rows_ * vocab));
    backend_.copy_to_host(logits_, rows_ * vocab, out.data());
  }

  // run() then copy_logits_to_host().
  void run(const StepPlan& plan, std::vector<float>& logits) {
    run(plan);
    copy_logits_to_host(logits);
  }

 private:
  using Buffer = typename BackendT::template Buffer<typename BackendT::Activation>;
  // A backend may do q_norm, k_norm, RoPE and the KV append in one op (the CUDA one does).
  static constexpr bool fused_qk_norm_rope = BackendFusesQkNormRope<BackendT, Model, BlockSize>;

  // A backend may refuse a model type before anything is placed (the CUDA one refuses MoE and
  // FP8 models this way, before uploading their weights); called once per Qwen3Forward, before
  // its weights are placed.
  static BackendT& accepting(BackendT& b) {
    if constexpr (requires { b.template check_model<Model>(); }) b.template check_model<Model>();
    return b;
  }

  static StepLimits checked_limits(const io::ModelConfig& config, const ForwardOptions& o) {
    if (o.max_tokens <= 0 || o.max_sequences <= 0 || o.kv_blocks <= 0 || o.max_logit_rows <= 0)
      throw_error<InvalidArgument>("Qwen3Forward: max_tokens ", o.max_tokens, ", max_sequences ", o.max_sequences, ", kv_blocks ",
                                   o.kv_blocks, ", max_logit_rows ", o.max_logit_rows, " must all be positive");
    if (o.max_tokens > std::int64_t{1} << 24)
      throw_error<InvalidArgument>("Qwen3Forward: max_tokens ", o.max_tokens, " is above the supported 2^24");
    return {vocab, config.max_position_embeddings, o.max_tokens, o.max_sequences, std::min(o.max_logit_rows, o.max_tokens)};
  }
  Buffer alloc(std::int64_t width) { return backend_.template allocate<typename BackendT::Activation>(limits_.max_tokens * width); }

  BackendT& backend_;
  StepLimits limits_;
  float eps_;
  KVCache kv_;
  typename BackendT::template Step<Model> step_;
  Buffer x_, normed_, q_, k_, v_, attn_, proj_, gate_, up_, last_, logits_;
  // Placed last: everything that can run out of memory is allocated before a large upload starts,
  // so a model that does not fit fails before its weights are copied, not after.
  PlacedWeights<Model, BackendT> weights_;
  std::int64_t rows_ = 0;
};

}  // namespace qwen

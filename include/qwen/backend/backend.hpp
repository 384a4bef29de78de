// What the forward pass needs of a backend, as C++20 concepts. CpuBackend (backend/cpu.hpp) and
// CudaBackend (backend/cuda.hpp) satisfy them (static_asserts there and in the tests check it).
//
// Memory spaces (each member says where its pointers live):
//   - Activations: Buffer<Activation>, allocated through allocate<T>(count) when the forward
//     pass is built, sized for its largest step; data(buffer) is a pointer in the backend's
//     memory that only the backend's ops dereference. No op allocates.
//   - Weights: placed once, at load, by place_linear<W>(LinearWeight) / place_vector<T>(view);
//     the returned handles (Linear<W>, Vector<T>) are what the ops read. W is the model's
//     weight type (bf16, float, fp8) or its plain type: the one dtype dispatch is placement.
//   - KV cache: KVCache<BlockSize>, storage only, made by make_kv_cache; the books that say which
//     blocks a sequence owns are host code (kv/block_manager.hpp) and never reach the backend.
//   - The step: Step<Model> holds what a StepPlan becomes on the backend; prepare(step, plan,
//     kv) is called once per step (on a GPU, one upload; on the CPU, a view), performs the
//     plan's block copies, and every op then reads the prepared step (token ids, positions, KV
//     slots, block tables, RoPE table, logit rows), never the host plan.
//   - Logits: a Buffer; copy_to_host is the one explicit device -> host copy of a step.
//   - MoE routing and grouping by expert happen inside moe(): no host round trip per layer.
#pragma once

#include <array>
#include <concepts>
#include <cstdint>

#include "qwen/io/model_config.hpp"
#include "qwen/model/placed_weights.hpp"
#include "qwen/model/qwen3.hpp"
#include "qwen/model/step.hpp"
#include "qwen/model/weights.hpp"

namespace qwen {

// The model-independent part: activation buffers and elementwise ops.
template <class B>
concept Backend = requires(B& b, const B& cb, typename B::template Buffer<typename B::Activation>& buffer, float* p, const float* cp,
                           std::int64_t count) {
  typename B::Activation;
  { b.template allocate<typename B::Activation>(count) } -> std::same_as<typename B::template Buffer<typename B::Activation>>;
  { b.data(buffer) } -> std::same_as<typename B::Activation*>;
  b.copy_to_host(buffer, count, p);
  b.silu_mul(cp, cp, p, count);
  b.add(p, cp, count);
};

// The attention's input side in one op: q_norm and k_norm over each head, RoPE with the step's
// table, and the append of k and v at the step's KV slots (instead of rms_norm, rope, write_kv).
template <class B, class Model, int BlockSize>
concept BackendFusesQkNormRope =
    requires(B& b, typename B::template Step<Model>& step, typename B::template KVCache<BlockSize>& kv, float* p, const float* cp,
             int layer, float eps, typename B::template Vector<typename Model::weight_traits::plain_type> norm) {
      b.qk_norm_rope_write_kv(step, kv, layer, norm, norm, eps, p, cp, cp);
    };

// Everything Qwen3Forward<Model, B, BlockSize> calls: rope + write_kv or the fused op.
template <class B, class Model, int BlockSize>
concept BackendFor =
    Backend<B> && Qwen3Type<Model> &&
    requires(B& b, typename B::template Step<Model>& step, typename B::template KVCache<BlockSize>& kv, const StepPlan& plan,
             const StepLimits& limits, const io::ModelConfig& config, const LinearWeight& lw, const TensorView& tv, float* p,
             const float* cp, std::int64_t n, int layer, float scalar,
             const typename B::template Linear<typename Model::WeightType>& linear,
             const std::array<typename B::template Linear<typename Model::WeightType>, 3>& qkv,
             const std::array<typename B::template Linear<typename Model::WeightType>, 2>& gate_up,
             const typename B::template Linear<typename Model::weight_traits::plain_type>& plain_linear,
             typename B::template Vector<typename Model::weight_traits::plain_type> vector) {
      { b.template place_linear<typename Model::WeightType>(lw) } -> std::same_as<typename B::template Linear<typename Model::WeightType>>;
      { b.template place_vector<typename Model::weight_traits::plain_type>(tv) };
      { b.template make_kv_cache<BlockSize>(layer, layer, layer, layer) } -> std::same_as<typename B::template KVCache<BlockSize>>;
      { b.template make_step<Model>(limits, config) } -> std::same_as<typename B::template Step<Model>>;
      b.prepare(step, plan, kv);
      b.embedding(step, vector, p);
      b.rms_norm(cp, n, n, vector, scalar, p);
      b.linear(cp, n, qkv, std::array<float*, 3>{p, p, p});
      b.linear(cp, n, gate_up, std::array<float*, 2>{p, p});
      b.linear(cp, n, linear, p);
      b.linear(cp, n, plain_linear, p);
      b.attention(step, kv, layer, cp, scalar, p);
      b.gather_logit_rows(step, cp, p);
    } &&
    (BackendFusesQkNormRope<B, Model, BlockSize> ||
     requires(B& b, typename B::template Step<Model>& step, typename B::template KVCache<BlockSize>& kv, float* p, const float* cp,
              int layer) {
       b.rope(step, p, p);
       b.write_kv(step, kv, layer, cp, cp);
     }) &&
    (!Model::is_moe || requires(B& b, typename B::template Step<Model>& step, const typename PlacedWeights<Model, B>::MoE& moe,
                                const float* cp, float* p) { b.moe(step, moe, cp, p); });

}  // namespace qwen

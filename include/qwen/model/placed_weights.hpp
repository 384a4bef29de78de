// A model's weights placed on a backend: the one place where the checkpoint's tensors (io-level
// views with a runtime dtype) become the typed handles the backend's ops read. The element type
// comes from Model::WeightType at compile time; a tensor of another dtype was already refused by
// bind_weights, so the ops never dispatch on a dtype again.
//
//   Linear       Backend::Linear<Model::WeightType>   q/k/v/o and the MLP (fp8: block-scaled)
//   PlainLinear  Backend::Linear<plain_type>          lm_head and the MoE router (never quantized)
//   Vector       Backend::Vector<plain_type>          norms and the embedding table
//
// q, k, v are placed side by side (one fused product reads x once for all three), and so are
// gate and up. On the CPU every handle is a view into the checkpoint's mapping (no copy) except
// the FP8 block scales, which the backend converts once and keeps; placed weights are valid
// while both the Weights' checkpoint and the backend live.
#pragma once

#include <array>
#include <type_traits>
#include <vector>

#include "qwen/model/qwen3.hpp"
#include "qwen/model/weights.hpp"

namespace qwen {

template <Qwen3Type Model, class Backend>
struct PlacedWeights {
  using WeightType = typename Model::WeightType;
  using Plain = typename Model::weight_traits::plain_type;
  using Linear = typename Backend::template Linear<WeightType>;
  using PlainLinear = typename Backend::template Linear<Plain>;
  using Vector = typename Backend::template Vector<Plain>;

  struct Mlp {
    std::array<Linear, 2> gate_up;  // gate_proj, up_proj: [width, hidden] each
    Linear down;                    // [hidden, width]
  };
  struct MoE {
    PlainLinear router;             // [experts, hidden]
    std::vector<Mlp> experts;
  };
  struct Layer {
    Vector input_layernorm, post_attention_layernorm;  // [hidden]
    Vector q_norm, k_norm;                             // [head_dim]
    std::array<Linear, 3> qkv;                         // q_proj, k_proj, v_proj
    Linear o_proj;
    std::conditional_t<Model::is_moe, MoE, Mlp> mlp;
  };

  Vector embed_tokens;  // [vocab, hidden]
  std::vector<Layer> layers;
  Vector norm;          // [hidden]
  PlainLinear lm_head;  // [vocab, hidden]
};

template <Qwen3Type Model, class Backend>
[[nodiscard]] PlacedWeights<Model, Backend> place_weights(Backend& backend, const Weights<Model>& w) {
  using P = PlacedWeights<Model, Backend>;
  using W = typename P::WeightType;
  using Plain = typename P::Plain;
  auto linear = [&](const LinearWeight& l) { return backend.template place_linear<W>(l); };
  auto vector = [&](const TensorView& t) { return backend.template place_vector<Plain>(t); };
  auto mlp = [&](const MlpWeights& m) { return typename P::Mlp{{linear(m.gate_proj), linear(m.up_proj)}, linear(m.down_proj)}; };
  P p;
  p.embed_tokens = vector(w.embed_tokens);
  p.norm = vector(w.norm);
  p.lm_head = backend.template place_linear<Plain>(LinearWeight{w.lm_head, std::nullopt});
  p.layers.reserve(w.layers.size());
  for (const LayerWeights<Model>& l : w.layers) {
    const AttentionWeights& a = l.self_attn;
    typename P::Layer layer{vector(l.input_layernorm), vector(l.post_attention_layernorm), vector(a.q_norm), vector(a.k_norm),
                            {linear(a.q_proj), linear(a.k_proj), linear(a.v_proj)}, linear(a.o_proj), {}};
    if constexpr (Model::is_moe) {
      layer.mlp.router = backend.template place_linear<Plain>(LinearWeight{l.mlp.router, std::nullopt});
      layer.mlp.experts.reserve(l.mlp.experts.size());
      for (const MlpWeights& e : l.mlp.experts) layer.mlp.experts.push_back(mlp(e));
    } else {
      layer.mlp = mlp(l.mlp);
    }
    p.layers.push_back(std::move(layer));
  }
  return p;
}

}  // namespace qwen

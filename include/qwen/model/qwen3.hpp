// The compile-time model type: Qwen3<Arch, Shape, WeightType>.
//
//   using namespace qwen::literals;
//   using M = qwen::Qwen3<qwen::Dense, 8_B, qwen::bf16>;        // Qwen3-8B, bf16 weights
//   using F = qwen::Qwen3<qwen::MoE, 30_B_A3B, qwen::fp8>;      // Qwen3-30B-A3B-FP8
//   using T = qwen::Qwen3<qwen::Dense, shapes::TinyDense{}, qwen::fp32>;  // a user-defined shape
//
// Qwen3 takes the shape as a value (so that 8_B reads naturally); Qwen3Model takes it as a type.
// Invalid combinations fail to compile with a message that says what is wrong.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>

#include "qwen/core/dtype.hpp"
#include "qwen/core/numeric.hpp"
#include "qwen/model/shapes.hpp"

namespace qwen {

// Architecture tags.
struct Dense {
  static constexpr std::string_view name = "Dense";
};
struct MoE {
  static constexpr std::string_view name = "MoE";
};

// Weight-type tag for the official block-scaled FP8 checkpoints: e4m3 weights with one
// scale per 128x128 block (weight_scale_inv). bf16 and fp32 (= float) name plain weights.
struct fp8 {};

template <class W>
struct weight_type_traits {
  static constexpr bool supported = false;
};
template <>
struct weight_type_traits<bf16> {
  static constexpr bool supported = true;
  static constexpr std::string_view name = "bf16";
  static constexpr std::string_view config_dtype = "bfloat16";  // torch_dtype in config.json
  static constexpr DType tensor_dtype = DType::BF16;            // plain (unquantized) tensors
  using plain_type = bf16;                                        // their element type
  static constexpr bool block_fp8 = false;
};
template <>
struct weight_type_traits<float> {
  static constexpr bool supported = true;
  static constexpr std::string_view name = "fp32";
  static constexpr std::string_view config_dtype = "float32";
  static constexpr DType tensor_dtype = DType::F32;
  using plain_type = float;
  static constexpr bool block_fp8 = false;
};
template <>
struct weight_type_traits<fp8> {
  static constexpr bool supported = true;
  static constexpr std::string_view name = "fp8";
  static constexpr std::string_view config_dtype = "bfloat16";  // the unquantized tensors' type
  static constexpr DType tensor_dtype = DType::BF16;
  using plain_type = bf16;
  static constexpr bool block_fp8 = true;
};

namespace detail {
template <class>
inline constexpr bool always_false = false;
}

template <class ArchT, class ShapeT, class WeightT>
struct Qwen3Model {
  static_assert(std::is_same_v<ArchT, Dense> || std::is_same_v<ArchT, MoE>,
                "Qwen3<Arch, Shape, WeightType>: Arch must be qwen::Dense or qwen::MoE");
  static_assert(ModelShape<ShapeT>,
                "Qwen3<Arch, Shape, WeightType>: Shape lacks the shape constants (name, vocab_size, hidden_size, num_layers, "
                "num_heads, num_kv_heads, head_dim, intermediate_size, tie_word_embeddings); see qwen/model/shapes.hpp");
  static_assert(!std::is_same_v<ArchT, MoE> || MoEShape<ShapeT>,
                "Qwen3<MoE, Shape, ...>: Shape is a dense shape (no num_experts, experts_per_token, moe_intermediate_size, "
                "norm_topk_prob); use Qwen3<Dense, ...>");
  static_assert(!std::is_same_v<ArchT, Dense> || !MoEShape<ShapeT>,
                "Qwen3<Dense, Shape, ...>: Shape is a mixture-of-experts shape; use Qwen3<MoE, ...>");
  static_assert(weight_type_traits<WeightT>::supported,
                "Qwen3<Arch, Shape, WeightType>: WeightType must be qwen::bf16, qwen::fp8 (block-scaled) or qwen::fp32");

  using Arch = ArchT;
  using Shape = ShapeT;
  using WeightType = WeightT;
  using weight_traits = weight_type_traits<WeightT>;
  static constexpr bool is_moe = std::is_same_v<ArchT, MoE>;

  static constexpr int vocab_size = Shape::vocab_size;
  static constexpr int hidden_size = Shape::hidden_size;
  static constexpr int num_layers = Shape::num_layers;
  static constexpr int num_heads = Shape::num_heads;
  static constexpr int num_kv_heads = Shape::num_kv_heads;
  static constexpr int head_dim = Shape::head_dim;
  static constexpr int intermediate_size = Shape::intermediate_size;
  static constexpr bool tie_word_embeddings = Shape::tie_word_embeddings;
  static constexpr int q_size = num_heads * head_dim;    // q_proj output width
  static constexpr int kv_size = num_kv_heads * head_dim;  // k_proj / v_proj output width
  static constexpr int group_size = num_kv_heads > 0 ? num_heads / num_kv_heads : 0;  // query heads per KV head

  static_assert(vocab_size > 0 && hidden_size > 0 && num_layers > 0 && num_heads > 0 && num_kv_heads > 0 && head_dim > 0 &&
                    intermediate_size > 0,
                "Qwen3: every shape dimension must be positive");
  static_assert(num_heads % num_kv_heads == 0, "Qwen3: num_heads must be a multiple of num_kv_heads (grouped-query attention)");
  static_assert(head_dim % 2 == 0, "Qwen3: head_dim must be even (RoPE rotates pairs)");

  [[nodiscard]] static std::string name() {
    return std::string("Qwen3<") + std::string(Arch::name) + ", " + std::string(Shape::name) + ", " +
           std::string(weight_traits::name) + ">";
  }
};

// The MoE-only constants, available as moe_dims<Model>::num_experts etc.
template <class Model>
  requires Model::is_moe
struct moe_dims {
  static constexpr int num_experts = Model::Shape::num_experts;
  static constexpr int experts_per_token = Model::Shape::experts_per_token;
  static constexpr int moe_intermediate_size = Model::Shape::moe_intermediate_size;
  static constexpr bool norm_topk_prob = Model::Shape::norm_topk_prob;
  static_assert(num_experts > 0 && experts_per_token > 0 && moe_intermediate_size > 0, "Qwen3<MoE>: expert dimensions must be positive");
  static_assert(experts_per_token <= num_experts, "Qwen3<MoE>: experts_per_token exceeds num_experts");
};

template <class ArchT, auto ShapeValue, class WeightT>
using Qwen3 = Qwen3Model<ArchT, std::remove_cvref_t<decltype(ShapeValue)>, WeightT>;

template <class T>
inline constexpr bool is_qwen3_model = false;
template <class A, class S, class W>
inline constexpr bool is_qwen3_model<Qwen3Model<A, S, W>> = true;

template <class T>
concept Qwen3Type = is_qwen3_model<T>;

}  // namespace qwen

// Binding a checkpoint's tensors to the weights of a model type. Names follow Hugging Face
// (model.layers.{i}.self_attn.q_proj.weight, ...). Every tensor is checked for presence, dtype
// and shape; a tensor the model does not use is an error too. The views point into the
// checkpoint's mapped files: no copy is made, and the Checkpoint must outlive the Weights.
// Every WeightError starts with the file holding the tensor (or the directory when it is absent).
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/core/tensor.hpp"
#include "qwen/io/checkpoint.hpp"
#include "qwen/model/qwen3.hpp"

namespace qwen {

// A Linear layer's weight [out, in]. For block-FP8 checkpoints `weight` is F8_E4M3 and
// `scale_inv` holds one BF16/F32 scale per 128x128 block: [ceil(out/128), ceil(in/128)].
struct LinearWeight {
  TensorView weight;
  std::optional<TensorView> scale_inv;
  [[nodiscard]] bool block_fp8() const noexcept { return scale_inv.has_value(); }
};

struct AttentionWeights {
  LinearWeight q_proj;  // [heads * head_dim, hidden]
  LinearWeight k_proj;  // [kv_heads * head_dim, hidden]
  LinearWeight v_proj;  // [kv_heads * head_dim, hidden]
  LinearWeight o_proj;  // [hidden, heads * head_dim]
  TensorView q_norm;    // [head_dim], shared by all query heads
  TensorView k_norm;    // [head_dim]
};

struct MlpWeights {
  LinearWeight gate_proj;  // [intermediate, hidden]
  LinearWeight up_proj;    // [intermediate, hidden]
  LinearWeight down_proj;  // [hidden, intermediate]
};

struct MoEWeights {
  TensorView router;                // mlp.gate.weight [experts, hidden], never quantized
  std::vector<MlpWeights> experts;  // each [moe_intermediate, hidden] / [hidden, moe_intermediate]
};

template <Qwen3Type Model>
struct LayerWeights {
  TensorView input_layernorm;  // [hidden]
  AttentionWeights self_attn;
  TensorView post_attention_layernorm;  // [hidden]
  std::conditional_t<Model::is_moe, MoEWeights, MlpWeights> mlp;
};

template <Qwen3Type Model>
struct Weights {
  TensorView embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights<Model>> layers;
  TensorView norm;     // [hidden]
  TensorView lm_head;  // [vocab, hidden]; the embed_tokens view when tied
  bool lm_head_tied = false;
};

namespace detail {

inline constexpr std::int64_t fp8_block = 128;

[[nodiscard]] inline std::string expected_string(DType dtype, const Shape& shape) {
  return std::string(dtype_name(dtype)) + " " + shape_string(shape);
}

// Looks tensors up by name, checks them, and remembers which were used.
class TensorBinder {
 public:
  TensorBinder(const io::Checkpoint& checkpoint, std::string model_name)
      : checkpoint_(checkpoint), model_name_(std::move(model_name)) {}

  // A tensor that must exist with exactly this dtype and shape.
  TensorView plain(const std::string& name, DType dtype, const Shape& shape) {
    require(name, dtype, shape);
    return take(name);
  }

  // A Linear weight [out, in]. With fp8 allowed, a weight that has a weight_scale_inv beside it
  // must be F8_E4M3 with BF16/F32 block scales; one without stays `plain_dtype` (unquantized).
  LinearWeight linear(const std::string& prefix, std::int64_t out, std::int64_t in, DType plain_dtype, bool allow_fp8) {
    const std::string weight = prefix + ".weight";
    const std::string scale = prefix + ".weight_scale_inv";
    LinearWeight w;
    if (allow_fp8 && checkpoint_.contains(scale)) {
      require(weight, DType::F8_E4M3, {out, in});
      const Shape scale_shape{(out + fp8_block - 1) / fp8_block, (in + fp8_block - 1) / fp8_block};
      const DType scale_dtype = checkpoint_.info(scale).dtype;
      if (scale_dtype != DType::BF16 && scale_dtype != DType::F32)
        throw_error<WeightError>(file_of(scale), ": tensor '", scale, "' has dtype ", dtype_name(scale_dtype),
                                 ", expected BF16 or F32 ", shape_string(scale_shape));
      require(scale, scale_dtype, scale_shape);
      w.weight = take(weight);
      w.scale_inv = take(scale);
    } else {
      w.weight = plain(weight, plain_dtype, {out, in});
    }
    return w;
  }

  // A tensor that must, if present, hold exactly the bytes of `same_as` (already taken): a tied
  // lm_head.weight that some writers store anyway. It is then marked used and not bound.
  void optional_duplicate(const std::string& name, const std::string& same_as, const TensorView& bound, const char* why) {
    if (!checkpoint_.contains(name)) return;
    const io::TensorInfo& info = checkpoint_.info(name);
    const TensorView view = checkpoint_.view(name);
    const bool same = info.dtype == bound.dtype && info.shape == bound.shape &&
                      std::equal(view.data, view.data + view.nbytes(), bound.data, bound.data + bound.nbytes());
    if (!same)
      throw_error<WeightError>(file_of(name), ": tensor '", name, "' (", expected_string(info.dtype, info.shape),
                               ") differs from '", same_as, "' (", expected_string(bound.dtype, bound.shape), "), but ", why,
                               "; remove it or set tie_word_embeddings to false");
    used_.insert(name);
  }

  // Every tensor of the checkpoint must have been used.
  void finish() const {
    std::vector<std::string> extra;
    for (const std::string& name : checkpoint_.tensor_names())
      if (!used_.contains(name)) extra.push_back(name);
    if (extra.empty()) return;
    std::string list;
    for (std::size_t i = 0; i < extra.size() && i < 5; ++i) list += (i ? ", '" : "'") + extra[i] + "' (" + file_of(extra[i]) + ")";
    if (extra.size() > 5) list += detail::cat(" and ", extra.size() - 5, " more");
    throw_error<WeightError>(checkpoint_.dir().string(), ": ", extra.size(), " unexpected tensor", extra.size() > 1 ? "s" : "",
                             " not used by ", model_name_, ": ", list);
  }

 private:
  void require(const std::string& name, DType dtype, const Shape& shape) const {
    if (!checkpoint_.contains(name))
      throw_error<WeightError>(checkpoint_.dir().string(), ": missing tensor '", name, "' (expected ",
                               expected_string(dtype, shape), " for ", model_name_, ")");
    const io::TensorInfo& info = checkpoint_.info(name);
    if (info.shape != shape)
      throw_error<WeightError>(file_of(name), ": tensor '", name, "' has shape ", shape_string(info.shape), ", expected ",
                               shape_string(shape), " for ", model_name_);
    if (info.dtype != dtype)
      throw_error<WeightError>(file_of(name), ": tensor '", name, "' has dtype ", dtype_name(info.dtype), ", expected ",
                               dtype_name(dtype), " for ", model_name_);
  }
  // Kernels read elements through typed pointers, so a view must be aligned to its element
  // size. Files written by the reference library always are (it orders tensors by dtype size).
  TensorView take(const std::string& name) {
    used_.insert(name);
    TensorView view = checkpoint_.view(name);
    const std::size_t element = dtype_size(view.dtype);
    if (reinterpret_cast<std::uintptr_t>(view.data) % element != 0)
      throw_error<WeightError>(file_of(name), ": tensor '", name, "' starts at a byte offset that is not a multiple of its ",
                               element, "-byte element size");
    return view;
  }
  [[nodiscard]] std::string file_of(const std::string& name) const { return checkpoint_.file_of(name).string(); }

  const io::Checkpoint& checkpoint_;
  std::string model_name_;
  std::set<std::string> used_;
};

}  // namespace detail

// Binds every tensor of `checkpoint` to Model's weights; WeightError names the first missing,
// mis-shaped or mistyped tensor (with the expected dtype and shape), or the unexpected ones.
template <Qwen3Type Model>
[[nodiscard]] Weights<Model> bind_weights(const io::Checkpoint& checkpoint) {
  using W = typename Model::weight_traits;
  constexpr DType plain = W::tensor_dtype;
  constexpr bool fp8 = W::block_fp8;
  constexpr std::int64_t hidden = Model::hidden_size;
  detail::TensorBinder bind(checkpoint, Model::name());

  Weights<Model> w;
  w.embed_tokens = bind.plain("model.embed_tokens.weight", plain, {Model::vocab_size, hidden});
  w.layers.resize(Model::num_layers);
  for (int i = 0; i < Model::num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    LayerWeights<Model>& layer = w.layers[static_cast<std::size_t>(i)];
    layer.input_layernorm = bind.plain(p + ".input_layernorm.weight", plain, {hidden});
    layer.post_attention_layernorm = bind.plain(p + ".post_attention_layernorm.weight", plain, {hidden});
    AttentionWeights& a = layer.self_attn;
    a.q_proj = bind.linear(p + ".self_attn.q_proj", Model::q_size, hidden, plain, fp8);
    a.k_proj = bind.linear(p + ".self_attn.k_proj", Model::kv_size, hidden, plain, fp8);
    a.v_proj = bind.linear(p + ".self_attn.v_proj", Model::kv_size, hidden, plain, fp8);
    a.o_proj = bind.linear(p + ".self_attn.o_proj", hidden, Model::q_size, plain, fp8);
    a.q_norm = bind.plain(p + ".self_attn.q_norm.weight", plain, {std::int64_t{Model::head_dim}});
    a.k_norm = bind.plain(p + ".self_attn.k_norm.weight", plain, {std::int64_t{Model::head_dim}});
    auto mlp = [&](const std::string& prefix, std::int64_t width) {
      MlpWeights m;
      m.gate_proj = bind.linear(prefix + ".gate_proj", width, hidden, plain, fp8);
      m.up_proj = bind.linear(prefix + ".up_proj", width, hidden, plain, fp8);
      m.down_proj = bind.linear(prefix + ".down_proj", hidden, width, plain, fp8);
      return m;
    };
    if constexpr (Model::is_moe) {
      using moe = moe_dims<Model>;
      layer.mlp.router = bind.plain(p + ".mlp.gate.weight", plain, {moe::num_experts, hidden});
      layer.mlp.experts.reserve(moe::num_experts);
      for (int e = 0; e < moe::num_experts; ++e)
        layer.mlp.experts.push_back(mlp(p + ".mlp.experts." + std::to_string(e), moe::moe_intermediate_size));
    } else {
      layer.mlp = mlp(p + ".mlp", Model::intermediate_size);
    }
  }
  w.norm = bind.plain("model.norm.weight", plain, {hidden});
  if constexpr (Model::tie_word_embeddings) {
    // Tied: the output projection is embed_tokens. transformers ties the two after loading, so
    // a stored lm_head.weight is never used; accept it only when it holds the same bytes, since
    // a different one means the file and tie_word_embeddings disagree about the model.
    w.lm_head = w.embed_tokens;
    w.lm_head_tied = true;
    bind.optional_duplicate("lm_head.weight", "model.embed_tokens.weight", w.embed_tokens,
                            "config.json ties them (tie_word_embeddings true)");
  } else {
    w.lm_head = bind.plain("lm_head.weight", plain, {Model::vocab_size, hidden});
  }
  bind.finish();
  return w;
}

}  // namespace qwen

// Checks a parsed config.json against a compiled model type. Every disagreement names the
// field and both values; all of them are reported at once.
#pragma once

#include <string>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/io/model_config.hpp"
#include "qwen/model/qwen3.hpp"

namespace qwen {

struct ConfigMismatch {
  std::string field;
  std::string have;      // the value in config.json
  std::string expected;  // the value the type requires
};

template <Qwen3Type Model>
[[nodiscard]] std::vector<ConfigMismatch> config_mismatches(const io::ModelConfig& c) {
  std::vector<ConfigMismatch> out;
  auto compare = [&](const std::string& field, const auto& have, const auto& expected) {
    if (have != expected) out.push_back({field, detail::cat(std::boolalpha, have), detail::cat(std::boolalpha, expected)});
  };
  compare("model_type", c.model_type, std::string(Model::is_moe ? "qwen3_moe" : "qwen3"));
  compare("vocab_size", c.vocab_size, Model::vocab_size);
  compare("hidden_size", c.hidden_size, Model::hidden_size);
  compare("num_hidden_layers", c.num_hidden_layers, Model::num_layers);
  compare("num_attention_heads", c.num_attention_heads, Model::num_heads);
  compare("num_key_value_heads", c.num_key_value_heads, Model::num_kv_heads);
  compare("head_dim", c.head_dim, Model::head_dim);
  if constexpr (Model::is_moe) {
    // intermediate_size is present in MoE configs but unused: every layer is an MoE layer.
    using moe = moe_dims<Model>;
    compare("num_experts", c.num_experts, moe::num_experts);
    compare("num_experts_per_tok", c.num_experts_per_tok, moe::experts_per_token);
    compare("moe_intermediate_size", c.moe_intermediate_size, moe::moe_intermediate_size);
    compare("norm_topk_prob", c.norm_topk_prob, moe::norm_topk_prob);
  } else {
    compare("intermediate_size", c.intermediate_size, Model::intermediate_size);
  }
  compare("tie_word_embeddings", c.tie_word_embeddings, Model::tie_word_embeddings);
  using W = typename Model::weight_traits;
  // Named as config.json spells it; a config that states no dtype is checked by the tensors'
  // dtypes when the weights are bound (and cannot be dispatched: see registry.hpp).
  if (c.dtype)
    compare(c.dtype_inferred ? "dtype (inferred from model.embed_tokens.weight)" : c.dtype_key.empty() ? "dtype" : c.dtype_key,
            *c.dtype, std::string(W::config_dtype));
  const std::string quant = c.fp8 ? "fp8 [128, 128] blocks" : "none";
  compare("quantization_config", quant, std::string(W::block_fp8 ? "fp8 [128, 128] blocks" : "none"));
  return out;
}

[[nodiscard]] inline std::string describe(const std::vector<ConfigMismatch>& mismatches) {
  std::string s;
  for (const ConfigMismatch& m : mismatches) {
    if (!s.empty()) s += "; ";
    s += "field '" + m.field + "' is " + m.have + ", expected " + m.expected;
  }
  return s;
}

// Throws ConfigError unless config.json describes exactly Model.
template <Qwen3Type Model>
void validate_config(const io::ModelConfig& c) {
  if (auto m = config_mismatches<Model>(c); !m.empty())
    throw_error<ConfigError>(c.file, ": does not match ", Model::name(), ": ", describe(m));
}

}  // namespace qwen

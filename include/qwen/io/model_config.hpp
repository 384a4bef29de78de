// config.json of a Qwen3 / Qwen3-MoE checkpoint, parsed and checked for values this toolkit
// can run. Checking it against a compiled model type is model/validate.hpp's job.
//
// Both spellings that Hugging Face writes are accepted: the one of the official checkpoints
// (transformers 4.x: "torch_dtype", "rope_theta" + "rope_scaling", "num_experts") and the one
// of transformers 5 ("dtype", "rope_parameters", "num_local_experts").
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/io/json_file.hpp"

namespace qwen::io {

// YaRN context extension (rope_type "yarn").
struct YarnScaling {
  double factor = 1.0;
  std::int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  std::optional<double> attention_factor;  // default 0.1 * ln(factor) + 1
};

// The official block-wise FP8 layout.
struct Fp8Quantization {
  std::string activation_scheme;  // "dynamic"
  int block_rows = 128;           // weight_block_size[0]
  int block_cols = 128;           // weight_block_size[1]
};

struct ModelConfig {
  std::string file;  // where it was read from, for messages
  std::string model_type;  // "qwen3" or "qwen3_moe"
  bool is_moe = false;

  int vocab_size = 0;
  int hidden_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;
  int intermediate_size = 0;  // dense MLP width (present but unused in MoE configs)
  bool tie_word_embeddings = false;
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 1e6;
  std::optional<YarnScaling> yarn;
  std::optional<std::string> dtype;  // "bfloat16", "float32", ... (absent in some writers)

  // MoE only.
  int num_experts = 0;
  int num_experts_per_tok = 0;
  int moe_intermediate_size = 0;
  bool norm_topk_prob = false;

  std::optional<Fp8Quantization> fp8;
  std::vector<std::int64_t> eos_token_ids;
  std::optional<std::int64_t> bos_token_id;
};

namespace detail {

inline void check(bool ok, const std::string& file, const auto&... what) {
  if (!ok) throw_error<ConfigError>(file, ": ", what...);
}

inline void read_rope(const JsonObject& cfg, ModelConfig& out) {
  // transformers 5: {"rope_parameters": {"rope_type": ..., "rope_theta": ..., yarn fields}}.
  // transformers 4: "rope_theta" at top level and "rope_scaling" null or {"rope_type"|"type": ...}.
  std::optional<JsonObject> params = cfg.optional_object("rope_parameters");
  std::optional<JsonObject> scaling = params ? params : cfg.optional_object("rope_scaling");
  if (params) {
    out.rope_theta = params->number("rope_theta");
  } else {
    out.rope_theta = cfg.optional_number("rope_theta").value_or(10000.0);
  }
  check(std::isfinite(out.rope_theta) && out.rope_theta > 1.0, cfg.file(), "field 'rope_theta' must be a finite number > 1, got ",
        out.rope_theta);
  if (!scaling) return;
  std::string type = scaling->optional_string("rope_type").value_or(scaling->optional_string("type").value_or("default"));
  if (type == "default") return;
  if (type != "yarn")
    throw_error<ConfigError>(scaling->file(), ": rope_type '", type, "' is not supported (supported: default, yarn)");
  YarnScaling y;
  y.factor = scaling->number("factor");
  y.original_max_position_embeddings = scaling->integer("original_max_position_embeddings");
  y.beta_fast = scaling->optional_number("beta_fast").value_or(32.0);
  y.beta_slow = scaling->optional_number("beta_slow").value_or(1.0);
  y.attention_factor = scaling->optional_number("attention_factor");
  check(std::isfinite(y.factor) && y.factor >= 1.0, scaling->file(), "field 'factor' must be >= 1, got ", y.factor);
  check(y.original_max_position_embeddings > 0, scaling->file(), "field 'original_max_position_embeddings' must be positive, got ",
        y.original_max_position_embeddings);
  check(std::isfinite(y.beta_fast) && std::isfinite(y.beta_slow) && y.beta_fast > y.beta_slow && y.beta_slow > 0,
        scaling->file(), "beta_fast (", y.beta_fast, ") must exceed beta_slow (", y.beta_slow, ") > 0");
  if (y.attention_factor)
    check(std::isfinite(*y.attention_factor) && *y.attention_factor > 0, scaling->file(),
          "field 'attention_factor' must be positive, got ", *y.attention_factor);
  out.yarn = y;
}

inline void read_quantization(const JsonObject& cfg, ModelConfig& out) {
  std::optional<JsonObject> q = cfg.optional_object("quantization_config");
  if (!q) return;
  const std::string method = q->string("quant_method");
  if (method != "fp8")
    throw_error<ConfigError>(q->file(), ": quant_method '", method, "' is not supported (supported: fp8 block-wise)");
  if (auto fmt = q->optional_string("fmt"); fmt && *fmt != "e4m3")
    throw_error<ConfigError>(q->file(), ": field 'fmt' is '", *fmt, "', only 'e4m3' is supported");
  Fp8Quantization f;
  f.activation_scheme = q->optional_string("activation_scheme").value_or("dynamic");
  if (f.activation_scheme != "dynamic")
    throw_error<ConfigError>(q->file(), ": field 'activation_scheme' is '", f.activation_scheme, "', only 'dynamic' is supported");
  const json& block = q->raw().contains("weight_block_size") ? q->raw()["weight_block_size"] : json();
  if (!block.is_array() || block.size() != 2 || !block[0].is_number_integer() || !block[1].is_number_integer())
    throw_error<ConfigError>(q->file(), ": field 'weight_block_size' must be [rows, cols], got ", block.dump(),
                             " (per-tensor FP8 is not supported)");
  f.block_rows = block[0].get<int>();
  f.block_cols = block[1].get<int>();
  if (f.block_rows != 128 || f.block_cols != 128)
    throw_error<ConfigError>(q->file(), ": field 'weight_block_size' is [", f.block_rows, ", ", f.block_cols,
                             "], only [128, 128] is supported");
  out.fp8 = f;
}

}  // namespace detail

// Parses an already-read config.json object. `file` names it in messages.
[[nodiscard]] inline ModelConfig parse_model_config(const json& root, const std::string& file) {
  const JsonObject cfg(root, file);
  ModelConfig c;
  c.file = file;
  c.model_type = cfg.string("model_type");
  if (c.model_type != "qwen3" && c.model_type != "qwen3_moe")
    throw_error<ConfigError>(file, ": model_type '", c.model_type, "' is not a Qwen3 model (expected qwen3 or qwen3_moe)");
  c.is_moe = c.model_type == "qwen3_moe";

  c.vocab_size = cfg.positive_int("vocab_size");
  c.hidden_size = cfg.positive_int("hidden_size");
  c.num_hidden_layers = cfg.positive_int("num_hidden_layers");
  c.num_attention_heads = cfg.positive_int("num_attention_heads");
  c.num_key_value_heads = cfg.optional_positive_int("num_key_value_heads").value_or(c.num_attention_heads);
  c.head_dim = cfg.optional_positive_int("head_dim").value_or(c.hidden_size / c.num_attention_heads);
  c.intermediate_size = cfg.positive_int("intermediate_size");
  c.tie_word_embeddings = cfg.optional_boolean("tie_word_embeddings").value_or(false);
  c.max_position_embeddings = cfg.positive_int("max_position_embeddings");
  c.rms_norm_eps = cfg.optional_number("rms_norm_eps").value_or(1e-6);
  detail::check(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0 && c.rms_norm_eps < 1, file,
                "field 'rms_norm_eps' must be in (0, 1), got ", c.rms_norm_eps);
  detail::check(c.num_attention_heads % c.num_key_value_heads == 0, file, "num_attention_heads (", c.num_attention_heads,
                ") is not a multiple of num_key_value_heads (", c.num_key_value_heads, ")");
  c.dtype = cfg.has("torch_dtype") ? cfg.optional_string("torch_dtype") : cfg.optional_string("dtype");

  // Features Qwen3 never uses; a config that turns them on is not one we can run faithfully.
  if (auto act = cfg.optional_string("hidden_act"); act && *act != "silu")
    throw_error<ConfigError>(file, ": field 'hidden_act' is '", *act, "', only 'silu' is supported");
  if (cfg.optional_boolean("attention_bias").value_or(false))
    throw_error<ConfigError>(file, ": field 'attention_bias' is true; Qwen3 attention has no biases");
  if (cfg.optional_boolean("use_sliding_window").value_or(false))
    throw_error<ConfigError>(file, ": field 'use_sliding_window' is true; sliding-window attention is not supported");

  detail::read_rope(cfg, c);
  detail::read_quantization(cfg, c);

  if (c.is_moe) {
    auto experts = cfg.optional_positive_int("num_experts");
    c.num_experts = experts ? *experts : cfg.positive_int("num_local_experts");
    c.num_experts_per_tok = cfg.positive_int("num_experts_per_tok");
    c.moe_intermediate_size = cfg.positive_int("moe_intermediate_size");
    c.norm_topk_prob = cfg.optional_boolean("norm_topk_prob").value_or(false);
    detail::check(c.num_experts_per_tok <= c.num_experts, file, "num_experts_per_tok (", c.num_experts_per_tok,
                  ") exceeds num_experts (", c.num_experts, ")");
    if (auto step = cfg.optional_integer("decoder_sparse_step"); step && *step != 1)
      throw_error<ConfigError>(file, ": field 'decoder_sparse_step' is ", *step, "; only 1 (every layer MoE) is supported");
    if (cfg.has("mlp_only_layers")) {
      const json& dense_layers = cfg.raw()["mlp_only_layers"];
      if (!dense_layers.is_array()) cfg.bad_type("mlp_only_layers", dense_layers, "a list");
      if (!dense_layers.empty())
        throw_error<ConfigError>(file, ": field 'mlp_only_layers' is ", dense_layers.dump(),
                                 "; mixing dense and MoE layers is not supported");
    }
  }
  c.eos_token_ids = cfg.integer_list("eos_token_id");
  c.bos_token_id = cfg.optional_integer("bos_token_id");
  return c;
}

// Reads DIR/config.json (or a config.json path).
[[nodiscard]] inline ModelConfig read_model_config(const std::filesystem::path& path) {
  const std::filesystem::path file = std::filesystem::is_directory(path) ? path / "config.json" : path;
  return parse_model_config(read_json_file(file), file.string());
}

}  // namespace qwen::io

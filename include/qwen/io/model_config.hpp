// config.json of a Qwen3 / Qwen3-MoE checkpoint, parsed and checked for values this toolkit
// can run. Checking it against a compiled model type is model/validate.hpp's job.
//
// Both spellings that Hugging Face writes are accepted: the one of the official checkpoints
// (transformers 4.x: "torch_dtype", "rope_theta" + "rope_scaling", "num_experts") and the one
// of transformers 5 ("dtype", "rope_parameters", "num_local_experts", "layer_types").
// A key that would change the computation and is not implemented (mscale, partial rotary
// factor, sliding windows, dense layers in an MoE, ...) is an error naming it, never ignored.
// Every integer is range-checked (JsonObject): nothing wraps or truncates.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/io/json_file.hpp"
#include "qwen/io/path_status.hpp"

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
  std::string dtype_key;             // the key config.json states it with: "dtype" or "torch_dtype"; "" when absent
  bool dtype_inferred = false;       // dtype read from the checkpoint's tensors (io::read_checkpoint_config)

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

// partial_rotary_factor < 1 rotates only part of each head; Qwen3 rotates all of it.
inline void check_partial_rotary_factor(const JsonObject& object) {
  if (auto f = object.optional_number("partial_rotary_factor"); f && *f != 1.0)
    throw_error<ConfigError>(object.file(), ": field 'partial_rotary_factor' is ", *f,
                             "; only 1 (RoPE over the whole head) is supported");
}

inline void read_rope(const JsonObject& cfg, ModelConfig& out) {
  // Which object holds the RoPE parameters follows transformers 5.23 (modeling_rope_utils.py,
  // RotaryEmbeddingConfigMixin.convert_rope_params_to_dict: `rope_scaling or rope_parameters`):
  // a non-empty "rope_scaling" (the 4.x spelling) wins over "rope_parameters"; a "rope_theta"
  // inside it wins over the top-level one, which defaults to 10000 (default_theta).
  std::optional<JsonObject> rope = cfg.optional_object("rope_scaling");
  if (!rope || rope->raw().empty()) rope = cfg.optional_object("rope_parameters");
  const double top_theta = cfg.optional_number("rope_theta").value_or(10000.0);
  out.rope_theta = rope ? rope->optional_number("rope_theta").value_or(top_theta) : top_theta;
  check(std::isfinite(out.rope_theta) && out.rope_theta > 1.0, cfg.file(), "field 'rope_theta' must be a finite number > 1, got ",
        out.rope_theta);
  check_partial_rotary_factor(cfg);
  if (!rope) return;
  check_partial_rotary_factor(*rope);

  const std::string type = rope->optional_string("rope_type").value_or(rope->optional_string("type").value_or("default"));
  if (type != "default" && type != "yarn")
    throw_error<ConfigError>(rope->file(), ": rope_type '", type, "' is not supported (supported: default, yarn)");
  const bool yarn = type == "yarn";

  // Every key must be one we implement: an ignored key would silently change the positions.
  for (const char* key : {"mscale", "mscale_all_dim"})
    if (yarn && rope->has(key))
      throw_error<ConfigError>(rope->file(), ": field '", key,
                               "' is not supported (it changes YaRN's attention factor; give 'attention_factor' instead)");
  std::string unknown;
  for (const auto& item : rope->raw().items()) {
    const std::string& key = item.key();  // not a structured binding: lambdas capture it (clang < 16 cannot)
    static constexpr std::string_view common[] = {"rope_type", "type", "rope_theta", "partial_rotary_factor"};
    static constexpr std::string_view yarn_keys[] = {"factor",    "original_max_position_embeddings", "attention_factor",
                                                     "beta_fast", "beta_slow",                        "truncate",
                                                     "mscale",    "mscale_all_dim"};
    const auto in = [&](const auto& list) { return std::find(std::begin(list), std::end(list), key) != std::end(list); };
    if (!in(common) && !(yarn && in(yarn_keys))) unknown += (unknown.empty() ? "'" : ", '") + key + "'";
  }
  if (!unknown.empty())
    throw_error<ConfigError>(rope->file(), ": unsupported key(s) ", unknown, " for rope_type '", type, "'");
  if (!yarn) return;

  if (!rope->optional_boolean("truncate").value_or(true))
    throw_error<ConfigError>(rope->file(), ": field 'truncate' is false; only the truncated YaRN correction range is supported");
  YarnScaling y;
  y.factor = rope->number("factor");
  // transformers lets a top-level original_max_position_embeddings override the one in the RoPE
  // parameters (standardize_rope_params); refuse a disagreement rather than pick one.
  const auto top_original = cfg.optional_integer("original_max_position_embeddings");
  const auto rope_original = rope->optional_integer("original_max_position_embeddings");
  if (top_original && rope_original && *top_original != *rope_original)
    throw_error<ConfigError>(cfg.file(), ": field 'original_max_position_embeddings' is ", *top_original, " but ", rope->file(),
                             " has ", *rope_original);
  y.original_max_position_embeddings = rope_original  ? *rope_original
                                       : top_original ? *top_original
                                                      : rope->integer("original_max_position_embeddings");
  y.beta_fast = rope->optional_number("beta_fast").value_or(32.0);
  y.beta_slow = rope->optional_number("beta_slow").value_or(1.0);
  y.attention_factor = rope->optional_number("attention_factor");
  check(std::isfinite(y.factor) && y.factor >= 1.0, rope->file(), "field 'factor' must be >= 1, got ", y.factor);
  check(y.original_max_position_embeddings > 0, rope->file(), "field 'original_max_position_embeddings' must be positive, got ",
        y.original_max_position_embeddings);
  check(std::isfinite(y.beta_fast) && std::isfinite(y.beta_slow) && y.beta_fast > y.beta_slow && y.beta_slow > 0,
        rope->file(), "beta_fast (", y.beta_fast, ") must exceed beta_slow (", y.beta_slow, ") > 0");
  if (y.attention_factor)
    check(std::isfinite(*y.attention_factor) && *y.attention_factor > 0, rope->file(),
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
  const auto block = q->optional_integer_array("weight_block_size", 1, std::numeric_limits<int>::max());
  if (!block || block->size() != 2)
    throw_error<ConfigError>(q->file(), ": field 'weight_block_size' must be [rows, cols], got ",
                             block ? json_preview(*q->value("weight_block_size")) : std::string("nothing"),
                             " (per-tensor FP8 is not supported)");
  f.block_rows = static_cast<int>((*block)[0]);
  f.block_cols = static_cast<int>((*block)[1]);
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
  // Both required: transformers' defaults for them (Qwen3Config: head_dim 128, kv heads 32 or
  // num_attention_heads when null) are not what a derived guess would give; official configs
  // always state them.
  c.num_key_value_heads = cfg.positive_int("num_key_value_heads");
  c.head_dim = cfg.positive_int("head_dim");
  c.intermediate_size = cfg.positive_int("intermediate_size");
  c.tie_word_embeddings = cfg.optional_boolean("tie_word_embeddings").value_or(false);
  c.max_position_embeddings = cfg.positive_int("max_position_embeddings");
  c.rms_norm_eps = cfg.optional_number("rms_norm_eps").value_or(1e-6);
  detail::check(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0 && c.rms_norm_eps < 1, file,
                "field 'rms_norm_eps' must be in (0, 1), got ", c.rms_norm_eps);
  detail::check(c.num_attention_heads % c.num_key_value_heads == 0, file, "num_attention_heads (", c.num_attention_heads,
                ") is not a multiple of num_key_value_heads (", c.num_key_value_heads, ")");
  // transformers 5 reads "dtype" and falls back to the older "torch_dtype"; two different values
  // would load differently in transformers 4 and 5, so they are refused.
  const auto dtype = cfg.optional_string("dtype");
  const auto torch_dtype = cfg.optional_string("torch_dtype");
  if (dtype && torch_dtype && *dtype != *torch_dtype)
    throw_error<ConfigError>(file, ": field 'dtype' is '", *dtype, "' but field 'torch_dtype' is '", *torch_dtype, "'");
  c.dtype = dtype ? dtype : torch_dtype;
  c.dtype_key = dtype ? "dtype" : torch_dtype ? "torch_dtype" : "";

  // Features Qwen3 never uses; a config that turns them on is not one we can run faithfully.
  if (auto act = cfg.optional_string("hidden_act"); act && *act != "silu")
    throw_error<ConfigError>(file, ": field 'hidden_act' is '", *act, "', only 'silu' is supported");
  if (cfg.optional_boolean("attention_bias").value_or(false))
    throw_error<ConfigError>(file, ": field 'attention_bias' is true; Qwen3 attention has no biases");
  if (cfg.optional_boolean("use_sliding_window").value_or(false))
    throw_error<ConfigError>(file, ": field 'use_sliding_window' is true; sliding-window attention is not supported");
  if (auto layer_types = cfg.optional_string_array("layer_types")) {  // written by transformers 5
    if (layer_types->size() != static_cast<std::size_t>(c.num_hidden_layers))
      throw_error<ConfigError>(file, ": field 'layer_types' lists ", layer_types->size(), " layers, but num_hidden_layers is ",
                               c.num_hidden_layers);
    for (std::size_t i = 0; i < layer_types->size(); ++i)
      if ((*layer_types)[i] != "full_attention")
        throw_error<ConfigError>(file, ": field 'layer_types[", i, "]' is '", (*layer_types)[i],
                                 "'; only 'full_attention' is supported");
  }

  detail::read_rope(cfg, c);
  detail::read_quantization(cfg, c);

  if (c.is_moe) {
    const auto experts = cfg.optional_positive_int("num_experts");
    const auto local_experts = cfg.optional_positive_int("num_local_experts");  // the transformers 5 name
    if (experts && local_experts && *experts != *local_experts)
      throw_error<ConfigError>(file, ": field 'num_experts' is ", *experts, " but field 'num_local_experts' is ", *local_experts);
    c.num_experts = experts ? *experts : cfg.positive_int("num_local_experts");
    c.num_experts_per_tok = cfg.positive_int("num_experts_per_tok");
    c.moe_intermediate_size = cfg.positive_int("moe_intermediate_size");
    c.norm_topk_prob = cfg.optional_boolean("norm_topk_prob").value_or(false);
    detail::check(c.num_experts_per_tok <= c.num_experts, file, "num_experts_per_tok (", c.num_experts_per_tok,
                  ") exceeds num_experts (", c.num_experts, ")");
    if (auto step = cfg.optional_integer("decoder_sparse_step"); step && *step != 1)
      throw_error<ConfigError>(file, ": field 'decoder_sparse_step' is ", *step, "; only 1 (every layer MoE) is supported");
    if (auto dense_layers = cfg.optional_integer_array("mlp_only_layers"); dense_layers && !dense_layers->empty())
      throw_error<ConfigError>(file, ": field 'mlp_only_layers' is ", json_preview(*cfg.value("mlp_only_layers")),
                               "; mixing dense and MoE layers is not supported");
  }
  c.eos_token_ids = cfg.integer_list("eos_token_id");
  c.bos_token_id = cfg.optional_integer("bos_token_id");
  return c;
}

// Reads DIR/config.json (or a config.json path). A config without a dtype can only be dispatched
// after read_checkpoint_config (io/checkpoint_config.hpp) has taken it from the tensors.
[[nodiscard]] inline ModelConfig read_model_config(const std::filesystem::path& path) {
  const std::filesystem::path file = file_in_dir_or_file(path, "config.json");
  return parse_model_config(read_json_file(file), file.string());
}

}  // namespace qwen::io

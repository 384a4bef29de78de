// config.json / generation_config.json / tokenizer_config.json parsing and validation against
// model types. The official configs below are the published values for Qwen3-0.6B, -8B-FP8
// and -30B-A3B (transformers 4.x spelling); the transformers-5 spelling is what the golden
// fixtures in tests/golden were written with (tests/golden/reference/*.json keep each config.json
// exactly as transformers 5 saved it).
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <qwen/io/generation_config.hpp>
#include <qwen/io/model_config.hpp>
#include <qwen/io/tokenizer_config.hpp>
#include <qwen/model/registry.hpp>
#include <qwen/model/validate.hpp>

#include "golden_fixtures.hpp"
#include "scratch_dir.hpp"

using namespace qwen;
using namespace qwen::literals;
using io::json;
namespace fs = std::filesystem;
using testing::ScratchDir;
using testing::write_file;

namespace {

const char* const qwen3_0_6b = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
  "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})";

const char* const qwen3_8b_fp8 = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "bos_token_id": 151643,
  "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096,
  "intermediate_size": 12288, "max_position_embeddings": 40960, "model_type": "qwen3",
  "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8,
  "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                          "weight_block_size": [128, 128]},
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "use_sliding_window": false, "vocab_size": 151936})";

const char* const qwen3_30b_a3b = R"({
  "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": false, "bos_token_id": 151643,
  "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 2048, "intermediate_size": 6144, "max_position_embeddings": 40960,
  "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe",
  "moe_intermediate_size": 768, "norm_topk_prob": true, "num_attention_heads": 32,
  "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_key_value_heads": 4,
  "output_router_logits": false, "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000.0,
  "router_aux_loss_coef": 0.001, "sliding_window": null, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "use_sliding_window": false, "vocab_size": 151936})";

io::ModelConfig parse(const json& j) { return io::parse_model_config(j, "config.json"); }
io::ModelConfig parse(const char* text) { return parse(json::parse(text)); }

template <class List>
std::string matched_type(const io::ModelConfig& c) {
  return dispatch_model<List>(c, []<class M>() { return M::name(); });
}

}  // namespace

TEST_CASE("config: official Qwen3 configs parse and dispatch to their type", "[config]") {
  const auto small = parse(qwen3_0_6b);
  CHECK(small.hidden_size == 1024);
  CHECK(small.tie_word_embeddings);
  CHECK(small.rope_theta == 1e6);
  CHECK_FALSE(small.yarn);
  CHECK(small.dtype_key == "torch_dtype");
  CHECK(small.eos_token_ids == std::vector<std::int64_t>{151645});
  CHECK(matched_type<OfficialModels>(small) == "Qwen3<Dense, 0.6B, bf16>");
  CHECK(matched_type<OfficialModels>(small) == Qwen3<Dense, 0.6_B, bf16>::name());

  const auto fp8_config = parse(qwen3_8b_fp8);
  REQUIRE(fp8_config.fp8);
  CHECK(fp8_config.fp8->block_rows == 128);
  CHECK(matched_type<OfficialModels>(fp8_config) == "Qwen3<Dense, 8B, fp8>");
  json plain = json::parse(qwen3_8b_fp8);
  plain.erase("quantization_config");
  CHECK(matched_type<OfficialModels>(parse(plain)) == "Qwen3<Dense, 8B, bf16>");

  const auto moe = parse(qwen3_30b_a3b);
  CHECK(moe.is_moe);
  CHECK(moe.num_experts == 128);
  CHECK(moe.num_experts_per_tok == 8);
  CHECK(matched_type<OfficialModels>(moe) == "Qwen3<MoE, 30B-A3B, bf16>");
}

TEST_CASE("config: the six golden configs exactly as transformers 5 saved them parse and dispatch", "[config][golden]") {
  for (const auto& fixture : testing::golden_fixtures) {
    INFO("fixture " << fixture.name);
    const json reference = io::read_json_file(testing::golden_reference(fixture.name));
    json saved = reference.at("config_as_saved_by_transformers");
    const io::ModelConfig checkpoint_config = io::read_model_config(testing::golden_checkpoint(fixture.name));
    // make_golden.py adds quantization_config after transformers has saved the bf16 model, as
    // the official FP8 repositories carry it: take it from the checkpoint's config.json.
    if (fixture.dtype == "fp8") {
      CHECK(matched_type<TestModels>(parse(saved)) == "Qwen3<Dense, TinyDense, bf16>");
      saved["quantization_config"] = io::read_json_file(testing::golden_checkpoint(fixture.name) / "config.json")["quantization_config"];
    }
    const io::ModelConfig c = parse(saved);
    CHECK(c.dtype_key == "dtype");  // the transformers 5 spelling...
    CHECK(checkpoint_config.dtype_key == "torch_dtype");  // ...and the 4.x one the checkpoints carry
    CHECK(matched_type<TestModels>(c) == fixture.type);
    CHECK(matched_type<TestModels>(checkpoint_config) == fixture.type);
    // Both spellings mean the same model.
    CHECK(c.dtype == checkpoint_config.dtype);
    CHECK(c.rope_theta == checkpoint_config.rope_theta);
    CHECK(c.yarn.has_value() == checkpoint_config.yarn.has_value());
    if (c.yarn) {
      CHECK(c.yarn->factor == fixture.yarn_factor);
      CHECK(c.yarn->original_max_position_embeddings == fixture.yarn_original_max_position_embeddings);
    }
    CHECK(c.num_experts == checkpoint_config.num_experts);
    CHECK(c.max_position_embeddings == checkpoint_config.max_position_embeddings);
    CHECK(c.eos_token_ids == checkpoint_config.eos_token_ids);
  }
}

TEST_CASE("config: transformers 5 spelling (rope_parameters, num_local_experts, dtype)", "[config]") {
  json j = json::parse(qwen3_30b_a3b);
  j.erase("rope_theta");
  j.erase("rope_scaling");
  j.erase("num_experts");
  j.erase("torch_dtype");
  j["num_local_experts"] = 128;
  j["dtype"] = "bfloat16";
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5000000.0}};
  const auto c = parse(j);
  CHECK(c.num_experts == 128);
  CHECK(c.rope_theta == 5e6);
  CHECK(c.dtype == "bfloat16");
  CHECK(c.dtype_key == "dtype");
  CHECK(matched_type<OfficialModels>(c) == "Qwen3<MoE, 30B-A3B, bf16>");

  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1e6}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  const auto y = parse(j);
  REQUIRE(y.yarn);
  CHECK(y.yarn->factor == 4.0);
  CHECK(y.yarn->original_max_position_embeddings == 32768);
  CHECK(y.yarn->beta_fast == 32.0);
  CHECK(y.yarn->beta_slow == 1.0);

  // Both spellings of one value must agree.
  j["num_experts"] = 64;
  CHECK_THROWS_WITH(parse(j), Catch::Contains("field 'num_experts' is 64 but field 'num_local_experts' is 128"));
  j["num_experts"] = 128;
  j["torch_dtype"] = "float32";
  CHECK_THROWS_WITH(parse(j), Catch::Contains("field 'dtype' is 'bfloat16' but field 'torch_dtype' is 'float32'"));
  j["torch_dtype"] = "bfloat16";
  CHECK(parse(j).dtype_key == "dtype");  // transformers 5 reads "dtype" first
}

TEST_CASE("config: which RoPE object and theta apply, as in transformers 5", "[config]") {
  json j = json::parse(qwen3_0_6b);
  // rope_parameters without its own theta takes the top-level one.
  j["rope_parameters"] = {{"rope_type", "default"}};
  CHECK(parse(j).rope_theta == 1e6);
  j.erase("rope_theta");
  CHECK(parse(j).rope_theta == 10000.0);  // transformers' default_theta
  // A non-null rope_scaling wins over rope_parameters (convert_rope_params_to_dict).
  j["rope_theta"] = 1e6;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e6}};
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 2.0}, {"original_max_position_embeddings", 32768}};
  const auto c = parse(j);
  CHECK(c.rope_theta == 1e6);
  REQUIRE(c.yarn);
  CHECK(c.yarn->factor == 2.0);
  // An empty rope_scaling is falsy in Python: rope_parameters applies.
  j["rope_scaling"] = json::object();
  CHECK(parse(j).rope_theta == 5e6);
  CHECK_FALSE(parse(j).yarn);
}

TEST_CASE("config: YaRN in the transformers 4 spelling, and unsupported rope types", "[config]") {
  json j = json::parse(qwen3_0_6b);
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  const auto y = parse(j);
  REQUIRE(y.yarn);
  CHECK(y.yarn->factor == 4.0);
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}, {"original_max_position_embeddings", 32768}};
  CHECK(parse(j).yarn->factor == 2.0);
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  CHECK_THROWS_WITH(parse(j), Catch::Contains("rope_type 'linear' is not supported"));
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 0.5}, {"original_max_position_embeddings", 32768}};
  CHECK_THROWS_WITH(parse(j), Catch::Contains("'factor' must be >= 1, got 0.5"));
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  CHECK_THROWS_WITH(parse(j), Catch::Contains("required field 'original_max_position_embeddings' is missing"));
}

TEST_CASE("config: RoPE keys that would change the positions are rejected by name, never ignored", "[config]") {
  const json yarn = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  auto with_rope = [&](const char* where, const std::string& key, const json& value) {
    json j = json::parse(qwen3_0_6b);
    json rope = yarn;
    rope[key] = value;
    j[where] = rope;
    return j;
  };
  for (const char* where : {"rope_scaling", "rope_parameters"}) {
    INFO(where);
    CHECK_THROWS_WITH(parse(with_rope(where, "mscale", 0.707)), Catch::Contains("config.json: " + std::string(where)) &&
                                                                       Catch::Contains("field 'mscale' is not supported"));
    CHECK_THROWS_WITH(parse(with_rope(where, "mscale_all_dim", 1.0)), Catch::Contains("field 'mscale_all_dim' is not supported"));
    CHECK_THROWS_WITH(parse(with_rope(where, "truncate", false)), Catch::Contains("field 'truncate' is false"));
    CHECK(parse(with_rope(where, "truncate", true)).yarn);
    CHECK_THROWS_WITH(parse(with_rope(where, "partial_rotary_factor", 0.5)),
                      Catch::Contains("field 'partial_rotary_factor' is 0.5; only 1"));
    CHECK(parse(with_rope(where, "partial_rotary_factor", 1.0)).yarn);
    CHECK_THROWS_WITH(parse(with_rope(where, "low_freq_factor", 1.0)),
                      Catch::Contains("unsupported key(s) 'low_freq_factor' for rope_type 'yarn'"));
  }
  json j = json::parse(qwen3_0_6b);
  j["partial_rotary_factor"] = 0.5;  // top level, no RoPE object at all
  CHECK_THROWS_WITH(parse(j), Catch::Contains("config.json: field 'partial_rotary_factor' is 0.5"));
  j = json::parse(qwen3_0_6b);
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}, {"factor", 4.0}};  // a YaRN key without YaRN
  CHECK_THROWS_WITH(parse(j), Catch::Contains("unsupported key(s) 'factor' for rope_type 'default'"));
  j["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}}}};  // per-layer-type RoPE
  CHECK_THROWS_WITH(parse(j), Catch::Contains("unsupported key(s) 'full_attention'"));
  // transformers lets a top-level original_max_position_embeddings override YaRN's own.
  j = json::parse(qwen3_0_6b);
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  j["original_max_position_embeddings"] = 32768;
  CHECK(parse(j).yarn->original_max_position_embeddings == 32768);
  j["rope_scaling"]["original_max_position_embeddings"] = 8192;
  CHECK_THROWS_WITH(parse(j), Catch::Contains("field 'original_max_position_embeddings' is 32768 but") && Catch::Contains("has 8192"));
}

TEST_CASE("config: a disagreeing field names the field and both values", "[config]") {
  using Small = Qwen3<Dense, 0.6_B, bf16>;
  json j = json::parse(qwen3_0_6b);
  CHECK_NOTHROW(validate_config<Small>(parse(j)));

  j["num_key_value_heads"] = 4;
  CHECK_THROWS_WITH(validate_config<Small>(parse(j)),
                    Catch::Contains("config.json: does not match Qwen3<Dense, 0.6B, bf16>") &&
                        Catch::Contains("field 'num_key_value_heads' is 4, expected 8"));
  j = json::parse(qwen3_0_6b);
  j["tie_word_embeddings"] = false;
  CHECK_THROWS_WITH(validate_config<Small>(parse(j)), Catch::Contains("field 'tie_word_embeddings' is false, expected true"));
  j = json::parse(qwen3_0_6b);
  j["torch_dtype"] = "float16";
  CHECK_THROWS_WITH(validate_config<Small>(parse(j)), Catch::Contains("field 'torch_dtype' is float16, expected bfloat16"));
  // The key is named as the file spells it.
  j.erase("torch_dtype");
  j["dtype"] = "float16";
  CHECK_THROWS_WITH(validate_config<Small>(parse(j)), Catch::Contains("field 'dtype' is float16, expected bfloat16") &&
                                                          !Catch::Contains("torch_dtype"));
  using SmallFp8 = Qwen3<Dense, 0.6_B, fp8>;
  using Moe = Qwen3<MoE, 30_B_A3B, bf16>;
  CHECK_THROWS_WITH(validate_config<SmallFp8>(parse(qwen3_0_6b)),
                    Catch::Contains("field 'quantization_config' is none, expected fp8 [128, 128] blocks"));
  CHECK_THROWS_WITH(validate_config<Moe>(parse(qwen3_0_6b)),
                    Catch::Contains("field 'model_type' is qwen3, expected qwen3_moe"));

  // Several disagreements are reported together.
  j = json::parse(qwen3_0_6b);
  j["hidden_size"] = 1000;
  j["num_hidden_layers"] = 3;
  CHECK_THROWS_WITH(validate_config<Small>(parse(j)), Catch::Contains("field 'hidden_size' is 1000, expected 1024") &&
                                                          Catch::Contains("field 'num_hidden_layers' is 3, expected 28"));
  // No compiled type matches: the closest one is named with its differences.
  CHECK_THROWS_WITH(matched_type<OfficialModels>(parse(j)),
                    Catch::Contains("matches no compiled Qwen3 type; the closest is Qwen3<Dense, 0.6B, bf16>") &&
                        Catch::Contains("field 'hidden_size' is 1000, expected 1024"));
}

TEST_CASE("config: a config without a dtype is not dispatched on a guess", "[config]") {
  json j = json::parse(qwen3_0_6b);
  j.erase("torch_dtype");
  const auto c = parse(j);
  CHECK_FALSE(c.dtype);
  CHECK(c.dtype_key.empty());
  CHECK_NOTHROW(validate_config<Qwen3<Dense, 0.6_B, bf16>>(c));  // a chosen type: the tensors will decide
  CHECK_THROWS_WITH(matched_type<OfficialModels>(c), Catch::Contains("config.json: states no dtype") &&
                                                         Catch::Contains("io::read_checkpoint_config"));
}

TEST_CASE("config: missing, mistyped and unsupported fields are errors naming the field", "[config]") {
  // head_dim and num_key_value_heads too: transformers' defaults for them differ from any guess.
  const std::string required[] = {"model_type",          "vocab_size", "hidden_size",       "num_hidden_layers",
                                  "num_attention_heads", "head_dim",   "num_key_value_heads", "intermediate_size",
                                  "max_position_embeddings"};
  for (const std::string& field : required) {
    json j = json::parse(qwen3_0_6b);
    j.erase(field);
    CHECK_THROWS_WITH(parse(j), Catch::Contains("config.json: required field '" + field + "' is missing"));
    j[field] = nullptr;
    CHECK_THROWS_WITH(parse(j), Catch::Contains("config.json: required field '" + field + "' is missing"));
  }
  json j = json::parse(qwen3_0_6b);
  j["hidden_size"] = "1024";
  CHECK_THROWS_AS(parse(j), ConfigError);
  CHECK_THROWS_WITH(parse(j), Catch::Contains("field 'hidden_size' must be an integer, got \"1024\""));
  j["hidden_size"] = -5;
  CHECK_THROWS_WITH(parse(j), Catch::Contains("field 'hidden_size' must be an integer in [1, 2147483647], got -5"));
  j["hidden_size"] = 1024.0;  // an integral float is accepted
  CHECK(parse(j).hidden_size == 1024);
  j["hidden_size"] = 1024.5;
  CHECK_THROWS_WITH(parse(j), Catch::Contains("must be an integer, got 1024.5"));

  j = json::parse(qwen3_0_6b);
  j["model_type"] = "llama";
  CHECK_THROWS_WITH(parse(j), Catch::Contains("model_type 'llama' is not a Qwen3 model"));
  j = json::parse(qwen3_0_6b);
  j["num_key_value_heads"] = 5;
  CHECK_THROWS_WITH(parse(j), Catch::Contains("num_attention_heads (16) is not a multiple of num_key_value_heads (5)"));
  j = json::parse(qwen3_0_6b);
  j["hidden_act"] = "gelu";
  CHECK_THROWS_WITH(parse(j), Catch::Contains("'hidden_act' is 'gelu', only 'silu' is supported"));
  j = json::parse(qwen3_0_6b);
  j["use_sliding_window"] = true;
  CHECK_THROWS_WITH(parse(j), Catch::Contains("sliding-window attention is not supported"));
  j = json::parse(qwen3_0_6b);
  j["layer_types"] = json(28, "full_attention");
  CHECK_NOTHROW(parse(j));
  j["layer_types"][27] = "sliding_attention";
  CHECK_THROWS_WITH(parse(j), Catch::Contains("field 'layer_types[27]' is 'sliding_attention'"));
  j["layer_types"] = json(3, "full_attention");
  CHECK_THROWS_WITH(parse(j), Catch::Contains("'layer_types' lists 3 layers, but num_hidden_layers is 28"));
  j = json::parse(qwen3_0_6b);
  j["rope_theta"] = -1;
  CHECK_THROWS_WITH(parse(j), Catch::Contains("'rope_theta' must be a finite number > 1, got -1"));
  j = json::parse(qwen3_0_6b);
  j["rms_norm_eps"] = 0;
  CHECK_THROWS_WITH(parse(j), Catch::Contains("'rms_norm_eps' must be in (0, 1), got 0"));
  CHECK_THROWS_WITH(parse(json::array()), Catch::Contains("config.json: expected a JSON object, got []"));

  json q = json::parse(qwen3_8b_fp8);
  q["quantization_config"]["weight_block_size"] = {64, 64};
  CHECK_THROWS_WITH(parse(q), Catch::Contains("'weight_block_size' is [64, 64], only [128, 128] is supported"));
  q["quantization_config"]["weight_block_size"] = {128};
  CHECK_THROWS_WITH(parse(q), Catch::Contains("'weight_block_size' must be [rows, cols], got [128]"));
  q["quantization_config"].erase("weight_block_size");
  CHECK_THROWS_WITH(parse(q), Catch::Contains("per-tensor FP8 is not supported"));
  q = json::parse(qwen3_8b_fp8);
  q["quantization_config"]["quant_method"] = "gptq";
  CHECK_THROWS_WITH(parse(q), Catch::Contains("quant_method 'gptq' is not supported"));
  q = json::parse(qwen3_8b_fp8);
  q["quantization_config"]["activation_scheme"] = "static";
  CHECK_THROWS_WITH(parse(q), Catch::Contains("'activation_scheme' is 'static', only 'dynamic' is supported"));

  json m = json::parse(qwen3_30b_a3b);
  m["mlp_only_layers"] = {0, 1};
  CHECK_THROWS_WITH(parse(m), Catch::Contains("field 'mlp_only_layers' is [0,1]; mixing dense and MoE layers is not supported"));
  m["mlp_only_layers"] = "none";
  CHECK_THROWS_WITH(parse(m), Catch::Contains("field 'mlp_only_layers' must be a list of integers"));
  m = json::parse(qwen3_30b_a3b);
  m["decoder_sparse_step"] = 2;
  CHECK_THROWS_WITH(parse(m), Catch::Contains("'decoder_sparse_step' is 2"));
  m = json::parse(qwen3_30b_a3b);
  m["num_experts_per_tok"] = 129;
  CHECK_THROWS_WITH(parse(m), Catch::Contains("num_experts_per_tok (129) exceeds num_experts (128)"));
  m = json::parse(qwen3_30b_a3b);
  m.erase("num_experts");
  CHECK_THROWS_WITH(parse(m), Catch::Contains("required field 'num_local_experts' is missing"));
}

TEST_CASE("config: integers out of range are errors quoting the value as written, never wrapped", "[config]") {
  // Values as nlohmann parses them from the text: unsigned above int64, floats beyond.
  const auto parse_with = [](const std::string& field, const std::string& value) {
    json j = json::parse(qwen3_8b_fp8);
    (field == "weight_block_size" ? j["quantization_config"][field] : j[field]) = json::parse(value);
    return parse(j);
  };
  // Was reported as -1.
  CHECK_THROWS_WITH(parse_with("hidden_size", "18446744073709551615"),
                    Catch::Contains("field 'hidden_size' must be an integer in [1, 2147483647], got 18446744073709551615"));
  CHECK_THROWS_WITH(parse_with("hidden_size", "4294968320"),  // 2^32 + 1024: would truncate to 1024
                    Catch::Contains("got 4294968320"));
  CHECK_THROWS_WITH(parse_with("num_hidden_layers", "1e300"), Catch::Contains("'num_hidden_layers' must be an integer in"));
  // Was accepted as [128, 128].
  CHECK_THROWS_WITH(parse_with("weight_block_size", "[4294967424, 128]"),
                    Catch::Contains("quantization_config: field 'weight_block_size[0]' must be an integer in [1, 2147483647], got 4294967424"));
  CHECK_THROWS_WITH(parse_with("eos_token_id", "[151645, 18446744073709551615]"),
                    Catch::Contains("field 'eos_token_id[1]' is 18446744073709551615, outside the 64-bit integer range"));
  CHECK_THROWS_WITH(parse_with("bos_token_id", "9223372036854775808"),
                    Catch::Contains("field 'bos_token_id' is 9223372036854775808, outside the 64-bit integer range"));
  CHECK(parse_with("bos_token_id", "9223372036854775807").bos_token_id == INT64_MAX);
  // A large structured value is described, not printed.
  CHECK_THROWS_WITH(parse_with("hidden_size", "[[1], [2], [3]]"),
                    Catch::Contains("field 'hidden_size' must be an integer, got an array of 3 elements"));
  // A value built in code may hold invalid UTF-8: describing it is still a ConfigError.
  const json built = {{"k", std::string("\xFF\xFE")}};
  CHECK_THROWS_AS(io::JsonObject(built, "x").integer("k"), ConfigError);
}

TEST_CASE("config: generation_config.json", "[config]") {
  const auto g = io::parse_generation_config(json::parse(R"({"bos_token_id": 151643, "do_sample": true,
      "eos_token_id": [151645, 151643], "pad_token_id": 151643, "temperature": 0.6, "top_k": 20, "top_p": 0.95,
      "transformers_version": "4.51.0"})"),
                                             "generation_config.json");
  CHECK(g.do_sample);
  CHECK(g.eos_token_ids == std::vector<std::int64_t>{151645, 151643});
  CHECK(g.temperature == 0.6);
  CHECK(g.top_k == 20);
  CHECK(g.top_p == 0.95);
  CHECK_FALSE(g.min_p);
  CHECK(io::parse_generation_config(json::parse(R"({"eos_token_id": 7})"), "g").eos_token_ids == std::vector<std::int64_t>{7});
  CHECK_THROWS_WITH(io::parse_generation_config(json::parse(R"({"top_p": 1.5})"), "generation_config.json"),
                    Catch::Contains("generation_config.json: field 'top_p' is 1.5, outside (0, 1]"));
  CHECK_THROWS_WITH(io::parse_generation_config(json::parse(R"({"temperature": -1})"), "g"), Catch::Contains("'temperature' is -1"));
  CHECK_THROWS_WITH(io::parse_generation_config(json::parse(R"({"eos_token_id": "x"})"), "g"),
                    Catch::Contains("field 'eos_token_id' must be an integer or a list of integers"));
  CHECK_THROWS_WITH(io::parse_generation_config(json::parse(R"({"eos_token_id": [1, -2]})"), "g"),
                    Catch::Contains("field 'eos_token_id[1]' must be an integer in [0, "));
  // Was shown as top_k 20 (4294967316 = 2^32 + 20).
  CHECK_THROWS_WITH(io::parse_generation_config(json::parse(R"({"top_k": 4294967316})"), "g"),
                    Catch::Contains("g: field 'top_k' must be an integer in [-1, 2147483647], got 4294967316"));
  CHECK_THROWS_WITH(io::parse_generation_config(json::parse(R"({"top_k": -2})"), "g"), Catch::Contains("got -2"));
}

TEST_CASE("config: tokenizer_config.json as the golden checkpoints carry it (Qwen3's file, tiny ids)", "[config]") {
  const fs::path dir = testing::golden_checkpoint("dense_tied");
  const auto t = io::read_tokenizer_config(dir);
  REQUIRE(t);
  CHECK(t->eos_token == "<|im_end|>");
  CHECK(t->pad_token == "<|endoftext|>");
  CHECK_FALSE(t->bos_token);
  CHECK(t->model_max_length == 131072);
  CHECK(t->chat_template.find("<|im_start|>") != std::string::npos);
  CHECK(t->chat_template.find("enable_thinking") != std::string::npos);
  CHECK(t->chat_template_source == (dir / "tokenizer_config.json").string());
  CHECK(t->added_tokens.size() == 26);
  CHECK(t->added_tokens.at(478).content == "<|endoftext|>");
  CHECK(t->added_tokens.at(480).content == "<|im_end|>");
  CHECK(t->added_tokens.at(480).special);
  CHECK(t->added_tokens.at(502).content == "<think>");
  CHECK_FALSE(t->added_tokens.at(502).special);

  // Error cases, each on a copy of that file with one field changed.
  const json original = io::read_json_file(dir / "tokenizer_config.json");
  const auto parse_with = [&](const std::string& key, const json& value) {
    json j = original;
    j[key] = value;
    return io::parse_tokenizer_config(j, "tokenizer_config.json");
  };
  CHECK_THROWS_WITH(parse_with("chat_template", 5), Catch::Contains("tokenizer_config.json: field 'chat_template' must be a string or a list"));
  CHECK_THROWS_WITH(parse_with("chat_template", json::array({{{"name", "default"}}})),
                    Catch::Contains("tokenizer_config.json: chat_template[0]: required field 'template' is missing"));
  for (const char* key : {"x1", "-1", "+5", " 5", "", "99999999999999999999"}) {
    json j = original;
    j["added_tokens_decoder"][key] = {{"content", "a"}};
    CHECK_THROWS_WITH(io::parse_tokenizer_config(j, "t"), Catch::Contains(std::string("added_tokens_decoder key '") + key + "' is not a token id"));
  }
  json j = original;
  j["added_tokens_decoder"]["480"].erase("content");
  CHECK_THROWS_WITH(io::parse_tokenizer_config(j, "t"), Catch::Contains("t: added_tokens_decoder[480]: required field 'content' is missing"));
  CHECK_THROWS_WITH(parse_with("eos_token", 5), Catch::Contains("field 'eos_token' must be a string or an object"));
  CHECK(parse_with("eos_token", {{"content", "<|im_end|>"}, {"special", true}}).eos_token == "<|im_end|>");
  CHECK_FALSE(parse_with("model_max_length", 1e30).model_max_length);  // "no limit"
  CHECK_FALSE(parse_with("model_max_length", json::parse("1000000000000000019884624838656")).model_max_length);
  CHECK_FALSE(parse_with("model_max_length", json::parse("18446744073709551615")).model_max_length);
  CHECK_THROWS_WITH(parse_with("model_max_length", "long"), Catch::Contains("field 'model_max_length' must be a number"));
  CHECK_THROWS_WITH(parse_with("model_max_length", 0), Catch::Contains("field 'model_max_length' must be an integer in [1, "));
  const auto named = parse_with("chat_template", json::parse(R"([{"name": "default", "template": "A"}, {"name": "tool_use", "template": "B"}])"));
  CHECK(named.chat_template == "A");
  CHECK(named.named_chat_templates.at("tool_use") == "B");
}

TEST_CASE("config: tokenizer_config.json of the real Qwen3 tokenizer (real ids)", "[config]") {
  const fs::path dir = fs::path(QWEN_SHARED_DIR) / "models" / "qwen3-tokenizer";
  if (!fs::exists(dir / "tokenizer_config.json")) {
    WARN("skipped: " << dir.string() << " is not present");
    return;
  }
  const auto t = io::read_tokenizer_config(dir);
  REQUIRE(t);
  CHECK(t->eos_token == "<|im_end|>");
  CHECK(t->added_tokens.at(151643).content == "<|endoftext|>");
  CHECK(t->added_tokens.at(151645).content == "<|im_end|>");
  CHECK(t->added_tokens.at(151645).special);
  CHECK(t->added_tokens.at(151657).content == "<tool_call>");
  CHECK(t->added_tokens.at(151667).content == "<think>");
  CHECK(t->added_tokens.at(151668).content == "</think>");
  CHECK_FALSE(t->added_tokens.at(151667).special);
}

TEST_CASE("config: chat_template.jinja takes priority over tokenizer_config.json, as in transformers 5", "[config]") {
  ScratchDir dir("chat-template");
  fs::copy_file(testing::golden_checkpoint("dense_tied") / "tokenizer_config.json", dir / "tokenizer_config.json");
  const std::string from_config = io::read_tokenizer_config(dir.path())->chat_template;
  REQUIRE_FALSE(from_config.empty());

  write_file(dir / "chat_template.jinja", "{{ messages[0]['content'] }}\n");
  auto t = io::read_tokenizer_config(dir.path());
  CHECK(t->chat_template == "{{ messages[0]['content'] }}\n");
  CHECK(t->chat_template_source == (dir / "chat_template.jinja").string());
  CHECK(t->eos_token == "<|im_end|>");  // the rest still comes from tokenizer_config.json

  // transformers 5 writes it there and drops the key from tokenizer_config.json.
  json config = io::read_json_file(dir / "tokenizer_config.json");
  config.erase("chat_template");
  write_file(dir / "tokenizer_config.json", config.dump());
  CHECK(io::read_tokenizer_config(dir.path())->chat_template == "{{ messages[0]['content'] }}\n");

  // Named templates in chat_templates/ join the default one.
  fs::create_directory(dir / "chat_templates");
  write_file(dir / "chat_templates" / "tool_use.jinja", "TOOLS");
  t = io::read_tokenizer_config(dir.path());
  CHECK(t->chat_template == "{{ messages[0]['content'] }}\n");
  CHECK(t->named_chat_templates.at("tool_use") == "TOOLS");
  CHECK(t->named_chat_templates.at("default") == t->chat_template);

  write_file(dir / "chat_template.jinja", "bad \xC0\x80 byte");
  CHECK_THROWS_WITH(io::read_tokenizer_config(dir.path()), Catch::Contains("chat_template.jinja: not valid UTF-8 (byte 4"));
  fs::remove(dir / "chat_template.jinja");
  fs::create_symlink("nowhere.jinja", dir / "chat_template.jinja");
  CHECK_THROWS_WITH(io::read_tokenizer_config(dir.path()), Catch::Contains("chat_template.jinja: dangling symbolic link"));
}

TEST_CASE("config: every JSON file goes through the strict parser: depth, NUL, size, numbers", "[config]") {
  ScratchDir dir("json-limits");
  const std::string base = qwen3_0_6b;
  const auto config_error = [&](const std::string& text) {
    write_file(dir / "config.json", text);
    try {
      (void)io::read_model_config(dir.path());
    } catch (const FormatError& e) {
      return std::string(e.what());
    } catch (const std::exception& e) {
      FAIL("wrong exception type: " << e.what());
    }
    FAIL("accepted");
    return std::string();
  };
  const std::string path = (dir / "config.json").string();
  // Deep nesting used to overflow the stack (recursive dump in the error message).
  std::string deep = base;
  deep.replace(deep.find("1024,"), 4, std::string(200000, '[') + std::string(200000, ']'));
  CHECK_THAT(config_error(deep), Catch::StartsWith(path) && Catch::Contains("JSON nests deeper than 256 levels"));
  // nlohmann's parser stops at a NUL byte: text after one would be ignored.
  CHECK_THAT(config_error(base + std::string("\0garbage", 8)),
             Catch::StartsWith(path) && Catch::Contains("NUL byte at offset " + std::to_string(base.size())));
  CHECK_THAT(config_error(std::string("{\"a\":\0 1}", 9)), Catch::Contains("NUL byte at offset 5"));
  // A number beyond double used to escape as nlohmann's out_of_range without the file name.
  std::string huge = base;
  huge.replace(huge.find("1e-06"), 5, "1e999");
  CHECK_THAT(config_error(huge), Catch::StartsWith(path) && Catch::Contains("not valid JSON") && Catch::Contains("1e999"));
  CHECK_THAT(config_error(base + " {}"), Catch::StartsWith(path) && Catch::Contains("not valid JSON"));
  CHECK_THAT(config_error("{\"a\": \"\xFF\"}"), Catch::Contains("not valid UTF-8 (byte 7 of the file)"));
  CHECK_THAT(config_error("\xEF\xBB\xBF" + base), Catch::Contains("starts with a UTF-8 byte-order mark"));
  CHECK_THAT(config_error(R"({"model_type": "qwen3", "model_type": "qwen3"})"), Catch::Contains("duplicate key \"model_type\""));
  // Size: the limit is named; the file is not read (a sparse file of 64 MiB + 1).
  write_file(dir / "config.json", base);
  fs::resize_file(dir / "config.json", io::kMaxJsonFileBytes + 1);
  CHECK_THROWS_WITH(io::read_model_config(dir.path()), Catch::Contains("file is 67108865 bytes, above the limit of 67108864 bytes (64 MiB)"));
  // The same parser reads generation_config.json and tokenizer_config.json.
  write_file(dir / "config.json", base);
  write_file(dir / "generation_config.json", std::string("{\"top_k\": 20}\0", 14));
  CHECK_THROWS_WITH(io::read_generation_config(dir.path()), Catch::Contains("generation_config.json: NUL byte at offset 13"));
  write_file(dir / "tokenizer_config.json", "{\"eos_token\": " + std::string(300, '[') + std::string(300, ']') + "}");
  CHECK_THROWS_WITH(io::read_tokenizer_config(dir.path()), Catch::Contains("tokenizer_config.json: JSON nests deeper than 256 levels"));
}

TEST_CASE("config: config.json that is missing, a directory, a FIFO or a bad link is an error, never a hang", "[config]") {
  ScratchDir dir("config-files");
  CHECK_THROWS_WITH(io::read_model_config(dir.path()), Catch::Contains("config.json: file not found"));
  fs::create_directory(dir / "config.json");
  CHECK_THROWS_WITH(io::read_json_file(dir / "config.json"), Catch::Contains("config.json: not a regular file"));
  CHECK_THROWS_WITH(io::read_model_config(dir.path()), Catch::Contains("config.json: not a regular file"));
  // Named itself: the directory is the problem, not a missing config.json/config.json.
  CHECK_THROWS_WITH(io::read_model_config(dir / "config.json"),
                    Catch::Contains("config.json: is a directory, not the file config.json") && !Catch::Contains("config.json/config.json"));
  fs::remove(dir / "config.json");
  REQUIRE(::mkfifo((dir / "config.json").c_str(), 0600) == 0);
  CHECK_THROWS_AS(io::read_model_config(dir.path()), IoError);
  REQUIRE(::mkfifo((dir / "generation_config.json").c_str(), 0600) == 0);
  CHECK_THROWS_WITH(io::read_generation_config(dir.path()), Catch::Contains("generation_config.json: not a regular file"));
  fs::remove(dir / "config.json");
  fs::remove(dir / "generation_config.json");

  // A dangling link is not "absent", for required and optional files alike.
  fs::create_symlink("gone.json", dir / "config.json");
  CHECK_THROWS_WITH(io::read_model_config(dir.path()), Catch::Contains("config.json: dangling symbolic link (its target 'gone.json'"));
  fs::create_symlink("gone.json", dir / "generation_config.json");
  CHECK_THROWS_WITH(io::read_generation_config(dir.path()), Catch::Contains("generation_config.json: dangling symbolic link"));
  // A link loop is a qwen::IoError naming the path, not a std::filesystem_error.
  fs::create_symlink("tokenizer_config.json", dir / "tokenizer_config.json");
  CHECK_THROWS_AS(io::read_tokenizer_config(dir.path()), IoError);
  CHECK_THROWS_WITH(io::read_tokenizer_config(dir.path()),
                    Catch::Contains("tokenizer_config.json: cannot stat: Too many levels of symbolic links"));
  fs::create_symlink("loop", dir / "loop");
  CHECK_THROWS_AS(io::read_model_config(dir / "loop"), IoError);
  CHECK_THROWS_WITH(io::read_model_config(dir / "loop"), Catch::Contains("loop: cannot stat"));
  // Absent optional files are simply absent.
  ScratchDir empty("config-empty");
  CHECK_FALSE(io::read_generation_config(empty.path()));
  CHECK_FALSE(io::read_tokenizer_config(empty.path()));
}

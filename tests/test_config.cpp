// config.json / generation_config.json / tokenizer_config.json parsing and validation against
// model types. The official configs below are the published values for Qwen3-0.6B, -8B-FP8
// and -30B-A3B (transformers 4.x spelling); the transformers-5 spelling is what the golden
// fixtures in tests/golden were written with.
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

using namespace qwen;
using namespace qwen::literals;
using io::json;

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
  CHECK(matched_type<OfficialModels>(c) == "Qwen3<MoE, 30B-A3B, bf16>");

  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1e6}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  const auto y = parse(j);
  REQUIRE(y.yarn);
  CHECK(y.yarn->factor == 4.0);
  CHECK(y.yarn->original_max_position_embeddings == 32768);
  CHECK(y.yarn->beta_fast == 32.0);
  CHECK(y.yarn->beta_slow == 1.0);
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

TEST_CASE("config: missing, mistyped and unsupported fields are errors naming the field", "[config]") {
  const std::string required[] = {"model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                  "intermediate_size", "max_position_embeddings"};
  for (const std::string& field : required) {
    json j = json::parse(qwen3_0_6b);
    j.erase(field);
    CHECK_THROWS_WITH(parse(j), Catch::Contains("config.json: required field '" + field + "' is missing"));
  }
  json j = json::parse(qwen3_0_6b);
  j["hidden_size"] = "1024";
  CHECK_THROWS_AS(parse(j), ConfigError);
  CHECK_THROWS_WITH(parse(j), Catch::Contains("field 'hidden_size' must be an integer, got \"1024\""));
  j["hidden_size"] = -5;
  CHECK_THROWS_WITH(parse(j), Catch::Contains("field 'hidden_size' must be a positive integer, got -5"));
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
  j["rope_theta"] = -1;
  CHECK_THROWS_WITH(parse(j), Catch::Contains("'rope_theta' must be a finite number > 1, got -1"));
  j = json::parse(qwen3_0_6b);
  j["rms_norm_eps"] = 0;
  CHECK_THROWS_WITH(parse(j), Catch::Contains("'rms_norm_eps' must be in (0, 1), got 0"));
  CHECK_THROWS_WITH(parse(json::array()), Catch::Contains("config.json: expected a JSON object, got array"));

  json q = json::parse(qwen3_8b_fp8);
  q["quantization_config"]["weight_block_size"] = {64, 64};
  CHECK_THROWS_WITH(parse(q), Catch::Contains("'weight_block_size' is [64, 64], only [128, 128] is supported"));
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
  CHECK_THROWS_WITH(parse(m), Catch::Contains("mixing dense and MoE layers is not supported"));
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
}

TEST_CASE("config: tokenizer_config.json of the real Qwen3 tokenizer", "[config]") {
  const std::filesystem::path dir = std::filesystem::path(QWEN_SHARED_DIR) / "models" / "qwen3-tokenizer";
  if (!std::filesystem::exists(dir / "tokenizer_config.json")) {
    WARN("skipped: " << dir.string() << " is not present");
    return;
  }
  const auto t = io::read_tokenizer_config(dir);
  REQUIRE(t);
  CHECK(t->eos_token == "<|im_end|>");
  CHECK(t->pad_token == "<|endoftext|>");
  CHECK(t->chat_template.find("<|im_start|>") != std::string::npos);
  CHECK(t->chat_template.find("enable_thinking") != std::string::npos);
  CHECK(t->added_tokens.at(151643).content == "<|endoftext|>");
  CHECK(t->added_tokens.at(151645).content == "<|im_end|>");
  CHECK(t->added_tokens.at(151645).special);
  CHECK(t->added_tokens.at(151667).content == "<think>");
  CHECK_FALSE(t->added_tokens.at(151667).special);

  CHECK_THROWS_WITH(io::parse_tokenizer_config(json::parse(R"({"chat_template": 5})"), "tokenizer_config.json"),
                    Catch::Contains("tokenizer_config.json: field 'chat_template' must be a string or a list"));
  CHECK_THROWS_WITH(io::parse_tokenizer_config(json::parse(R"({"added_tokens_decoder": {"x1": {"content": "a"}}})"), "t"),
                    Catch::Contains("added_tokens_decoder key 'x1' is not a token id"));
  const auto named = io::parse_tokenizer_config(
      json::parse(R"({"chat_template": [{"name": "default", "template": "A"}, {"name": "tool_use", "template": "B"}]})"), "t");
  CHECK(named.chat_template == "A");
  CHECK(named.named_chat_templates.at("tool_use") == "B");
}

TEST_CASE("config: config.json that is missing, a directory or a FIFO is an error, never a hang", "[config]") {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("qwen-test-config-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  CHECK_THROWS_WITH(io::read_model_config(dir), Catch::Contains("config.json: file not found"));
  std::filesystem::create_directory(dir / "config.json");
  CHECK_THROWS_WITH(io::read_json_file(dir / "config.json"), Catch::Contains("config.json: not a regular file"));
  std::filesystem::remove(dir / "config.json");
  REQUIRE(::mkfifo((dir / "config.json").c_str(), 0600) == 0);
  CHECK_THROWS_AS(io::read_model_config(dir), IoError);
  REQUIRE(::mkfifo((dir / "generation_config.json").c_str(), 0600) == 0);
  CHECK_THROWS_WITH(io::read_generation_config(dir), Catch::Contains("generation_config.json: not a regular file"));
  std::filesystem::remove_all(dir);
}

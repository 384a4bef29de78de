// Uses a little of each part of the public API; exits 0 only when every answer is right.
#include <cstdio>
#include <string>

#include <qwen/qwen.hpp>

int main() {
  using namespace qwen::literals;
  using Model = qwen::Qwen3<qwen::Dense, 8_B, qwen::bf16>;
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "consumer: FAILED %s\n", what);
      ++failures;
    }
  };
  expect(Model::name() == "Qwen3<Dense, 8B, bf16>", "model type name");
  expect(Model::hidden_size == 4096 && Model::num_layers == 36, "model shape");
  expect(qwen::bf16::from_float(1.0f).bits == 0x3F80, "bf16 conversion");

  const auto config = qwen::io::parse_model_config(
      qwen::io::json::parse(R"({"model_type": "qwen3", "vocab_size": 151936, "hidden_size": 4096,
        "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "intermediate_size": 12288, "max_position_embeddings": 40960, "rope_theta": 1000000,
        "tie_word_embeddings": false, "torch_dtype": "bfloat16"})"),
      "inline config.json");
  std::string matched;
  qwen::dispatch_model<qwen::OfficialModels>(config, [&]<class M>() { matched = M::name(); });
  expect(matched == Model::name(), "config dispatch");
  if (failures == 0) std::printf("consumer: OK (%s)\n", matched.c_str());
  return failures == 0 ? 0 : 1;
}

// The golden checkpoints in tests/golden/checkpoints and the model type each must load as.
// The fields arch .. weight_block_size mirror the "expect" object that tests/golden/make_golden.py
// records in reference/<name>.json; test_weights.cpp checks that they agree, key for key.
#pragma once

#include <array>
#include <filesystem>
#include <string>
#include <string_view>

namespace qwen::testing {

struct GoldenFixture {
  std::string_view name;  // directory under tests/golden/checkpoints
  std::string_view type;  // Model::name() of the type it matches
  // "expect" in reference/<name>.json:
  std::string_view arch;   // "Dense" or "MoE"
  std::string_view shape;  // the shape's dimensions: "TinyDense" (TinyDenseTied when tied) or "TinyMoE"
  std::string_view dtype;  // "bf16", "fp32" or "fp8"
  bool tie = false;
  bool sharded = false;
  double yarn_factor = 0;                   // rope_scaling.factor; 0 when there is no rope_scaling
  int yarn_original_max_position_embeddings = 0;
  int weight_block_size = 0;                // FP8 block edge (weight_block_size [n, n]); 0 when not FP8
};

// How close a run with a bf16 KV cache must come to transformers' run with its keys and values
// rounded to bf16 (reference/<name>.kv_bf16.safetensors), as fractions of the reference's logit
// range. Rounding makes the target itself a little uncertain: an fp32 value within a few ulps
// of a bf16 rounding boundary rounds one way in one correct implementation and the other way in
// another, a step of one bf16 ulp (2^-8 relative) in that K or V element, which moves the logits
// of every later position a little. Measured with transformers alone
// (tests/golden/make_kv_bf16_reference.py --spread), between its bf16-KV run and runs whose K
// and V were perturbed by up to +-2^-21 relative (about 4 fp32 ulps) before the rounding, 5
// draws per prompt on every golden checkpoint and the demo model: max |difference| up to
// 9.1e-4 of the range, mean |difference| up to 5.3e-5. Hence a max of 2e-3 (the fp32 cache
// meets 1e-4 against its own reference) and a mean of 1e-4: the fp32 references are 2.7e-4 or
// more away from these in the mean on the golden checkpoints, so a cache that does not round
// fails the mean.
inline constexpr double bf16_kv_max_fraction = 2e-3;
inline constexpr double bf16_kv_mean_fraction = 1e-4;

inline constexpr std::array<GoldenFixture, 6> golden_fixtures = {{
    {"dense_tied", "Qwen3<Dense, TinyDenseTied, bf16>", "Dense", "TinyDense", "bf16", true},
    {"dense_untied", "Qwen3<Dense, TinyDense, fp32>", "Dense", "TinyDense", "fp32", false},
    {"moe", "Qwen3<MoE, TinyMoE, bf16>", "MoE", "TinyMoE", "bf16", false},
    {"yarn", "Qwen3<Dense, TinyDenseTied, bf16>", "Dense", "TinyDense", "bf16", true, false, 4.0, 128},
    {"fp8", "Qwen3<Dense, TinyDense, fp8>", "Dense", "TinyDense", "fp8", false, false, 0, 0, 128},
    {"sharded", "Qwen3<Dense, TinyDense, bf16>", "Dense", "TinyDense", "bf16", false, true},
}};

inline std::filesystem::path golden_checkpoint(std::string_view name) {
  return std::filesystem::path(QWEN_GOLDEN_DIR) / "checkpoints" / name;
}

inline std::filesystem::path golden_reference(std::string_view name) {
  return std::filesystem::path(QWEN_GOLDEN_DIR) / "reference" / (std::string(name) + ".json");
}

}  // namespace qwen::testing

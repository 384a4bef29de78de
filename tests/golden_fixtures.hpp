// The golden checkpoints in tests/golden/checkpoints and the model type each must load as
// (what tests/golden/make_golden.py wrote them to be).
#pragma once

#include <array>
#include <filesystem>
#include <string_view>

namespace qwen::testing {

struct GoldenFixture {
  std::string_view name;  // directory under tests/golden/checkpoints
  std::string_view type;  // Model::name() of the type it matches
};

inline constexpr std::array<GoldenFixture, 6> golden_fixtures = {{
    {"dense_tied", "Qwen3<Dense, TinyDenseTied, bf16>"},
    {"dense_untied", "Qwen3<Dense, TinyDense, fp32>"},
    {"moe", "Qwen3<MoE, TinyMoE, bf16>"},
    {"yarn", "Qwen3<Dense, TinyDenseTied, bf16>"},
    {"fp8", "Qwen3<Dense, TinyDense, fp8>"},
    {"sharded", "Qwen3<Dense, TinyDense, bf16>"},
}};

inline std::filesystem::path golden_checkpoint(std::string_view name) {
  return std::filesystem::path(QWEN_GOLDEN_DIR) / "checkpoints" / name;
}

}  // namespace qwen::testing

// The model the engine tests run: the dense tied golden checkpoint (random weights written by
// transformers, a tiny tokenizer with Qwen3's special tokens, the official chat template).
#pragma once

#include <filesystem>

#include <qwen/model/qwen3.hpp>

namespace qwen_test {
using EngineTestModel = qwen::Qwen3Model<qwen::Dense, qwen::shapes::TinyDenseTied, qwen::bf16>;
inline const std::filesystem::path engine_test_checkpoint = std::filesystem::path(QWEN_GOLDEN_DIR) / "checkpoints" / "dense_tied";
}  // namespace qwen_test

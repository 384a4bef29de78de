// The model loader every tool shares: qwen::engine::load_any_llm over qwen::ToolModels (every
// official shape in bf16 and FP8, and the golden fixtures' shapes), compiled once in
// tool_models.cpp (the qwen-tool-models library) rather than in each tool.
#pragma once

#include <filesystem>
#include <memory>

#include <qwen/engine/any_llm.hpp>

namespace qwen_tools {

[[nodiscard]] std::unique_ptr<qwen::engine::AnyLLM> load_model(const std::filesystem::path& dir,
                                                               const qwen::engine::LLMOptions& options);

}  // namespace qwen_tools

// The model loader every tool shares: qwen::engine::load_any_llm over the tools' model types
// (tool_model_list.hpp: qwen::ToolModels, every official shape in bf16 and FP8, the golden
// fixtures' shapes and the demo model), compiled once in tool_models.cpp (the qwen-tool-models
// library) rather than in each tool.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <qwen/engine/any_llm.hpp>
#include <qwen/io/model_config.hpp>

namespace qwen_tools {

[[nodiscard]] std::unique_ptr<qwen::engine::AnyLLM> load_model(const std::filesystem::path& dir,
                                                               const qwen::engine::LLMOptions& options);
// With config.json already read (qwen::io::read_checkpoint_config).
[[nodiscard]] std::unique_ptr<qwen::engine::AnyLLM> load_model(const std::filesystem::path& dir, const qwen::io::ModelConfig& config,
                                                               const qwen::engine::LLMOptions& options);
// The compiled type `config` describes, e.g. "Qwen3<Dense, 0.6B, bf16>", reading nothing else.
[[nodiscard]] std::string model_type_name(const qwen::io::ModelConfig& config);

}  // namespace qwen_tools

#include "tool_models.hpp"

#include <qwen/model/registry.hpp>

namespace qwen_tools {

std::unique_ptr<qwen::engine::AnyLLM> load_model(const std::filesystem::path& dir, const qwen::engine::LLMOptions& options) {
  return qwen::engine::load_any_llm<qwen::ToolModels>(dir, options);
}

}  // namespace qwen_tools

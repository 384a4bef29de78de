#include "tool_models.hpp"

#include <qwen/io/checkpoint_config.hpp>
#include <qwen/model/registry.hpp>

#include "tool_model_list.hpp"

namespace qwen_tools {

std::unique_ptr<qwen::engine::AnyLLM> load_model(const std::filesystem::path& dir, const qwen::engine::LLMOptions& options) {
  return qwen::engine::load_any_llm<ToolModelList>(dir, options);
}

std::unique_ptr<qwen::engine::AnyLLM> load_model(const std::filesystem::path& dir, const qwen::io::ModelConfig& config,
                                                 const qwen::engine::LLMOptions& options) {
  return qwen::engine::load_any_llm<ToolModelList>(dir, config, options);
}

std::string model_type_name(const qwen::io::ModelConfig& config) { return qwen::engine::model_type_name<ToolModelList>(config); }

}  // namespace qwen_tools

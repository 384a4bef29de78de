// The loaded model as the server sees it: an Engine<16> and the checkpoint's text side, with the
// model type hidden. Only model_host.cpp knows the compiled types (it dispatches config.json to
// one of qwen::ToolModels and builds an LLM<Model>); everything else in qwen-serve is compiled
// once, whatever the model.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <qwen/chat/chat_template.hpp>
#include <qwen/engine/engine.hpp>
#include <qwen/engine/llm.hpp>
#include <qwen/io/model_config.hpp>
#include <qwen/tokenizer/tokenizer.hpp>

namespace qwen_serve {

inline constexpr int kv_block_size = 16;
using ServeEngine = qwen::engine::Engine<kv_block_size>;

class ModelHost {
 public:
  virtual ~ModelHost() = default;
  [[nodiscard]] virtual ServeEngine& engine() noexcept = 0;
  [[nodiscard]] virtual const qwen::tokenizer::Tokenizer* tokenizer() const noexcept = 0;      // null without tokenizer.json
  [[nodiscard]] virtual const qwen::chat::ChatTemplate* chat_template() const noexcept = 0;  // null without a known template
  // generation_config.json's sampling (the defaults a request's own values override).
  [[nodiscard]] virtual qwen::engine::GenerationParams default_params() const = 0;
};

// The compiled type config.json describes, e.g. "Qwen3<Dense, 0.6B, bf16>"; ConfigError naming
// the closest type when none matches. Cheap: reads nothing but the config.
[[nodiscard]] std::string model_type_name(const qwen::io::ModelConfig& config);

// Loads the checkpoint (weights, tokenizer, chat template) and builds its engine.
[[nodiscard]] std::unique_ptr<ModelHost> load_model(const std::filesystem::path& dir, const qwen::io::ModelConfig& config,
                                                    const qwen::engine::LLMOptions& options);

}  // namespace qwen_serve

// The one place qwen-serve names model types: config.json -> qwen::ToolModels -> LLM<Model>.
// This file instantiates, per model type, only the checkpoint loader and the forward pass
// (LLM<Model> builds Engine<16>, which is compiled once, on make_step_model<Model>).
#include "model_host.hpp"

#include <qwen/model/registry.hpp>

namespace qwen_serve {
namespace {

template <class Model>
class HostedModel final : public ModelHost {
 public:
  HostedModel(const std::filesystem::path& dir, const qwen::engine::LLMOptions& options) : llm_(dir, options) {}
  ServeEngine& engine() noexcept override { return llm_.engine(); }
  const qwen::tokenizer::Tokenizer* tokenizer() const noexcept override { return llm_.tokenizer(); }
  const qwen::chat::ChatTemplate* chat_template() const noexcept override { return llm_.chat_template(); }
  qwen::engine::GenerationParams default_params() const override { return llm_.default_params(); }

 private:
  qwen::engine::LLM<Model, kv_block_size> llm_;
};

}  // namespace

std::string model_type_name(const qwen::io::ModelConfig& config) {
  return qwen::dispatch_model<qwen::ToolModels>(config, []<class Model>() { return Model::name(); });
}

std::unique_ptr<ModelHost> load_model(const std::filesystem::path& dir, const qwen::io::ModelConfig& config,
                                      const qwen::engine::LLMOptions& options) {
  return qwen::dispatch_model<qwen::ToolModels>(
      config, [&]<class Model>() -> std::unique_ptr<ModelHost> { return std::make_unique<HostedModel<Model>>(dir, options); });
}

}  // namespace qwen_serve

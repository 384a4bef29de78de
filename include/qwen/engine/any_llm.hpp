// AnyLLM: a checkpoint of whichever model type its config.json describes, behind one interface.
//
// A tool that serves any checkpoint dispatches over a list of compiled model types at run time
// (qwen/model/registry.hpp). With AnyLLM the per-type code is the loader and the forward pass
// only, compiled where load_any_llm<List> is instantiated; everything the tool does with the
// result (the engine, text, chat) is compiled once. Put load_any_llm<List> in one translation
// unit (or a small library) that every tool links, and the types are compiled once per build.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "qwen/engine/llm.hpp"
#include "qwen/io/checkpoint_config.hpp"
#include "qwen/model/registry.hpp"

namespace qwen::engine {

class AnyLLM {
 public:
  virtual ~AnyLLM() = default;
  [[nodiscard]] virtual Engine<16>& engine() noexcept = 0;
  [[nodiscard]] virtual const tokenizer::Tokenizer* tokenizer() const noexcept = 0;
  [[nodiscard]] virtual const chat::ChatTemplate* chat_template() const noexcept = 0;
  [[nodiscard]] virtual const std::string& chat_error() const noexcept = 0;  // why there is no chat template
  [[nodiscard]] virtual const std::string& model_name() const noexcept = 0;  // e.g. "Qwen3<Dense, 0.6B, bf16>"
  [[nodiscard]] virtual const io::ModelConfig& config() const noexcept = 0;
  [[nodiscard]] virtual const std::optional<io::GenerationConfig>& generation() const noexcept = 0;
  [[nodiscard]] virtual GenerationParams default_params() const = 0;
};

template <class Model>
class AnyLLMOf final : public AnyLLM {
 public:
  AnyLLMOf(const std::filesystem::path& dir, io::ModelConfig config, const LLMOptions& options)
      : llm_(dir, std::move(config), options), name_(Model::name()) {}
  [[nodiscard]] Engine<16>& engine() noexcept override { return llm_.engine(); }
  [[nodiscard]] const tokenizer::Tokenizer* tokenizer() const noexcept override { return llm_.tokenizer(); }
  [[nodiscard]] const chat::ChatTemplate* chat_template() const noexcept override { return llm_.chat_template(); }
  [[nodiscard]] const std::string& chat_error() const noexcept override { return llm_.chat_error(); }
  [[nodiscard]] const std::string& model_name() const noexcept override { return name_; }
  [[nodiscard]] const io::ModelConfig& config() const noexcept override { return llm_.checkpoint().config; }
  [[nodiscard]] const std::optional<io::GenerationConfig>& generation() const noexcept override { return llm_.checkpoint().generation; }
  [[nodiscard]] GenerationParams default_params() const override { return llm_.default_params(); }

 private:
  LLM<Model> llm_;
  std::string name_;
};

// Loads `dir` as the type of List that its config.json describes (ConfigError naming the closest
// type and the differing fields when none does).
template <class List>
[[nodiscard]] std::unique_ptr<AnyLLM> load_any_llm(const std::filesystem::path& dir, const io::ModelConfig& config,
                                                   const LLMOptions& options = {}) {
  return dispatch_model<List>(config, [&]<class Model>() -> std::unique_ptr<AnyLLM> {
    return std::make_unique<AnyLLMOf<Model>>(dir, config, options);
  });
}
template <class List>
[[nodiscard]] std::unique_ptr<AnyLLM> load_any_llm(const std::filesystem::path& dir, const LLMOptions& options = {}) {
  return load_any_llm<List>(dir, io::read_checkpoint_config(dir), options);
}

// The name of the type of List that `config` describes (e.g. "Qwen3<Dense, 0.6B, bf16>"), without
// loading anything; ConfigError as load_any_llm.
template <class List>
[[nodiscard]] std::string model_type_name(const io::ModelConfig& config) {
  return dispatch_model<List>(config, []<class Model>() { return Model::name(); });
}

}  // namespace qwen::engine

// LLM: the offline API, like vLLM's `LLM`: a checkpoint directory in, an engine on the CPU
// backend, `generate(prompts, params)` and `chat(conversations, params)` with results in input
// order.
//
//   qwen::engine::LLM<qwen::Qwen3<qwen::Dense, 0.6_B, qwen::bf16>> llm("Qwen3-0.6B");
//   auto results = llm.generate({"The capital of France is"}, params);
//   auto replies = llm.chat({{{{"role", "user"}, {"content", "Hi"}}}}, params);
//
// The tokenizer (tokenizer.json) and chat template (tokenizer_config.json) are loaded when the
// directory has them; without them generate() takes token ids only and chat() says what is
// missing. End-of-sequence ids: the union of config.json's and generation_config.json's.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/backend/cpu.hpp"
#include "qwen/chat/chat_template.hpp"
#include "qwen/engine/engine.hpp"
#include "qwen/io/checkpoint_config.hpp"
#include "qwen/io/generation_config.hpp"
#include "qwen/model/load.hpp"
#include "qwen/tokenizer/tokenizer.hpp"

namespace qwen::engine {

struct LLMOptions {
  EngineOptions engine;
  unsigned threads = 0;  // CPU backend threads; 0: every core
  KVCacheDType kv_cache_dtype = KVCacheDType::bf16;  // the KV cache's element (fp32: twice the bytes)
};

// The checkpoint's suggested sampling (generation_config.json, as vLLM's default
// generation_config="auto" and transformers read it): temperature, top_k, top_p, min_p,
// repetition_penalty where stated; do_sample false (or absent) is greedy.
[[nodiscard]] inline sampling::SamplingParams sampling_from_generation_config(const io::GenerationConfig& g) {
  sampling::SamplingParams p;
  p.temperature = g.do_sample ? g.temperature.value_or(1.0) : 0.0;
  p.top_k = g.top_k.value_or(p.top_k);
  p.top_p = g.top_p.value_or(p.top_p);
  p.min_p = g.min_p.value_or(p.min_p);
  p.repetition_penalty = g.repetition_penalty.value_or(p.repetition_penalty);
  return p;
}

template <class Model, int BlockSize = 16>
class LLM {
 public:
  using EngineType = Engine<BlockSize>;

  explicit LLM(const std::filesystem::path& dir, const LLMOptions& options = {}) : LLM(dir, io::read_checkpoint_config(dir), options) {}
  // With config.json already read (io::read_checkpoint_config).
  LLM(const std::filesystem::path& dir, io::ModelConfig config, const LLMOptions& options)
      : loaded_(load_checkpoint<Model>(dir, std::move(config))),
        backend_(options.threads, options.kv_cache_dtype),
        tokenizer_(load_tokenizer(dir)),
        chat_template_(load_template(dir)),
        engine_(make_step_model<Model, CpuBackend, BlockSize>(loaded_.weights, loaded_.config, backend_, options.engine), options.engine,
                EngineText{tokenizer_.get(), chat_template_ ? &*chat_template_ : nullptr, eos_token_ids(loaded_)}) {}

  LLM(const LLM&) = delete;
  LLM& operator=(const LLM&) = delete;

  // Text prompts, all with `params`.
  std::vector<RequestResult> generate(const std::vector<std::string>& prompts, const GenerationParams& params = {}) {
    std::vector<Request> requests;
    for (const std::string& p : prompts) requests.push_back(text_request(p, params));
    return engine_.generate(std::move(requests));
  }
  // Any mix of token-id, text and chat requests, each with its own parameters.
  std::vector<RequestResult> generate(std::vector<Request> requests) { return engine_.generate(std::move(requests)); }

  // Each conversation: a list of OpenAI messages, or a whole request object ({"messages", "tools",
  // "chat_template_kwargs"}).
  std::vector<RequestResult> chat(const std::vector<nlohmann::ordered_json>& conversations, const GenerationParams& params = {}) {
    if (!chat_template_) throw_error<InvalidArgument>("chat: ", chat_error_);
    std::vector<Request> requests;
    for (const auto& c : conversations)
      requests.push_back(chat_request(c.is_array() ? nlohmann::ordered_json{{"messages", c}} : c, params));
    return engine_.generate(std::move(requests));
  }

  // generation_config.json's sampling (sampling_from_generation_config), or the defaults when
  // the checkpoint has none.
  [[nodiscard]] GenerationParams default_params() const {
    GenerationParams p;
    if (loaded_.generation) p.sampling = sampling_from_generation_config(*loaded_.generation);
    return p;
  }

  [[nodiscard]] EngineType& engine() noexcept { return engine_; }
  [[nodiscard]] const tokenizer::Tokenizer* tokenizer() const noexcept { return tokenizer_.get(); }
  [[nodiscard]] const chat::ChatTemplate* chat_template() const noexcept { return chat_template_ ? &*chat_template_ : nullptr; }
  [[nodiscard]] const LoadedCheckpoint<Model>& checkpoint() const noexcept { return loaded_; }
  // Why chat() is unavailable (empty when it is available).
  [[nodiscard]] const std::string& chat_error() const noexcept { return chat_error_; }

 private:
  static std::unique_ptr<tokenizer::Tokenizer> load_tokenizer(const std::filesystem::path& dir) {
    if (!std::filesystem::exists(dir / "tokenizer.json")) return nullptr;
    return std::make_unique<tokenizer::Tokenizer>(tokenizer::read_tokenizer_json(dir / "tokenizer.json"));
  }
  std::optional<chat::ChatTemplate> load_template(const std::filesystem::path& dir) {
    try {
      return chat::ChatTemplate::from_directory(dir);
    } catch (const Error& e) {
      chat_error_ = e.what();
      return std::nullopt;
    }
  }

  LoadedCheckpoint<Model> loaded_;
  CpuBackend backend_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;  // a Tokenizer does not move
  std::string chat_error_;
  std::optional<chat::ChatTemplate> chat_template_;
  EngineType engine_;
};

}  // namespace qwen::engine

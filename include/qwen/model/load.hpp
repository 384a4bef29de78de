// Loading a checkpoint directory exactly as downloaded from Hugging Face into a model type:
// config.json checked against the type, tensors bound, generation and tokenizer configs read.
#pragma once

#include <filesystem>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/io/checkpoint.hpp"
#include "qwen/io/checkpoint_config.hpp"
#include "qwen/io/generation_config.hpp"
#include "qwen/io/model_config.hpp"
#include "qwen/io/tokenizer_config.hpp"
#include "qwen/model/qwen3.hpp"
#include "qwen/model/validate.hpp"
#include "qwen/model/weights.hpp"

namespace qwen {

// Owns the mapped files; `weights` points into them, so a LoadedCheckpoint is move-only and
// its weights stay valid for its lifetime (moving keeps the mappings where they are).
template <Qwen3Type Model>
struct LoadedCheckpoint {
  io::ModelConfig config;
  std::optional<io::GenerationConfig> generation;  // absent when the directory has no generation_config.json
  std::optional<io::TokenizerConfig> tokenizer;    // absent when it has no tokenizer_config.json
  io::Checkpoint checkpoint;
  Weights<Model> weights;
};

// The checkpoint's end-of-sequence ids: config.json's, then generation_config.json's (the union
// the engine stops on, as transformers and vLLM read them).
template <class Model>
[[nodiscard]] std::vector<std::int64_t> eos_token_ids(const LoadedCheckpoint<Model>& loaded) {
  std::vector<std::int64_t> ids = loaded.config.eos_token_ids;
  if (loaded.generation) ids.insert(ids.end(), loaded.generation->eos_token_ids.begin(), loaded.generation->eos_token_ids.end());
  return ids;
}

namespace detail {
// Every end-of-sequence id names a token of the model (what the engine requires of them).
inline void check_eos_ids(const std::vector<std::int64_t>& ids, std::int64_t vocab_size, const std::string& file) {
  for (std::size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= vocab_size)
      throw_error<ConfigError>(file, ": field 'eos_token_id' holds ", ids[i], ids.size() > 1 ? cat(" (item ", i, ")") : std::string(),
                               ", outside the vocabulary [0, ", vocab_size, ")");
}
}  // namespace detail

// Checks an already-parsed config against Model (and the end-of-sequence ids of config.json and
// generation_config.json against its vocabulary) and binds the directory's tensors.
template <Qwen3Type Model>
[[nodiscard]] LoadedCheckpoint<Model> load_checkpoint(const std::filesystem::path& dir, io::ModelConfig config) {
  validate_config<Model>(config);
  detail::check_eos_ids(config.eos_token_ids, Model::vocab_size, config.file);
  auto generation = io::read_generation_config(dir);
  if (generation) detail::check_eos_ids(generation->eos_token_ids, Model::vocab_size, (dir / "generation_config.json").string());
  auto tokenizer = io::read_tokenizer_config(dir);
  io::Checkpoint checkpoint = io::Checkpoint::open(dir);
  Weights<Model> weights = bind_weights<Model>(checkpoint);
  return LoadedCheckpoint<Model>{std::move(config), std::move(generation), std::move(tokenizer), std::move(checkpoint),
                                 std::move(weights)};
}

template <Qwen3Type Model>
[[nodiscard]] LoadedCheckpoint<Model> load_checkpoint(const std::filesystem::path& dir) {
  return load_checkpoint<Model>(dir, io::read_model_config(dir));
}

}  // namespace qwen

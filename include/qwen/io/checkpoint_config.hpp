// config.json of a checkpoint directory, completed from the tensors where it is silent.
//
// Dispatching to a compiled type needs the weight dtype. Some writers omit both "torch_dtype" and
// "dtype", but the checkpoint's tensors still say what the weights are: read_checkpoint_config
// takes it from model.embed_tokens.weight (never quantized, present in every Qwen3 checkpoint)
// and marks the config as inferred.
#pragma once

#include <filesystem>
#include <string>

#include "qwen/core/dtype.hpp"
#include "qwen/core/error.hpp"
#include "qwen/io/checkpoint.hpp"
#include "qwen/io/model_config.hpp"

namespace qwen::io {

inline constexpr const char* kDtypeWitnessTensor = "model.embed_tokens.weight";

// The config.json dtype string for a tensor dtype, or "" when there is none.
[[nodiscard]] inline std::string config_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::BF16: return "bfloat16";
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    default: return "";
  }
}

// Reads DIR/config.json; when it states no dtype, takes it from the checkpoint's
// model.embed_tokens.weight and sets dtype_inferred. Throws what read_model_config and
// Checkpoint::open throw, and WeightError when that tensor is absent or of another dtype.
[[nodiscard]] inline ModelConfig read_checkpoint_config(const std::filesystem::path& dir) {
  ModelConfig config = read_model_config(dir / "config.json");
  if (config.dtype) return config;
  const Checkpoint checkpoint = Checkpoint::open(dir);
  if (!checkpoint.contains(kDtypeWitnessTensor))
    throw_error<WeightError>(config.file, ": states no dtype (neither 'torch_dtype' nor 'dtype'), and ", dir.string(),
                             " has no tensor '", kDtypeWitnessTensor, "' to take it from");
  const TensorInfo& embed = checkpoint.info(kDtypeWitnessTensor);
  const std::string name = config_dtype_name(embed.dtype);
  if (name.empty())
    throw_error<WeightError>(config.file, ": states no dtype, and tensor '", kDtypeWitnessTensor, "' in ",
                             checkpoint.file_of(kDtypeWitnessTensor).string(), " has dtype ", dtype_name(embed.dtype),
                             ", which names no model dtype (expected BF16, F32 or F16)");
  config.dtype = name;
  config.dtype_inferred = true;
  return config;
}

}  // namespace qwen::io

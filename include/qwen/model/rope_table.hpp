// The RoPE inverse frequencies a checkpoint's config.json asks for (rope_theta, and YaRN when
// rope_scaling says so), for kernels::cpu::rope_cos_sin. Every backend builds its step's cos/sin
// table on the host from these (the CUDA backend then uploads it).
#pragma once

#include <optional>

#include <qwen/kernels/cpu/rope.hpp>

#include "qwen/io/model_config.hpp"

namespace qwen {

[[nodiscard]] inline kernels::cpu::RopeFrequencies rope_frequencies(const io::ModelConfig& c, int head_dim) {
  std::optional<kernels::cpu::YarnParams> yarn;
  if (c.yarn)
    yarn = kernels::cpu::YarnParams{c.yarn->factor, static_cast<double>(c.yarn->original_max_position_embeddings), c.yarn->beta_fast,
                                    c.yarn->beta_slow, c.yarn->attention_factor};
  return kernels::cpu::make_rope_frequencies(c.rope_theta, head_dim, yarn);
}

}  // namespace qwen

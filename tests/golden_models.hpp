// The golden checkpoints loaded as their model types, and their transformers references: what
// the forward-pass tests on every backend (test_forward.cpp, cuda/backend_gpu.cu) start from.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <qwen/io/checkpoint_config.hpp>
#include <qwen/model/load.hpp>
#include <qwen/model/registry.hpp>

#include "forward_reference.hpp"
#include "golden_fixtures.hpp"

namespace qwen::testing {

// Prompts per golden reference file (tests/golden/make_golden.py).
inline constexpr int golden_prompts = 4;

// tests/golden/reference/NAME.safetensors: transformers' logits and greedy continuations.
inline std::vector<Reference> read_golden_reference(std::string_view fixture) {
  return read_reference(golden_reference(fixture).replace_extension(".safetensors"), golden_prompts);
}

// Runs f with the loaded model of a golden fixture: f.template operator()<Model>(weights, config).
template <class F>
void with_golden_fixture(std::string_view name, F&& f) {
  const std::filesystem::path dir = golden_checkpoint(name);
  const io::ModelConfig config = io::read_model_config(dir);
  dispatch_model<TestModels>(config, [&]<class Model>() {
    const auto loaded = load_checkpoint<Model>(dir, config);
    f.template operator()<Model>(loaded.weights, config);
  });
}

}  // namespace qwen::testing

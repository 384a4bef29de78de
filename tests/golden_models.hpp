// The golden checkpoints loaded as their model types, and their transformers references: what
// the forward-pass tests on every backend (test_forward.cpp, cuda/backend_gpu.cu) start from.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <qwen/io/checkpoint_config.hpp>
#include <qwen/kv/kv_cache_dtype.hpp>
#include <qwen/model/load.hpp>
#include <qwen/model/registry.hpp>

#include "forward_reference.hpp"
#include "golden_fixtures.hpp"

namespace qwen::testing {

// Prompts per golden reference file (tests/golden/make_golden.py).
inline constexpr int golden_prompts = 4;

// transformers' logits and greedy continuations for a fixture: with an fp32 KV cache
// (reference/<name>.safetensors, make_golden.py), or with keys and values rounded to bf16
// (reference/<name>.kv_bf16.safetensors, make_kv_bf16_reference.py).
// The tolerance for a KV cache of that dtype against its reference (golden_fixtures.hpp says why
// bf16's is what it is).
inline ReferenceTolerance golden_tolerance(KVCacheDType kv) {
  if (kv == KVCacheDType::fp32) return {};
  return {.logit_fraction = bf16_kv_max_fraction, .mean_fraction = bf16_kv_mean_fraction, .near_ties_allowed = true};
}

inline std::vector<Reference> read_golden_reference(std::string_view fixture, KVCacheDType kv = KVCacheDType::fp32) {
  return read_reference(golden_reference(fixture).replace_extension(kv == KVCacheDType::bf16 ? ".kv_bf16.safetensors" : ".safetensors"),
                        golden_prompts);
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

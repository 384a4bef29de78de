// The runtime front door: config.json → the matching compiled model type. This is the one
// place where runtime values become template parameters (STYLE §1). Which types are compiled
// is the caller's choice of ModelList, so build time stays bounded.
#pragma once

#include <cstddef>
#include <limits>
#include <string>
#include <utility>

#include "qwen/core/error.hpp"
#include "qwen/io/model_config.hpp"
#include "qwen/model/qwen3.hpp"
#include "qwen/model/validate.hpp"

namespace qwen {

template <Qwen3Type... Models>
struct ModelList {
  static constexpr std::size_t size = sizeof...(Models);
};

template <class A, class B>
struct concat_model_lists;
template <class... A, class... B>
struct concat_model_lists<ModelList<A...>, ModelList<B...>> {
  using type = ModelList<A..., B...>;
};

// Every official shape with bf16 and block-FP8 weights.
using OfficialModels = ModelList<
    Qwen3Model<Dense, shapes::Qwen3_0_6B, bf16>, Qwen3Model<Dense, shapes::Qwen3_1_7B, bf16>,
    Qwen3Model<Dense, shapes::Qwen3_4B, bf16>, Qwen3Model<Dense, shapes::Qwen3_8B, bf16>,
    Qwen3Model<Dense, shapes::Qwen3_14B, bf16>, Qwen3Model<Dense, shapes::Qwen3_32B, bf16>,
    Qwen3Model<MoE, shapes::Qwen3_30B_A3B, bf16>, Qwen3Model<MoE, shapes::Qwen3_235B_A22B, bf16>,
    Qwen3Model<Dense, shapes::Qwen3_0_6B, fp8>, Qwen3Model<Dense, shapes::Qwen3_1_7B, fp8>,
    Qwen3Model<Dense, shapes::Qwen3_4B, fp8>, Qwen3Model<Dense, shapes::Qwen3_8B, fp8>,
    Qwen3Model<Dense, shapes::Qwen3_14B, fp8>, Qwen3Model<Dense, shapes::Qwen3_32B, fp8>,
    Qwen3Model<MoE, shapes::Qwen3_30B_A3B, fp8>, Qwen3Model<MoE, shapes::Qwen3_235B_A22B, fp8>>;

// The shapes of the golden fixtures (tests/golden), so that the tools run them too.
using TestModels = ModelList<
    Qwen3Model<Dense, shapes::TinyDenseTied, bf16>, Qwen3Model<Dense, shapes::TinyDenseTied, float>,
    Qwen3Model<Dense, shapes::TinyDense, bf16>, Qwen3Model<Dense, shapes::TinyDense, float>,
    Qwen3Model<Dense, shapes::TinyDense, fp8>, Qwen3Model<MoE, shapes::TinyMoE, bf16>>;

// The bundled demo checkpoint (models/demo).
using DemoModels = ModelList<Qwen3Model<Dense, shapes::Demo, bf16>>;

// What the qwen::cpu_models library compiles (qwen/model/cpu_model.hpp): the official types and
// the demo model.
using PrebuiltModels = concat_model_lists<OfficialModels, DemoModels>::type;

using ToolModels = concat_model_lists<OfficialModels, concat_model_lists<TestModels, DemoModels>::type>::type;

namespace detail {
template <class Model, class... Rest, class F>
decltype(auto) dispatch_in(const io::ModelConfig& config, F&& f, std::size_t best_count, std::string best) {
  auto mismatches = config_mismatches<Model>(config);
  if (mismatches.empty()) return std::forward<F>(f).template operator()<Model>();
  if (mismatches.size() < best_count) {
    best_count = mismatches.size();
    best = Model::name() + ", differs in: " + describe(mismatches);
  }
  if constexpr (sizeof...(Rest) > 0) {
    return dispatch_in<Rest...>(config, std::forward<F>(f), best_count, std::move(best));
  } else {
    throw_error<ConfigError>(config.file, ": matches no compiled Qwen3 type; the closest is ", best);
  }
}
}  // namespace detail

// Calls f.template operator()<Model>() with the type of List that config.json describes exactly;
// ConfigError naming the closest type and its differing fields when none does, and when the
// config states no dtype (the types would differ only in it: read the config with
// io::read_checkpoint_config, which takes the dtype from the tensors).
//   dispatch_model<ToolModels>(io::read_checkpoint_config(dir), [&]<class Model>() { ... });
template <class List, class F>
decltype(auto) dispatch_model(const io::ModelConfig& config, F&& f) {
  if (!config.dtype)
    throw_error<ConfigError>(config.file, ": states no dtype (neither 'torch_dtype' nor 'dtype'); read it with "
                                          "io::read_checkpoint_config, which takes the dtype from the checkpoint's tensors");
  return [&]<class... Models>(ModelList<Models...>*) -> decltype(auto) {
    static_assert(sizeof...(Models) > 0, "dispatch_model: empty ModelList");
    return detail::dispatch_in<Models...>(config, std::forward<F>(f), std::numeric_limits<std::size_t>::max(), std::string());
  }(static_cast<List*>(nullptr));
}

}  // namespace qwen

// CpuModel: a checkpoint loaded on the CPU backend with its forward pass, behind a virtual
// interface, so that a program's translation units see declarations only and the model code
// (loader, forward pass, kernels) is compiled once, elsewhere.
//
// Two ways to get one:
//   - load_cpu_model(dir, options), defined by the qwen::cpu_models library (src/cpu_models.cpp,
//     built and installed with the package) for qwen::PrebuiltModels: every official shape in
//     bf16 and FP8 and the bundled demo model. Link qwen::cpu_models and include this header.
//   - For a shape of your own, put load_cpu_model_as<List>(dir, options) (qwen/model/cpu_model_of.hpp)
//     in one translation unit of your program and declare it to the others; that unit pays the
//     compile time of the model code, the rest do not.
//
//   auto model = qwen::load_cpu_model(dir, {.forward = {.max_tokens = 512, .max_sequences = 8, .kv_blocks = 256}});
//   qwen::BlockManager<16> books(model->kv_blocks());
//   ... qwen::plan_step(books, chunks, model->limits(), plan); model->run(plan, logits); ...
//
// The plan must come from a BlockManager<cpu_model_block_size> over kv_blocks() blocks. This header
// includes only the step plan's (qwen/model/step.hpp) and the KV dtype's; no kernel, JSON or
// safetensors code.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string_view>
#include <vector>

#include "qwen/engine/step_model.hpp"
#include "qwen/kv/kv_cache_dtype.hpp"
#include "qwen/model/step.hpp"

namespace qwen {

namespace io {
struct ModelConfig;
}

// Token positions per KV block of a CpuModel.
inline constexpr int cpu_model_block_size = 16;

struct CpuModelOptions {
  ForwardOptions forward;  // the largest step and the KV pool (kv_blocks > 0)
  unsigned threads = 0;    // CPU backend threads; 0: every core
  KVCacheDType kv_cache_dtype = KVCacheDType::bf16;  // the KV cache's element (fp32: twice the bytes)
};

class CpuModel : public engine::StepModel {
 public:
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;  // e.g. "Qwen3<Dense, 0.6B, bf16>"
  // The vector level its kernels were compiled for: "avx512", "avx2" or "portable".
  [[nodiscard]] virtual std::string_view isa() const noexcept = 0;
  [[nodiscard]] virtual const io::ModelConfig& config() const noexcept = 0;
  // End-of-sequence ids: config.json's and generation_config.json's, in that order.
  [[nodiscard]] virtual const std::vector<std::int64_t>& eos_token_ids() const noexcept = 0;
  // From engine::StepModel: limits(), kv_blocks(), kv_bytes_per_token(), run(plan, logits) and
  // pool(), the backend's threads (never null here; the sampler can use them).
};

// Loads `dir` as the type of qwen::PrebuiltModels that its config.json describes (ConfigError
// naming the closest type and the differing fields when none does; the loader's errors as
// load_checkpoint's). Defined in the qwen::cpu_models library.
[[nodiscard]] std::unique_ptr<CpuModel> load_cpu_model(const std::filesystem::path& dir, const CpuModelOptions& options);

}  // namespace qwen

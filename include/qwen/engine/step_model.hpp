// StepModel: the forward pass as the engine sees it, behind one virtual call per step.
#pragma once

#include <cstdint>
#include <vector>

#include "qwen/model/step.hpp"

namespace qwen::kernels::cpu {
class ThreadPool;
}

namespace qwen::engine {

// KV bytes per position for a model whose cache stores K and V in elements of `element_bytes`
// bytes (the backend's kv_element_bytes(): 2 for bf16, CpuBackend's default and CudaBackend's;
// 4 for fp32).
template <class Model>
[[nodiscard]] constexpr std::int64_t kv_bytes_per_token(std::int64_t element_bytes) noexcept {
  return std::int64_t{Model::num_layers} * 2 * Model::num_kv_heads * Model::head_dim * element_bytes;
}

// A step plan in, rows of logits on the host out. The virtual call hides the model type, so the
// engine is compiled once per block size, not once per model (a tool that dispatches over every
// model type instantiates only the forward).
class StepModel {
 public:
  virtual ~StepModel() = default;
  [[nodiscard]] virtual const StepLimits& limits() const noexcept = 0;
  [[nodiscard]] virtual int kv_blocks() const noexcept = 0;
  [[nodiscard]] virtual std::int64_t kv_bytes_per_token() const noexcept = 0;
  // Runs the step; `logits` becomes [plan.num_logit_rows(), vocab].
  virtual void run(const StepPlan& plan, std::vector<float>& logits) = 0;
  // Threads for sampling the rows (nullptr: the loop thread alone).
  [[nodiscard]] virtual kernels::cpu::ThreadPool* pool() noexcept = 0;
};

}  // namespace qwen::engine

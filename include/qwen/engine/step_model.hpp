// StepModel: the forward pass as the engine sees it, behind one virtual call per step.
#pragma once

#include <cstdint>
#include <vector>

#include "qwen/model/step.hpp"

namespace qwen::kernels::cpu {
class ThreadPool;
}

namespace qwen::engine {

// KV bytes per position for a model on a backend that stores K and V as KVElement: float on the
// CPU backend, bf16 on CudaBackend (its KVElement).
template <class Model, class KVElement = float>
[[nodiscard]] constexpr std::int64_t kv_bytes_per_token() noexcept {
  return std::int64_t{Model::num_layers} * 2 * Model::num_kv_heads * Model::head_dim * static_cast<std::int64_t>(sizeof(KVElement));
}

// The element a backend stores K and V as: its KVElement, float when it names none (CpuBackend).
template <class BackendT>
struct kv_element_of {
  using type = float;
};
template <class BackendT>
  requires requires { typename BackendT::KVElement; }
struct kv_element_of<BackendT> {
  using type = typename BackendT::KVElement;
};

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

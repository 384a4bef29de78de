// CpuModelOf<Model>: the CpuModel (qwen/model/cpu_model.hpp) of one model type, and
// load_cpu_model_as<List>, which picks the type of List that config.json describes. This header
// brings the loader, the forward pass and the CPU kernels: include it in the one translation unit
// that instantiates your model list.
//
//   // my_models.cpp
//   #include <qwen/model/cpu_model_of.hpp>
//   std::unique_ptr<qwen::CpuModel> load_my_model(const std::filesystem::path& dir, const qwen::CpuModelOptions& o) {
//     return qwen::load_cpu_model_as<qwen::ModelList<qwen::Qwen3Model<qwen::Dense, MyShape, qwen::bf16>>>(dir, o);
//   }
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qwen/backend/cpu.hpp"
#include "qwen/io/checkpoint_config.hpp"
#include "qwen/model/cpu_model.hpp"
#include "qwen/model/forward.hpp"
#include "qwen/model/load.hpp"
#include "qwen/model/registry.hpp"

namespace qwen {

template <Qwen3Type Model>
class CpuModelOf final : public CpuModel {
 public:
  CpuModelOf(const std::filesystem::path& dir, io::ModelConfig config, const CpuModelOptions& options)
      : loaded_(load_checkpoint<Model>(dir, std::move(config))),
        backend_(options.threads, options.kv_cache_dtype),
        forward_(loaded_.weights, loaded_.config, backend_, options.forward),
        name_(Model::name()),
        eos_(qwen::eos_token_ids(loaded_)) {}

  [[nodiscard]] const StepLimits& limits() const noexcept override { return forward_.limits(); }
  [[nodiscard]] int kv_blocks() const noexcept override { return forward_.kv_cache().num_blocks(); }
  [[nodiscard]] std::int64_t kv_bytes_per_token() const noexcept override { return engine::kv_bytes_per_token<Model>(backend_.kv_element_bytes()); }
  void run(const StepPlan& plan, std::vector<float>& logits) override { forward_.run(plan, logits); }
  [[nodiscard]] kernels::cpu::ThreadPool* pool() noexcept override { return &backend_.pool(); }

  [[nodiscard]] std::string_view name() const noexcept override { return name_; }
  [[nodiscard]] std::string_view isa() const noexcept override { return CpuBackend::isa(); }
  [[nodiscard]] const io::ModelConfig& config() const noexcept override { return loaded_.config; }
  [[nodiscard]] const std::vector<std::int64_t>& eos_token_ids() const noexcept override { return eos_; }

  // The typed parts, for code that knows the type.
  [[nodiscard]] const LoadedCheckpoint<Model>& checkpoint() const noexcept { return loaded_; }
  [[nodiscard]] Qwen3Forward<Model, CpuBackend, cpu_model_block_size>& forward() noexcept { return forward_; }

 private:
  LoadedCheckpoint<Model> loaded_;
  CpuBackend backend_;
  Qwen3Forward<Model, CpuBackend, cpu_model_block_size> forward_;
  std::string name_;
  std::vector<std::int64_t> eos_;
};

// Loads `dir` as the type of List that `config` (io::read_checkpoint_config(dir)) describes.
template <class List>
[[nodiscard]] std::unique_ptr<CpuModel> load_cpu_model_as(const std::filesystem::path& dir, const io::ModelConfig& config,
                                                          const CpuModelOptions& options) {
  return dispatch_model<List>(config, [&]<class Model>() -> std::unique_ptr<CpuModel> {
    return std::make_unique<CpuModelOf<Model>>(dir, config, options);
  });
}
template <class List>
[[nodiscard]] std::unique_ptr<CpuModel> load_cpu_model_as(const std::filesystem::path& dir, const CpuModelOptions& options) {
  return load_cpu_model_as<List>(dir, io::read_checkpoint_config(dir), options);
}

}  // namespace qwen

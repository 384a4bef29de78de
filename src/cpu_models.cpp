// qwen::load_cpu_model for qwen::PrebuiltModels: the qwen::cpu_models library. The loader and the
// forward pass of every prebuilt type are compiled here, once, so that a program that includes
// qwen/model/cpu_model.hpp compiles none of it.
#include <qwen/model/cpu_model_of.hpp>

namespace qwen {

std::unique_ptr<CpuModel> load_cpu_model(const std::filesystem::path& dir, const CpuModelOptions& options) {
  return load_cpu_model_as<PrebuiltModels>(dir, options);
}

}  // namespace qwen

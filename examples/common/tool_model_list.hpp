// The model types the tools are compiled for: qwen::ToolModels (every official shape in bf16 and
// FP8, the golden fixtures' shapes and the demo model), or, when the build sets
// QWEN_TOOL_MODELS=tests (the sanitizer build does: each type's forward pass and engine compiled
// unoptimised and instrumented is minutes of build time, and the tests load only the golden and
// demo checkpoints), the golden fixtures' and the demo model's types only. A checkpoint of
// another type is then refused with the usual error naming the closest compiled type.
#pragma once

#include <qwen/model/registry.hpp>

namespace qwen_tools {

#if defined(QWEN_TOOL_MODELS_TESTS_ONLY)
using ToolModelList = qwen::concat_model_lists<qwen::TestModels, qwen::DemoModels>::type;
#else
using ToolModelList = qwen::ToolModels;
#endif

}  // namespace qwen_tools

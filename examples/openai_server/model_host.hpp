// The loaded model as the server sees it: qwen::engine::AnyLLM (an Engine<16> and the
// checkpoint's text side, the model type hidden), loaded through the tools' shared loader
// (examples/common/tool_models.hpp, the qwen-tool-models library, where the per-type code of
// qwen::ToolModels is compiled once for every tool). Everything in qwen-serve is compiled once.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <qwen/engine/any_llm.hpp>

#include "tool_models.hpp"

namespace qwen_serve {

inline constexpr int kv_block_size = 16;
using ServeEngine = qwen::engine::Engine<kv_block_size>;
using ModelHost = qwen::engine::AnyLLM;

using qwen_tools::load_model;
using qwen_tools::model_type_name;

}  // namespace qwen_serve

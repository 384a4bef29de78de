// The umbrella header: everything the library offers.
#pragma once

#include "qwen/backend/cpu.hpp"
#include "qwen/core/dtype.hpp"
#include "qwen/core/error.hpp"
#include "qwen/core/numeric.hpp"
#include "qwen/core/tensor.hpp"
#include "qwen/io/checkpoint.hpp"
#include "qwen/io/checkpoint_config.hpp"
#include "qwen/io/generation_config.hpp"
#include "qwen/io/json_file.hpp"
#include "qwen/io/model_config.hpp"
#include "qwen/io/path_status.hpp"
#include "qwen/io/safetensors.hpp"
#include "qwen/io/safetensors_writer.hpp"
#include "qwen/io/tokenizer_config.hpp"
#include "qwen/kv/paged_kv.hpp"
#include "qwen/model/forward.hpp"
#include "qwen/model/load.hpp"
#include "qwen/model/qwen3.hpp"
#include "qwen/model/registry.hpp"
#include "qwen/model/shapes.hpp"
#include "qwen/model/step.hpp"
#include "qwen/model/validate.hpp"
#include "qwen/model/weights.hpp"
// The tokenizer needs utf8proc (link qwen::tokenizer); it is part of the umbrella only where
// utf8proc's header is available, so that qwen::qwen alone stays usable without it.
#if __has_include(<utf8proc.h>)
#include "qwen/tokenizer/stream_decoder.hpp"
#include "qwen/tokenizer/tokenizer.hpp"
#endif

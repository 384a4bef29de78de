// What the forward-pass tests share: a golden reference file (transformers' logits at every
// position of a few prompts and its greedy continuations) and a forward pass driven with its own
// block books, plan_step + run, as an engine drives it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <catch2/catch.hpp>

#include <qwen/backend/cpu.hpp>
#include <qwen/io/safetensors.hpp>
#include <qwen/kv/block_manager.hpp>
#include <qwen/model/forward.hpp>
#include <qwen/model/step.hpp>

namespace qwen::testing {

inline constexpr int forward_block = 16;

struct Reference {
  std::vector<std::int32_t> ids;
  std::vector<float> logits;  // [ids.size(), vocab]
  std::vector<std::int32_t> greedy;
};

// prompt{i}.input_ids I64 [n], prompt{i}.logits F32 [n, vocab], prompt{i}.greedy I64 [m] for
// i < prompts (the layout tests/golden/make_golden.py writes).
inline std::vector<Reference> read_reference(const std::filesystem::path& file_path, int prompts) {
  const auto file = io::SafetensorsFile::open(file_path);
  std::vector<Reference> refs;
  for (int p = 0; p < prompts; ++p) {
    const std::string prefix = "prompt" + std::to_string(p) + ".";
    Reference r;
    const TensorView ids = file.view(prefix + "input_ids");
    const TensorView greedy = file.view(prefix + "greedy");
    const TensorView logits = file.view(prefix + "logits");
    for (std::int64_t i = 0; i < ids.numel(); ++i) r.ids.push_back(static_cast<std::int32_t>(ids.as<std::int64_t>(DType::I64)[i]));
    for (std::int64_t i = 0; i < greedy.numel(); ++i)
      r.greedy.push_back(static_cast<std::int32_t>(greedy.as<std::int64_t>(DType::I64)[i]));
    const float* l = logits.as<float>(DType::F32);
    r.logits.assign(l, l + logits.numel());
    refs.push_back(std::move(r));
  }
  return refs;
}

inline std::int32_t argmax(const float* row, std::int64_t n) {
  return static_cast<std::int32_t>(std::max_element(row, row + n) - row);
}

// A forward pass with its books: plan_step + run, as an engine drives it.
template <class Model>
struct Runner {
  Runner(const Weights<Model>& weights, const io::ModelConfig& config, CpuBackend& backend, int kv_blocks, std::int64_t max_tokens = 256)
      : model(weights, config, backend, {.max_tokens = max_tokens, .max_sequences = 8, .kv_blocks = kv_blocks, .max_logit_rows = max_tokens}),
        books(kv_blocks) {}
  void step(std::span<const SequenceChunk> chunks, std::vector<float>& logits) {
    plan_step(books, chunks, model.limits(), plan);
    model.run(plan, logits);
    books.check_invariants();
  }
  void step(const SequenceChunk& chunk, std::vector<float>& logits) { step(std::span(&chunk, 1), logits); }
  Qwen3Forward<Model, CpuBackend, forward_block> model;
  BlockManager<forward_block> books;
  StepPlan plan;
};

// Every prompt of refs run alone: logits at every prompt position within 1e-4 of the reference
// logit range (fp32 activations), then the greedy continuation (argmax of the last prompt
// position, one decode step per token) token for token.
template <class Model>
void check_against_reference(Runner<Model>& run, const std::vector<Reference>& refs, std::string_view what) {
  for (std::size_t p = 0; p < refs.size(); ++p) {
    INFO(what << ", prompt " << p);
    const Reference& ref = refs[p];
    const int seq = run.books.add_sequence();
    std::vector<float> logits(ref.logits.size(), NAN);
    run.step({seq, 0, ref.ids, Logits::all}, logits);
    REQUIRE(logits.size() == ref.logits.size());
    const auto [lo, hi] = std::minmax_element(ref.logits.begin(), ref.logits.end());
    const double tolerance = 1e-4 * (*hi - *lo);
    double worst = 0;
    for (std::size_t i = 0; i < logits.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(logits[i]) - ref.logits[i]));
    INFO("max |logit - reference| = " << worst << ", tolerance " << tolerance);
    CHECK(worst <= tolerance);

    std::vector<std::int32_t> generated{argmax(logits.data() + logits.size() - Model::vocab_size, Model::vocab_size)};
    while (generated.size() < ref.greedy.size()) {
      run.step({seq, run.books.length(seq), std::span(&generated.back(), 1), Logits::last}, logits);
      generated.push_back(argmax(logits.data(), Model::vocab_size));
    }
    CHECK(generated == ref.greedy);
    run.books.free_sequence(seq);
  }
}

}  // namespace qwen::testing

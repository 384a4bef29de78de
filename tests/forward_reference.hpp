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

// A forward pass on backend B with its books: plan_step + run, as an engine drives it.
template <class Model, class B>
struct Runner {
  Runner(const Weights<Model>& weights, const io::ModelConfig& config, B& backend, int kv_blocks, std::int64_t max_tokens = 256)
      : model(weights, config, backend, {.max_tokens = max_tokens, .max_sequences = 8, .kv_blocks = kv_blocks, .max_logit_rows = max_tokens}),
        books(kv_blocks) {}
  void step(std::span<const SequenceChunk> chunks, std::vector<float>& logits) {
    plan_step(books, chunks, model.limits(), plan);
    model.run(plan, logits);
    books.check_invariants();
  }
  void step(const SequenceChunk& chunk, std::vector<float>& logits) { step(std::span(&chunk, 1), logits); }
  Qwen3Forward<Model, B, forward_block> model;
  BlockManager<forward_block> books;
  StepPlan plan;
};

// How far logits are from a reference's: the largest and the mean |difference| (a NaN makes
// the largest infinite), and the reference's range (max - min), which tolerances scale by.
struct LogitDistance {
  double max = 0, mean = 0, range = 0;
};
inline LogitDistance logit_distance(const std::vector<float>& logits, const std::vector<float>& reference) {
  REQUIRE(logits.size() == reference.size());
  REQUIRE(!reference.empty());
  const auto [lo, hi] = std::minmax_element(reference.begin(), reference.end());
  LogitDistance d{0, 0, static_cast<double>(*hi) - *lo};
  double sum = 0;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const double diff = std::abs(static_cast<double>(logits[i]) - reference[i]);
    d.max = std::isnan(diff) ? INFINITY : std::max(d.max, diff);
    sum += diff;
  }
  d.mean = sum / static_cast<double>(logits.size());
  return d;
}

// How close a backend must come to the reference.
struct ReferenceTolerance {
  // Logits at every prompt position within this fraction of the reference logit range, and their
  // mean absolute difference within mean_fraction of it.
  double logit_fraction = 1e-4;
  double mean_fraction = 1e-4;
  // false: the greedy continuation runs on its own argmax and must equal the reference token for
  // token. true: each step is fed the reference's token (teacher forcing) and the argmax must
  // equal the reference's next token, except at a near-tie -- the top two logits within twice
  // the logit tolerance -- where the reference token must be one of the two (for backends
  // whose rounding is coarser than the reference's, e.g. bf16 activations).
  bool near_ties_allowed = false;
};

// Every prompt of refs run alone: logits at every prompt position against the reference, then
// the greedy continuation (one decode step per token), as `tolerance` says.
template <class Model, class B>
void check_against_reference(Runner<Model, B>& run, const std::vector<Reference>& refs, std::string_view what,
                             const ReferenceTolerance& tolerance = {}) {
  for (std::size_t p = 0; p < refs.size(); ++p) {
    INFO(what << ", prompt " << p);
    const Reference& ref = refs[p];
    const int seq = run.books.add_sequence();
    std::vector<float> logits(ref.logits.size(), NAN);
    run.step({seq, 0, ref.ids, Logits::all}, logits);
    const LogitDistance d = logit_distance(logits, ref.logits);
    const double limit = tolerance.logit_fraction * d.range, mean_limit = tolerance.mean_fraction * d.range;
    INFO("max |logit - reference| = " << d.max << ", tolerance " << limit << "; mean " << d.mean << ", tolerance " << mean_limit);
    CHECK(d.max <= limit);
    CHECK(d.mean <= mean_limit);

    const float* last = logits.data() + logits.size() - Model::vocab_size;
    if (!tolerance.near_ties_allowed) {
      std::vector<std::int32_t> generated{argmax(last, Model::vocab_size)};
      while (generated.size() < ref.greedy.size()) {
        run.step({seq, run.books.length(seq), std::span(&generated.back(), 1), Logits::last}, logits);
        generated.push_back(argmax(logits.data(), Model::vocab_size));
      }
      CHECK(generated == ref.greedy);
    } else {
      std::size_t near_ties = 0, mismatches = 0;
      for (std::size_t g = 0; g < ref.greedy.size(); ++g) {
        if (g > 0) {
          run.step({seq, run.books.length(seq), std::span(&ref.greedy[g - 1], 1), Logits::last}, logits);
          last = logits.data();
        }
        const std::int32_t first = argmax(last, Model::vocab_size);
        float second_value = -INFINITY;
        std::int32_t second = -1;
        for (std::int32_t t = 0; t < Model::vocab_size; ++t)
          if (t != first && last[t] > second_value) second_value = last[t], second = t;
        const bool near_tie = static_cast<double>(last[first]) - second_value <= 2 * limit;
        near_ties += near_tie;
        const bool ok = first == ref.greedy[g] || (near_tie && second == ref.greedy[g]);
        if (!ok) {
          ++mismatches;
          UNSCOPED_INFO("greedy step " << g << ": argmax " << first << ", reference " << ref.greedy[g]);
        }
      }
      INFO(ref.greedy.size() << " greedy steps, " << near_ties << " near-ties");
      CHECK(mismatches == 0);
    }
    run.books.free_sequence(seq);
  }
}

}  // namespace qwen::testing

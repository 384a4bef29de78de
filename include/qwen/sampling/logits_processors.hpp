// The logits processors that act before temperature: the min_tokens mask, logit_bias and the
// three penalties, in vLLM v1's order (sampler.py: min_tokens, logit_bias, then
// apply_all_penalties: repetition, frequency, presence). They touch only the tokens they name,
// so they edit the row in place and record the old values; RowEdits puts them back, which
// leaves the caller's logits unchanged when sampling returns (or throws).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/sampling/params.hpp"

namespace qwen::sampling {

// One row of a batch: its parameters and the tokens the penalties look at.
struct RowRequest {
  const SamplingParams* params = nullptr;
  std::uint64_t seed = 0;                         // the resolved seed (see Sampler::admit)
  std::span<const std::int32_t> prompt_tokens;    // for repetition_penalty
  std::span<const std::int32_t> output_tokens;    // generated so far; its size is the draw step
};

// Per-thread scratch of vocabulary size, kept all-zero between uses (O(tokens) to clean, never
// O(vocab)).
struct PenaltyScratch {
  std::vector<std::int32_t> output_count;  // occurrences of each token in the output
  std::vector<std::uint8_t> seen;          // token already penalised by repetition_penalty
  void reserve(std::int64_t vocab) {
    if (static_cast<std::int64_t>(output_count.size()) < vocab) {
      output_count.assign(static_cast<std::size_t>(vocab), 0);
      seen.assign(static_cast<std::size_t>(vocab), 0);
    }
  }
};

// The edited entries of one row, restored (in reverse order, so repeated edits of one token
// end at its original value) when this goes out of scope.
class RowEdits {
 public:
  explicit RowEdits(std::span<float> row) : row_(row) {}
  RowEdits(const RowEdits&) = delete;
  RowEdits& operator=(const RowEdits&) = delete;
  ~RowEdits() { restore(); }

  void set(std::int32_t token, float value) {
    saved_.emplace_back(token, row_[static_cast<std::size_t>(token)]);
    row_[static_cast<std::size_t>(token)] = value;
  }
  // The value the token had before any edit.
  [[nodiscard]] float original(std::int32_t token) const noexcept {
    for (const auto& [t, v] : saved_)  // the first save of a token holds its original
      if (t == token) return v;
    return row_[static_cast<std::size_t>(token)];
  }
  [[nodiscard]] bool empty() const noexcept { return saved_.empty(); }
  void restore() noexcept {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) row_[static_cast<std::size_t>(it->first)] = it->second;
    saved_.clear();
  }

 private:
  std::span<float> row_;
  std::vector<std::pair<std::int32_t, float>> saved_;
};

namespace detail {
inline void check_tokens(std::span<const std::int32_t> tokens, std::int64_t vocab, const std::string& where,
                         const char* name) {
  for (std::size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      throw_error<InvalidArgument>(where, name, "[", i, "] is ", tokens[i], ", outside the vocabulary [0, ", vocab, ")");
}
// A processor may lower a logit to -inf but never raise one to +inf or make NaN (a huge logit
// divided by a tiny repetition_penalty): later stages could not compare or normalise it.
inline float checked(float value, std::int32_t token, const std::string& where, const char* name) {
  if (std::isnan(value) || value == std::numeric_limits<float>::infinity())
    throw_error<InvalidArgument>(where, "token ", token, ": logit becomes ", value, " after ", name);
  return value;
}
}  // namespace detail

// Applies the processors of `request` to `row` ([vocab] logits) through `edits`.
inline void apply_logits_processors(std::span<float> row, const RowRequest& request, PenaltyScratch& scratch,
                                    RowEdits& edits, const std::string& where = "") {
  const SamplingParams& p = *request.params;
  const auto vocab = static_cast<std::int64_t>(row.size());
  detail::check_tokens(request.prompt_tokens, vocab, where, "prompt token");
  detail::check_tokens(request.output_tokens, vocab, where, "output token");
  const auto at = [&](std::int32_t t) { return row[static_cast<std::size_t>(t)]; };

  // 1. min_tokens: the request may not end before it has generated min_tokens tokens.
  if (static_cast<std::int64_t>(request.output_tokens.size()) < p.min_tokens)
    for (const std::int32_t t : p.stop_token_ids) edits.set(t, -std::numeric_limits<float>::infinity());
  // 2. logit_bias, added (OpenAI).
  for (const auto& [t, bias] : p.logit_bias) edits.set(t, detail::checked(at(t) + bias, t, where, "logit_bias"));
  // 3. repetition_penalty (HF RepetitionPenaltyLogitsProcessor), once per distinct token of
  //    prompt and output: positive logits are divided by it, the others multiplied.
  if (p.repetition_penalty != 1.0) {
    scratch.reserve(vocab);
    const auto r = static_cast<float>(p.repetition_penalty);
    const auto penalise = [&](std::int32_t t) {
      auto& seen = scratch.seen[static_cast<std::size_t>(t)];
      if (seen) return;
      seen = 1;
      const float l = at(t);
      edits.set(t, detail::checked(l > 0 ? l / r : l * r, t, where, "repetition_penalty"));
    };
    for (const std::int32_t t : request.prompt_tokens) penalise(t);
    for (const std::int32_t t : request.output_tokens) penalise(t);
    for (const std::int32_t t : request.prompt_tokens) scratch.seen[static_cast<std::size_t>(t)] = 0;
    for (const std::int32_t t : request.output_tokens) scratch.seen[static_cast<std::size_t>(t)] = 0;
  }
  // 4. frequency_penalty (per occurrence) and presence_penalty (once), over the output only.
  if (p.frequency_penalty != 0 || p.presence_penalty != 0) {
    scratch.reserve(vocab);
    for (const std::int32_t t : request.output_tokens) ++scratch.output_count[static_cast<std::size_t>(t)];
    for (const std::int32_t t : request.output_tokens) {
      auto& count = scratch.output_count[static_cast<std::size_t>(t)];
      if (count == 0) continue;  // already done
      // Two fp32 subtractions, as vLLM's `logits -= f * counts; logits -= p * mask`.
      float l = at(t) - static_cast<float>(p.frequency_penalty) * static_cast<float>(count);
      l -= static_cast<float>(p.presence_penalty);
      edits.set(t, detail::checked(l, t, where, "frequency_penalty/presence_penalty"));
      count = 0;
    }
  }
}

}  // namespace qwen::sampling

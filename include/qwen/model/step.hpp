// One forward step's batch: a flat list of tokens from several sequences. Each sequence
// contributes one chunk: a prefill chunk of any length starting at any position up to what its
// cache already holds, or a single decode token. The plan is made and checked on the host
// once per step; the forward pass only reads it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "qwen/core/error.hpp"

namespace qwen {

enum class Logits : std::uint8_t {
  none,  // no logits for this chunk (e.g. the first parts of a long prefill)
  last,  // the logits after its last token (what generation needs)
  all,   // the logits after every token (scoring, tests)
};

struct SequenceChunk {
  int sequence = 0;         // id from the model's add_sequence()
  int start_position = 0;   // position of tokens[0]; positions [0, start_position) must be cached
  std::span<const std::int32_t> tokens;
  Logits logits = Logits::last;
};

// Flat arrays over the step's tokens, in chunk order.
struct StepPlan {
  std::vector<std::int32_t> tokens;       // [n]
  std::vector<std::int32_t> positions;    // [n] absolute position of each token
  std::vector<std::int32_t> slot;         // [n] index into `sequences` of each token's sequence
  std::vector<int> sequences;             // the step's sequence ids, one per chunk
  std::vector<std::int32_t> logit_rows;   // token indices whose logits are returned, in output order
  std::vector<int> chunk_logit_begin;     // per chunk: its first row in the logits output
  [[nodiscard]] std::int64_t num_tokens() const noexcept { return static_cast<std::int64_t>(tokens.size()); }
};

// Builds the plan; cached_length(seq) says how many positions the sequence's cache holds.
// Errors name the chunk and the offending value: empty chunk, a sequence twice in one step,
// a start past the cached length, positions past max_positions, token ids outside [0, vocab).
template <class CachedLength>
[[nodiscard]] StepPlan make_step_plan(std::span<const SequenceChunk> chunks, std::int64_t vocab, std::int64_t max_positions,
                                      CachedLength&& cached_length) {
  StepPlan plan;
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    const SequenceChunk& chunk = chunks[c];
    const std::string where = detail::cat("step: chunk ", c, " (sequence ", chunk.sequence, ")");
    if (chunk.tokens.empty()) throw_error<InvalidArgument>(where, ": no tokens");
    for (int earlier : plan.sequences)
      if (earlier == chunk.sequence) throw_error<InvalidArgument>(where, ": the sequence appears twice in one step");
    const std::int64_t cached = cached_length(chunk.sequence);
    if (chunk.start_position < 0 || chunk.start_position > cached)
      throw_error<InvalidArgument>(where, ": start position ", chunk.start_position, " but the cache holds ", cached,
                                   " positions (a chunk must start at or before the cached length)");
    const std::int64_t end = static_cast<std::int64_t>(chunk.start_position) + static_cast<std::int64_t>(chunk.tokens.size());
    if (end > max_positions)
      throw_error<InvalidArgument>(where, ": positions up to ", end, " exceed max_position_embeddings ", max_positions);
    const auto slot = static_cast<std::int32_t>(plan.sequences.size());
    plan.sequences.push_back(chunk.sequence);
    plan.chunk_logit_begin.push_back(static_cast<int>(plan.logit_rows.size()));
    for (std::size_t i = 0; i < chunk.tokens.size(); ++i) {
      const std::int32_t id = chunk.tokens[i];
      if (id < 0 || id >= vocab)
        throw_error<InvalidArgument>(where, ": token id ", id, " at index ", i, " is outside the vocabulary [0, ", vocab, ")");
      const auto row = static_cast<std::int32_t>(plan.tokens.size());
      plan.tokens.push_back(id);
      plan.positions.push_back(static_cast<std::int32_t>(chunk.start_position + static_cast<std::int64_t>(i)));
      plan.slot.push_back(slot);
      if (chunk.logits == Logits::all || (chunk.logits == Logits::last && i + 1 == chunk.tokens.size()))
        plan.logit_rows.push_back(row);
    }
  }
  return plan;
}

}  // namespace qwen

// One forward step: what the caller asks for (SequenceChunk), and the whole plan of the step
// (StepPlan), built once on the host by plan_step. The plan says, per token, its id, position,
// sequence and physical KV slot; per sequence, its query range, its context length and its
// block table (CSR); which rows return logits; and which KV blocks the storage must copy first
// (copy-on-write of shared blocks). A backend receives it once per step (prepare) and every op
// reads the prepared plan; nothing else about sequences reaches the forward pass.
//
// plan_step checks the whole request before it changes the books, so a refused step changes
// nothing. With a StepPlan reused from step to step (its vectors keep their capacity), planning
// allocates nothing once the largest step has been seen.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/kv/block_manager.hpp"

namespace qwen {

enum class Logits : std::uint8_t {
  none,  // no logits for this chunk (e.g. the first parts of a long prefill)
  last,  // the logits after its last token (what generation needs)
  all,   // the logits after every token (scoring, tests)
};

struct SequenceChunk {
  int sequence = 0;         // id from BlockManager::add_sequence()
  int start_position = 0;   // position of tokens[0]; at most the sequence's length (a chunk may rewrite from any earlier position)
  std::span<const std::int32_t> tokens;
  Logits logits = Logits::last;
};

// The largest step a forward pass was built for, and the model's limits.
struct StepLimits {
  std::int64_t vocab_size = 0;
  std::int64_t max_positions = 0;  // max_position_embeddings
  std::int64_t max_tokens = 0;     // tokens in one step
  int max_sequences = 0;           // sequences in one step
  std::int64_t max_logit_rows = 0; // rows of logits in one step
};

// The largest step the forward pass is built for, and the KV cache's size.
struct ForwardOptions {
  std::int64_t max_tokens = 512;  // tokens in one step (a prefill chunk and the decodes beside it)
  int max_sequences = 64;         // sequences in one step
  int kv_blocks = 0;              // KV cache capacity in blocks, shared by all sequences (> 0)
  std::int64_t max_logit_rows = 64;  // rows of logits one step returns ([rows, vocab] floats are reserved)
};

struct StepPlan {
  int block_size = 0;
  // Per token, [num_tokens], in chunk order.
  std::vector<std::int32_t> tokens;
  std::vector<std::int32_t> positions;          // absolute position
  std::vector<std::int32_t> sequence_of_token;  // index into the per-sequence arrays
  std::vector<std::int32_t> kv_slot;            // block * block_size + position % block_size: where its K/V go
  // Per sequence, in chunk order.
  std::vector<int> sequences;                   // BlockManager ids, [num_sequences]
  std::vector<std::int32_t> query_start;        // [num_sequences + 1]: tokens [query_start[s], query_start[s+1]) are s's
  std::vector<std::int32_t> context_length;     // [num_sequences]: positions cached after the step
  std::vector<std::int32_t> block_table_indptr;   // [num_sequences + 1]
  std::vector<std::int32_t> block_table_indices;  // [block_table_indptr.back()]: physical blocks in logical order
  // Token indices whose logits are returned, in output order.
  std::vector<std::int32_t> logit_rows;
  // Blocks the storage copies (every layer, K and V) before the step writes any K/V.
  std::vector<BlockCopy> block_copies;

  [[nodiscard]] std::int64_t num_tokens() const noexcept { return static_cast<std::int64_t>(tokens.size()); }
  [[nodiscard]] int num_sequences() const noexcept { return static_cast<int>(sequences.size()); }
  [[nodiscard]] std::int64_t num_logit_rows() const noexcept { return static_cast<std::int64_t>(logit_rows.size()); }

  void clear() noexcept {
    for (auto* v : {&tokens, &positions, &sequence_of_token, &kv_slot, &query_start, &context_length, &block_table_indptr,
                    &block_table_indices, &logit_rows})
      v->clear();
    sequences.clear();
    block_copies.clear();
  }
};

// Checks `chunks` against the books and the limits, extends the books (so the blocks the step
// writes are allocated, copied-on-write where shared, and registered for prefix reuse), and
// writes the step's plan into `plan` (cleared first). Errors name the chunk and the offending
// value: empty chunk, unknown sequence, a sequence twice in one step, a start past the
// sequence's length, positions past max_positions, token ids outside [0, vocab), a step larger
// than the limits, and a cache too small (blocks needed and free). On an error the books are
// unchanged.
template <int BlockSize>
void plan_step(BlockManager<BlockSize>& books, std::span<const SequenceChunk> chunks, const StepLimits& limits, StepPlan& plan) {
  std::int64_t total_tokens = 0, blocks = 0, logit_rows = 0;
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    const SequenceChunk& chunk = chunks[c];
    const auto where = [&] { return detail::cat("step: chunk ", c, " (sequence ", chunk.sequence, ")"); };
    if (chunk.tokens.empty()) throw_error<InvalidArgument>(where(), ": no tokens");
    if (!books.contains(chunk.sequence)) throw_error<InvalidArgument>(where(), ": the sequence does not exist");
    for (std::size_t e = 0; e < c; ++e)
      if (chunks[e].sequence == chunk.sequence) throw_error<InvalidArgument>(where(), ": the sequence appears twice in one step");
    const std::int64_t length = books.length(chunk.sequence);
    if (chunk.start_position < 0 || chunk.start_position > length)
      throw_error<InvalidArgument>(where(), ": start position ", chunk.start_position, " but the cache holds ", length,
                                   " positions (a chunk must start at or before the cached length)");
    const std::int64_t end = static_cast<std::int64_t>(chunk.start_position) + static_cast<std::int64_t>(chunk.tokens.size());
    if (end > limits.max_positions)
      throw_error<InvalidArgument>(where(), ": positions up to ", end, " exceed max_position_embeddings ", limits.max_positions);
    for (std::size_t i = 0; i < chunk.tokens.size(); ++i)
      if (chunk.tokens[i] < 0 || chunk.tokens[i] >= limits.vocab_size)
        throw_error<InvalidArgument>(where(), ": token id ", chunk.tokens[i], " at index ", i, " is outside the vocabulary [0, ",
                                     limits.vocab_size, ")");
    total_tokens += static_cast<std::int64_t>(chunk.tokens.size());
    if (total_tokens > limits.max_tokens)
      throw_error<InvalidArgument>("step: ", total_tokens, " tokens up to chunk ", c, ", the forward pass was built for at most ",
                                   limits.max_tokens);
    logit_rows += chunk.logits == Logits::all ? static_cast<std::int64_t>(chunk.tokens.size()) : chunk.logits == Logits::last ? 1 : 0;
    // The extends run in chunk order, each after its own cut: each must fit in what is free by
    // then (an upper bound: a block shared by several of the step's sequences is counted by each).
    blocks += books.blocks_needed(chunk.sequence, chunk.start_position, static_cast<int>(chunk.tokens.size())) -
              books.blocks_returned(chunk.sequence, chunk.start_position);
    if (blocks > books.num_free_blocks())
      throw_error<InvalidArgument>(where(), ": the KV cache needs ", blocks, " more blocks of ", BlockSize, " positions, ",
                                   books.num_free_blocks(), " are free");
  }
  if (static_cast<std::int64_t>(chunks.size()) > limits.max_sequences)
    throw_error<InvalidArgument>("step: ", chunks.size(), " sequences, the forward pass was built for at most ", limits.max_sequences);
  if (logit_rows > limits.max_logit_rows)
    throw_error<InvalidArgument>("step: ", logit_rows, " rows of logits, the forward pass was built for at most ", limits.max_logit_rows);

  plan.clear();
  plan.block_size = BlockSize;
  plan.query_start.push_back(0);
  plan.block_table_indptr.push_back(0);
  for (const SequenceChunk& chunk : chunks) books.extend(chunk.sequence, chunk.start_position, chunk.tokens, plan.block_copies);
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    const SequenceChunk& chunk = chunks[c];
    const auto table = books.block_table(chunk.sequence);
    const auto index = static_cast<std::int32_t>(c);
    plan.sequences.push_back(chunk.sequence);
    for (std::size_t i = 0; i < chunk.tokens.size(); ++i) {
      const auto row = static_cast<std::int32_t>(plan.tokens.size());
      const auto position = static_cast<std::int32_t>(chunk.start_position + static_cast<std::int64_t>(i));
      plan.tokens.push_back(chunk.tokens[i]);
      plan.positions.push_back(position);
      plan.sequence_of_token.push_back(index);
      plan.kv_slot.push_back(table[static_cast<std::size_t>(position / BlockSize)] * BlockSize + position % BlockSize);
      if (chunk.logits == Logits::all || (chunk.logits == Logits::last && i + 1 == chunk.tokens.size()))
        plan.logit_rows.push_back(row);
    }
    plan.query_start.push_back(static_cast<std::int32_t>(plan.tokens.size()));
    plan.context_length.push_back(static_cast<std::int32_t>(books.length(chunk.sequence)));
    plan.block_table_indices.insert(plan.block_table_indices.end(), table.begin(), table.end());
    plan.block_table_indptr.push_back(static_cast<std::int32_t>(plan.block_table_indices.size()));
  }
}

}  // namespace qwen

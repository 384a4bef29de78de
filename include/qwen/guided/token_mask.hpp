// From a grammar state to the tokens that may come next, and from a chosen token to the next state.
//
// A token is allowed when every one of its bytes is accepted in turn (grammar.hpp); since the
// grammar accepts only bytes that keep the output completable, an allowed token never leads to a
// state with no way on. Special tokens (<|im_end|> and the like) and ids the tokenizer does not
// know (a padded vocabulary) are never allowed: generation under a grammar ends when the grammar
// is complete, not at an end-of-sequence token.
//
// Cost: one pass over the vocabulary per step, cut short by three shortcuts, all exact:
//   - inside free text up to a terminator (a think block), a token without the terminator's last
//     byte cannot end it, so it is allowed without stepping (a 64-bit set of the bytes each token
//     holds answers that with one AND);
//   - otherwise tokens are grouped by their first byte; a first byte the state refuses refuses its
//     group (one grammar step for all of them);
//   - inside a JSON string with nothing pending (before the token, or after its first byte), a
//     token made of whole UTF-8 characters other than '"', '\' and controls leaves the state
//     unchanged: allowed without stepping it.
// Everything else steps a copy of the state through the token's bytes. bench/bench_guided.cpp
// measures each state against stepping every token.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/guided/grammar.hpp"
#include "qwen/tokenizer/tokenizer.hpp"
#include "qwen/tokenizer/unicode.hpp"

namespace qwen::guided {

// The bytes of every token of a vocabulary, grouped by first byte. Built once per tokenizer.
class TokenBytes {
 public:
  TokenBytes(const tokenizer::Tokenizer& tok, std::int64_t vocab_size) : vocab_(vocab_size) {
    if (vocab_size <= 0) throw_error<InvalidArgument>("guided decoding: the vocabulary size is ", vocab_size);
    offsets_.assign(static_cast<std::size_t>(vocab_size) + 1, 0);
    plain_.assign(static_cast<std::size_t>(vocab_size), 0);
    byte_set_.assign(static_cast<std::size_t>(vocab_size), 0);
    std::array<std::vector<std::int32_t>, 256> groups;
    for (std::int64_t id = 0; id < vocab_size; ++id) {
      const auto t = static_cast<tokenizer::TokenId>(id);
      offsets_[static_cast<std::size_t>(id)] = static_cast<std::uint32_t>(bytes_.size());
      if (!tok.has_token(t) || tok.is_special(t)) continue;  // never allowed: no bytes
      const std::string_view b = tok.token_bytes(t);
      if (b.empty()) continue;
      bytes_ += b;
      groups[static_cast<std::uint8_t>(b[0])].push_back(static_cast<std::int32_t>(id));
      plain_[static_cast<std::size_t>(id)] = plain_string_text(b);
      for (const char c : b) byte_set_[static_cast<std::size_t>(id)] |= byte_bit(static_cast<std::uint8_t>(c));
    }
    offsets_[static_cast<std::size_t>(vocab_size)] = static_cast<std::uint32_t>(bytes_.size());
    for (unsigned g = 0; g < 256; ++g) {
      group_begin_[g] = static_cast<std::uint32_t>(by_first_byte_.size());
      by_first_byte_.insert(by_first_byte_.end(), groups[g].begin(), groups[g].end());
    }
    group_begin_[256] = static_cast<std::uint32_t>(by_first_byte_.size());
  }

  [[nodiscard]] std::int64_t vocab_size() const noexcept { return vocab_; }
  // Empty for special and unknown ids.
  [[nodiscard]] std::string_view bytes(std::int32_t id) const noexcept {
    const auto i = static_cast<std::size_t>(id);
    return std::string_view(bytes_).substr(offsets_[i], offsets_[i + 1] - offsets_[i]);
  }
  // Whole UTF-8 characters, none of them '"', '\' or a control.
  [[nodiscard]] bool plain_string(std::int32_t id) const noexcept { return plain_[static_cast<std::size_t>(id)] != 0; }
  // A superset of the token's bytes, as byte_bit(b) bits: no bit, no such byte.
  [[nodiscard]] static constexpr std::uint64_t byte_bit(std::uint8_t b) noexcept { return std::uint64_t{1} << (b & 63u); }
  [[nodiscard]] std::uint64_t byte_set(std::int32_t id) const noexcept { return byte_set_[static_cast<std::size_t>(id)]; }
  // The tokens whose first byte is b.
  [[nodiscard]] std::span<const std::int32_t> group(std::uint8_t b) const noexcept {
    return std::span<const std::int32_t>(by_first_byte_).subspan(group_begin_[b], group_begin_[b + 1u] - group_begin_[b]);
  }

 private:
  static std::uint8_t plain_string_text(std::string_view b) {
    for (const char c : b)
      if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20) return 0;
    return tokenizer::unicode::first_invalid(b) == std::string_view::npos ? 1 : 0;
  }

  std::int64_t vocab_;
  std::string bytes_;
  std::vector<std::uint32_t> offsets_;      // [vocab + 1] into bytes_
  std::vector<std::uint8_t> plain_;         // [vocab]
  std::vector<std::uint64_t> byte_set_;     // [vocab]
  std::vector<std::int32_t> by_first_byte_;
  std::array<std::uint32_t, 257> group_begin_{};
};

// Whether `token` may come next from `state`.
[[nodiscard]] inline bool token_allowed(const Grammar& g, const GuideState& state, const TokenBytes& vocab, std::int32_t token) {
  const std::string_view b = vocab.bytes(token);
  if (b.empty()) return false;
  GuideState s = state;
  return guide_step(g, s, b);
}

namespace mask_detail {
// The first-byte groups and the string shortcut (see the top of the file): marks allowed tokens.
inline std::int64_t mask_by_first_byte(const Grammar& g, const GuideState& state, const TokenBytes& vocab,
                                       std::vector<std::uint8_t>& allowed) {
  std::int64_t count = 0;
  for (unsigned first = 0; first < 256; ++first) {
    const std::span<const std::int32_t> group = vocab.group(static_cast<std::uint8_t>(first));
    if (group.empty()) continue;
    GuideState after_first = state;
    if (!guide_step(g, after_first, static_cast<std::uint8_t>(first))) continue;
    const bool plain = guide_in_plain_string(g, after_first);
    for (const std::int32_t t : group) {
      const std::string_view b = vocab.bytes(t);
      bool ok = b.size() == 1 || (plain && vocab.plain_string(t));
      if (!ok) {
        GuideState s = after_first;
        ok = guide_step(g, s, b.substr(1));
      }
      if (ok) {
        allowed[static_cast<std::size_t>(t)] = 1;
        ++count;
      }
    }
  }
  return count;
}
}  // namespace mask_detail

// Sets every logit of `row` ([vocab]) whose token may not come next from `state` to -inf.
// Returns how many tokens are allowed.
inline std::int64_t mask_logits(const Grammar& g, const GuideState& state, const TokenBytes& vocab, std::span<float> row) {
  if (static_cast<std::int64_t>(row.size()) != vocab.vocab_size())
    throw_error<InvalidArgument>("guided decoding: a row of ", row.size(), " logits for a vocabulary of ", vocab.vocab_size());
  constexpr float never = -std::numeric_limits<float>::infinity();
  // Mark the allowed tokens by keeping their logits; start from "all refused" in a scratch of flags.
  thread_local std::vector<std::uint8_t> allowed;
  allowed.assign(row.size(), 0);
  std::int64_t count = 0;
  // Every token, allowed outright when `skip_step` says stepping cannot refuse it.
  const auto each_token = [&](auto skip_step) {
    for (std::int64_t t = 0; t < vocab.vocab_size(); ++t) {
      const auto id = static_cast<std::int32_t>(t);
      if (vocab.bytes(id).empty()) continue;
      if (skip_step(id) || token_allowed(g, state, vocab, id)) {
        allowed[static_cast<std::size_t>(t)] = 1;
        ++count;
      }
    }
  };
  const Segment* segment = state.segment < g.size() ? &g[state.segment] : nullptr;
  if (segment && segment->kind == Segment::Kind::until) {
    const std::uint64_t end_bit = TokenBytes::byte_bit(static_cast<std::uint8_t>(segment->texts[0].back()));
    each_token([&](std::int32_t id) { return (vocab.byte_set(id) & end_bit) == 0; });
  } else if (guide_in_plain_string(g, state)) {
    each_token([&](std::int32_t id) { return vocab.plain_string(id); });
  } else {
    count = mask_detail::mask_by_first_byte(g, state, vocab, allowed);
  }
  for (std::size_t i = 0; i < row.size(); ++i)
    if (!allowed[i]) row[i] = never;
  return count;
}

}  // namespace qwen::guided

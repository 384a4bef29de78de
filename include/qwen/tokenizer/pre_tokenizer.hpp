// The Qwen pre-tokenizer: tokenizer.json's Split with Qwen's regex, behaviour "Isolated", written
// as a hand scanner over Unicode classes instead of a regex engine. The pattern is
//
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// and Hugging Face runs it with Oniguruma: leftmost-first alternation, \s = Unicode White_Space,
// case-insensitive matching with Unicode simple case folding (so "'ſ" -- U+017F LONG S -- is the
// contraction "'s"). Every character is matched by some alternative, so the pieces are exactly the
// successive matches and cover the text. The scanner tries the alternatives in the pattern's order
// at each position; each `case` below says which alternative it is and how backtracking resolves.
#pragma once

#include <cstddef>
#include <string_view>

#include "qwen/tokenizer/unicode.hpp"

namespace qwen::tokenizer {

// The pattern this scanner implements, as it appears in tokenizer.json.
inline constexpr std::string_view kQwenSplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace detail {

// Length of a contraction (' followed by s t re ve m ll d in any case) at s[i] == '\'', or 0.
[[nodiscard]] inline std::size_t contraction_length(std::string_view s, std::size_t i) noexcept {
  const auto lower = [&](std::size_t k) -> char {
    if (i + k >= s.size()) return 0;
    const char c = s[i + k];
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
  };
  const char a = lower(1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (a == '\xC5' && i + 2 < s.size() && s[i + 2] == '\xBF') return 3;  // U+017F folds to 's'
  const char b = lower(2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

}  // namespace detail

// Calls emit(std::string_view piece) for each piece of `text` (valid UTF-8, already normalised),
// in order; the pieces concatenate to `text`.
template <class Emit>
void split_qwen_pieces(std::string_view text, Emit&& emit, const unicode::ClassTable& classes = unicode::ClassTable::get()) {
  using namespace unicode;
  const std::size_t n = text.size();
  // Class flags of the character at p (0 at the end of the text) and the offset after it.
  const auto look = [&](std::size_t p, std::size_t& after) -> std::uint8_t {
    if (p >= n) {
      after = n;
      return 0;
    }
    const auto c = static_cast<unsigned char>(text[p]);
    if (c < 0x80) {
      after = p + 1;
      return classes(c);
    }
    after = p;
    return classes(decode_at(text, after));
  };
  const auto is_newline = [&](std::size_t p) { return text[p] == '\r' || text[p] == '\n'; };
  const auto letter_run_end = [&](std::size_t p) {
    std::size_t after;
    while (p < n && (look(p, after) & kLetter)) p = after;
    return p;
  };
  constexpr std::uint8_t kLNS = kLetter | kNumber | kWhitespace;

  std::size_t i = 0;
  while (i < n) {
    std::size_t next;
    const std::uint8_t cls = look(i, next);
    std::size_t end = 0;
    if (text[i] == '\'' && (end = detail::contraction_length(text, i)) != 0) {
      end += i;  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    } else if (cls & kLetter) {
      end = letter_run_end(next);  // [^\r\n\p{L}\p{N}]?\p{L}+ with the optional part empty
    } else if (std::size_t after; !(cls & kNumber) && !is_newline(i) && (look(next, after) & kLetter)) {
      end = letter_run_end(after);  // [^\r\n\p{L}\p{N}]?\p{L}+ with one leading character
    } else if (cls & kNumber) {
      end = next;  // \p{N}: one character at a time
    } else if (std::size_t after; !(cls & kLNS) || (text[i] == ' ' && !(look(next, after) & kLNS) && next < n)) {
      // ` ?[^\s\p{L}\p{N}]+[\r\n]*`: an optional space, a run of "other" characters, newlines.
      std::size_t p = (cls & kLNS) ? next : i;
      while (p < n && !(look(p, after) & kLNS)) p = after;
      while (p < n && is_newline(p)) ++p;
      end = p;
    } else {
      // Whitespace. Find the maximal run [i, run_end), its last character and its last newline.
      std::size_t run_end = i, last_start = i, last_newline_end = 0;
      for (std::size_t after; run_end < n && (look(run_end, after) & kWhitespace); run_end = after) {
        last_start = run_end;
        if (is_newline(run_end)) last_newline_end = run_end + 1;
      }
      if (last_newline_end != 0) end = last_newline_end;  // \s*[\r\n]+: backtracks to the last newline
      else if (run_end == n) end = n;                      // \s+(?!\S) at the end of the text
      else if (last_start > i) end = last_start;           // \s+(?!\S): leave the last space to the next word
      else end = run_end;                                  // \s+: one whitespace character before a non-space
    }
    emit(text.substr(i, end - i));
    i = end;
  }
}

}  // namespace qwen::tokenizer

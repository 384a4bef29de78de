// Added tokens (<|im_start|>, <think>, ...) are found in the raw text before anything else, as
// Hugging Face's AddedVocabulary does for tokens with "normalized": false: the leftmost match
// wins and, among matches starting at the same byte, the longest (aho-corasick LeftmostLongest).
// The text between matches is then normalised and pre-tokenized; the matches become their ids.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "qwen/tokenizer/bpe.hpp"

namespace qwen::tokenizer {

struct AddedToken {
  TokenId id = -1;
  std::string content;
  bool special = false;  // skipped by decode(..., skip_special_tokens = true)
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens) {
    for (const AddedToken& t : tokens) {
      if (t.content.empty()) continue;
      by_first_byte_[static_cast<unsigned char>(t.content[0])].push_back({t.content, t.id});
    }
    for (auto& list : by_first_byte_)  // longest first, so the first hit at a position is the longest
      std::stable_sort(list.begin(), list.end(), [](const Entry& a, const Entry& b) { return a.content.size() > b.content.size(); });
  }

  // Calls text_piece(std::string_view) for the text between matches (never empty) and
  // token(TokenId) for each match, in order.
  template <class OnText, class OnToken>
  void split(std::string_view text, OnText&& text_piece, OnToken&& token) const {
    std::size_t start = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
      const auto& candidates = by_first_byte_[static_cast<unsigned char>(text[i])];
      if (candidates.empty()) continue;
      const std::string_view rest = text.substr(i);
      for (const Entry& e : candidates) {
        if (!rest.starts_with(e.content)) continue;
        if (i > start) text_piece(text.substr(start, i - start));
        token(e.id);
        start = i + e.content.size();
        i = start - 1;
        break;
      }
    }
    if (start < text.size()) text_piece(text.substr(start));
  }

 private:
  struct Entry {
    std::string content;
    TokenId id;
  };
  std::array<std::vector<Entry>, 256> by_first_byte_;
};

}  // namespace qwen::tokenizer

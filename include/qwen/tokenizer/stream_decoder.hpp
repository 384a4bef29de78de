// Streaming detokenizer: ids in one at a time, complete UTF-8 text out.
//
// A token may end inside a multi-byte character (byte-level BPE splits emoji and CJK characters
// across tokens). push() returns the text that is settled -- every character complete, and every
// invalid byte sequence already known to be invalid, as U+FFFD -- and holds back a trailing
// sequence that could still become a valid character. finish() returns what is held back, with
// U+FFFD for an unfinished sequence. For any ids, the concatenation of push(id_1) ... push(id_n)
// and finish() equals Tokenizer::decode(ids): the U+FFFD substitution (unicode.hpp) decides each
// sequence from its own bytes only, so cutting before an undecided sequence changes nothing.
#pragma once

#include <cstddef>
#include <string>

#include "qwen/tokenizer/tokenizer.hpp"

namespace qwen::tokenizer {

class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false)
      : tokenizer_(&tokenizer), skip_special_(skip_special_tokens) {}

  // The settled text after one more id (possibly empty). InvalidArgument for an id that names no
  // token; the decoder is then unchanged.
  [[nodiscard]] std::string push(TokenId id) {
    tokenizer_->append_token_bytes(pending_, id, count_, skip_special_);
    ++count_;
    // Find where the trailing undecided sequence starts (pending_.size() when there is none).
    std::size_t i = 0, cut = pending_.size();
    while (i < pending_.size()) {
      if (static_cast<unsigned char>(pending_[i]) < 0x80) {
        ++i;
        continue;
      }
      const unicode::SequenceScan q = unicode::scan_sequence(pending_, i);
      if (!q.complete && q.length != 0 && i + q.length == pending_.size()) {
        cut = i;  // a valid beginning cut short by the end of the bytes so far
        break;
      }
      i += q.length == 0 ? 1 : q.length;
    }
    std::string text;
    unicode::append_lossy(text, std::string_view(pending_).substr(0, cut));
    pending_.erase(0, cut);
    return text;
  }

  // The held-back bytes as text (U+FFFD for an unfinished character); the decoder is then empty
  // and can start a new stream.
  [[nodiscard]] std::string finish() {
    std::string text;
    unicode::append_lossy(text, pending_);
    pending_.clear();
    count_ = 0;
    return text;
  }

  // Bytes held back (at most 3).
  [[nodiscard]] std::size_t pending_bytes() const noexcept { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;
  std::size_t count_ = 0;  // ids pushed, for messages
};

}  // namespace qwen::tokenizer

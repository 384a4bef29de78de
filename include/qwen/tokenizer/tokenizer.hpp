// The Qwen3 tokenizer: byte-level BPE built from tokenizer.json, giving the ids and text Hugging
// Face tokenizers gives.
//
// encode(text):  invalid UTF-8 -> InvalidUtf8 with the byte offset (Utf8Mode::Strict) or each
//                maximal invalid subpart replaced by U+FFFD (Utf8Mode::Lenient, the same text as
//                Python's errors="replace");
//                added tokens matched in the raw text (added_tokens.hpp); between them NFC, the
//                Qwen pre-tokenizer (pre_tokenizer.hpp), bytes -> byte-level symbols, BPE by merge
//                rank (bpe.hpp) with a cache of words already seen.
// decode(ids):   each id's bytes (byte_level::decode_token), concatenated, invalid UTF-8 replaced
//                by U+FFFD as Rust's from_utf8_lossy does. An id that names no token is an
//                InvalidArgument (Hugging Face silently drops it; a server should refuse it).
//
// A Tokenizer is immutable after construction and may be shared between threads (it is neither
// copied nor moved: hold it by reference or smart pointer). The word cache
// is taken with try_lock: a thread that finds it busy encodes without it (same ids, slower).
#pragma once

#include <cstddef>
#include <filesystem>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/tokenizer/added_tokens.hpp"
#include "qwen/tokenizer/bpe.hpp"
#include "qwen/tokenizer/byte_level.hpp"
#include "qwen/tokenizer/pre_tokenizer.hpp"
#include "qwen/tokenizer/tokenizer_json.hpp"
#include "qwen/tokenizer/unicode.hpp"

namespace qwen::tokenizer {

enum class Utf8Mode {
  Strict,   // invalid UTF-8 input throws InvalidUtf8 (with the byte offset)
  Lenient,  // invalid UTF-8 input is repaired with U+FFFD first
};

class Tokenizer {
 public:
  explicit Tokenizer(const TokenizerSpec& spec) : nfc_(spec.nfc), ignore_merges_(spec.ignore_merges) {
    const std::string& file = spec.source;
    TokenId max_id = -1;
    for (const auto& [text, id] : spec.vocab) max_id = std::max(max_id, id);
    for (const AddedToken& t : spec.added_tokens) max_id = std::max(max_id, t.id);
    tokens_.resize(static_cast<std::size_t>(max_id) + 1);
    vocab_.reserve(spec.vocab.size());
    for (const auto& [text, id] : spec.vocab) {
      Entry& e = tokens_[static_cast<std::size_t>(id)];
      if (e.present) throw_error<FormatError>(file, ": model.vocab: id ", id, " is used by \"", e.text, "\" and \"", text, "\"");
      e = {text, byte_level::decode_token(text), true, false};
      vocab_.emplace(text, id);
    }
    for (const AddedToken& t : spec.added_tokens) {
      Entry& e = tokens_[static_cast<std::size_t>(t.id)];
      if (e.present && e.text != t.content)
        throw_error<FormatError>(file, ": added token \"", t.content, "\" has id ", t.id, ", which is \"", e.text, "\" already");
      e = {t.content, byte_level::decode_token(t.content), true, t.special};
      added_ids_.emplace(t.content, t.id);
    }
    for (unsigned b = 0; b < 256; ++b) {
      const std::string symbol = byte_level::utf8_of_small(byte_level::char_of_byte(static_cast<std::uint8_t>(b)));
      const auto it = vocab_.find(symbol);
      if (it == vocab_.end())
        throw_error<FormatError>(file, ": model.vocab has no token for byte 0x", hex(b), " (\"", symbol, "\"); byte-level BPE needs all 256");
      byte_ids_[b] = it->second;
    }
    merges_ = MergeTable(spec.merges.size());
    for (std::size_t rank = 0; rank < spec.merges.size(); ++rank) {
      const auto& [left, right] = spec.merges[rank];
      const auto id_of_part = [&](const std::string& part) {
        const auto it = vocab_.find(part);
        if (it == vocab_.end()) throw_error<FormatError>(file, ": model.merges[", rank, "]: \"", part, "\" is not in the vocabulary");
        return it->second;
      };
      const TokenId l = id_of_part(left), r = id_of_part(right);
      const auto merged = vocab_.find(left + right);
      if (merged == vocab_.end())
        throw_error<FormatError>(file, ": model.merges[", rank, "]: the merge \"", left, right, "\" is not in the vocabulary");
      merges_.insert(l, r, static_cast<std::uint32_t>(rank), merged->second);
    }
    added_ = AddedTokenMatcher(spec.added_tokens);
  }

  // Loads DIR/tokenizer.json (or the named file).
  [[nodiscard]] static Tokenizer from_file(const std::filesystem::path& path) { return Tokenizer(read_tokenizer_json(path)); }

  // Ids of `text`, added tokens included. See the top of the file for the UTF-8 modes.
  [[nodiscard]] std::vector<TokenId> encode(std::string_view text, Utf8Mode mode = Utf8Mode::Strict) const {
    std::string repaired;
    if (mode == Utf8Mode::Strict) {
      check_utf8(text);
    } else if (unicode::first_invalid(text) != std::string_view::npos) {
      unicode::append_lossy(repaired, text);
      text = repaired;
    }
    std::vector<TokenId> ids;
    ids.reserve(text.size() / 3 + 4);
    std::unique_lock lock(cache_mutex_, std::try_to_lock);
    Scratch scratch{lock.owns_lock() ? &cache_ : nullptr, {}, {}, {}};
    added_.split(
        text, [&](std::string_view piece) { encode_plain(piece, ids, scratch); }, [&](TokenId id) { ids.push_back(id); });
    return ids;
  }

  // Throws InvalidUtf8 (with the offset of the first bad byte) unless `text` is well-formed UTF-8.
  static void check_utf8(std::string_view text) {
    if (const std::size_t bad = unicode::first_invalid(text); bad != std::string_view::npos)
      throw InvalidUtf8(bad, qwen::detail::cat("text is not valid UTF-8: byte 0x", hex(static_cast<unsigned char>(text[bad])),
                                               " at offset ", bad));
  }

  // The text of `ids`; with skip_special_tokens the ids of special added tokens are left out.
  [[nodiscard]] std::string decode(std::span<const TokenId> ids, bool skip_special_tokens = false) const {
    std::string bytes;
    for (std::size_t i = 0; i < ids.size(); ++i) append_token_bytes(bytes, ids[i], i, skip_special_tokens);
    std::string text;
    text.reserve(bytes.size());
    unicode::append_lossy(text, bytes);
    return text;
  }

  // Appends the bytes id stands for (nothing for a skipped special token). `index` is the
  // position of the id in the caller's sequence, for the message when it is out of range.
  void append_token_bytes(std::string& out, TokenId id, std::size_t index, bool skip_special_tokens) const {
    if (id < 0 || static_cast<std::size_t>(id) >= tokens_.size() || !tokens_[static_cast<std::size_t>(id)].present)
      throw_error<InvalidArgument>("token id ", id, " at index ", index, " is not in the vocabulary (ids are 0 to ",
                                   tokens_.size() - 1, ")");
    const Entry& e = tokens_[static_cast<std::size_t>(id)];
    if (!(skip_special_tokens && e.special)) out += e.bytes;
  }

  // Empties the word cache (benchmarks measure encoding without it); waits for an encode using it.
  void clear_cache() const {
    const std::lock_guard lock(cache_mutex_);
    cache_.clear();
  }

  // One more than the largest id.
  [[nodiscard]] std::size_t id_count() const noexcept { return tokens_.size(); }
  // The id of a token as written in the vocabulary or the added tokens, if any.
  [[nodiscard]] std::optional<TokenId> token_to_id(std::string_view token) const {
    if (const auto it = added_ids_.find(std::string(token)); it != added_ids_.end()) return it->second;
    if (const auto it = vocab_.find(std::string(token)); it != vocab_.end()) return it->second;
    return std::nullopt;
  }
  // Whether `id` names a token (a model's vocabulary may be larger than its tokenizer's: padded
  // ids decode to nothing through has_token's callers, and are an error for decode()).
  [[nodiscard]] bool has_token(TokenId id) const noexcept {
    return id >= 0 && static_cast<std::size_t>(id) < tokens_.size() && tokens_[static_cast<std::size_t>(id)].present;
  }
  // The bytes `id` decodes to (empty for an id that names no token).
  [[nodiscard]] std::string_view token_bytes(TokenId id) const noexcept {
    return has_token(id) ? std::string_view(tokens_[static_cast<std::size_t>(id)].bytes) : std::string_view();
  }
  [[nodiscard]] bool is_special(TokenId id) const {
    return id >= 0 && static_cast<std::size_t>(id) < tokens_.size() && tokens_[static_cast<std::size_t>(id)].special;
  }

 private:
  struct Entry {
    std::string text;   // as in tokenizer.json
    std::string bytes;  // what it decodes to
    bool present = false;
    bool special = false;
  };
  struct Scratch {
    BpeCache* cache;
    std::string normalized;
    std::vector<TokenId> symbols;
    std::vector<std::uint32_t> ranks;
  };

  static std::string hex(unsigned v) {
    constexpr char digits[] = "0123456789ABCDEF";
    return {digits[(v >> 4) & 15], digits[v & 15]};
  }

  // Text between added tokens: normalise, pre-tokenize, BPE each word.
  void encode_plain(std::string_view text, std::vector<TokenId>& ids, Scratch& scratch) const {
    if (nfc_) {
      scratch.normalized.clear();
      unicode::append_nfc(scratch.normalized, text);
      text = scratch.normalized;
    }
    split_qwen_pieces(text, [&](std::string_view word) { encode_word(word, ids, scratch); });
  }

  void encode_word(std::string_view word, std::vector<TokenId>& ids, Scratch& scratch) const {
    if (word.size() == 1) {  // one byte: its own symbol, no merge possible
      ids.push_back(byte_ids_[static_cast<unsigned char>(word[0])]);
      return;
    }
    if (scratch.cache) {
      if (const std::vector<TokenId>* hit = scratch.cache->find(word)) {
        ids.insert(ids.end(), hit->begin(), hit->end());
        return;
      }
    }
    std::vector<TokenId>& symbols = scratch.symbols;
    symbols.clear();
    const auto whole = ignore_merges_ ? vocab_.find(byte_level::encode_bytes(word)) : vocab_.end();
    if (whole != vocab_.end()) {
      symbols.push_back(whole->second);
    } else {
      for (const char c : word) symbols.push_back(byte_ids_[static_cast<unsigned char>(c)]);
      bpe_merge(symbols, merges_, scratch.ranks);
    }
    ids.insert(ids.end(), symbols.begin(), symbols.end());
    if (scratch.cache) scratch.cache->insert(word, symbols);
  }

  bool nfc_;
  bool ignore_merges_;
  std::vector<Entry> tokens_;                            // by id
  std::unordered_map<std::string, TokenId> vocab_;       // model vocabulary only
  std::unordered_map<std::string, TokenId> added_ids_;   // added tokens
  std::array<TokenId, 256> byte_ids_{};                  // byte -> id of its byte-level symbol
  MergeTable merges_;
  AddedTokenMatcher added_;
  mutable std::mutex cache_mutex_;
  mutable BpeCache cache_;
};

}  // namespace qwen::tokenizer

// Unicode for the tokenizer: UTF-8 decoding and validation, the character classes the Qwen
// pre-tokenizer regex uses (\p{L}, \p{N}, \s), NFC normalization, and the replacement of invalid
// UTF-8 by U+FFFD. Categories and normalization come from utf8proc, never from local tables: at
// first use one byte of class flags is derived from utf8proc for every code point (1.1 MB,
// a few milliseconds), so that the hot loops are one table load per character.
#pragma once

#include <utf8proc.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "qwen/core/error.hpp"

namespace qwen::tokenizer {

// Text that is not well-formed UTF-8 (RFC 3629), in strict mode. byte_offset() is the offset of
// the first byte that breaks it, counted from the start of the text given to encode.
class InvalidUtf8 : public InvalidArgument {
 public:
  InvalidUtf8(std::size_t byte_offset, const std::string& message) : InvalidArgument(message), byte_offset_(byte_offset) {}
  [[nodiscard]] std::size_t byte_offset() const noexcept { return byte_offset_; }

 private:
  std::size_t byte_offset_;
};

namespace unicode {

inline constexpr char32_t kMaxCodePoint = 0x10FFFF;
inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

// Length of the well-formed prefix of the UTF-8 sequence starting at s[i]: the whole sequence
// (1-4) when it is complete and valid, else the length of its "maximal subpart" -- the longest
// prefix that could still begin a valid sequence (0 when the lead byte can start none). This is
// the rule of Unicode 15 §3.9 (U+FFFD substitution of maximal subparts), followed by Rust's
// String::from_utf8_lossy (used by Hugging Face's ByteLevel decoder) and Python's
// errors="replace". `complete` says whether the sequence is whole and valid.
struct SequenceScan {
  std::size_t length;
  bool complete;
};
[[nodiscard]] inline SequenceScan scan_sequence(std::string_view s, std::size_t i) noexcept {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return {1, true};
  std::size_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) need = 2;
  else if (c >= 0xE0 && c <= 0xEF) need = 3, lo = (c == 0xE0 ? 0xA0 : 0x80), hi = (c == 0xED ? 0x9F : 0xBF);
  else if (c >= 0xF0 && c <= 0xF4) need = 4, lo = (c == 0xF0 ? 0x90 : 0x80), hi = (c == 0xF4 ? 0x8F : 0xBF);
  else return {0, false};
  std::size_t k = 1;
  for (; k < need && i + k < s.size(); ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return {k, false};
  }
  return {k, k == need};
}

// Offset of the first byte that breaks well-formed UTF-8, or npos. ASCII runs go 8 bytes a step.
[[nodiscard]] inline std::size_t first_invalid(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    if (i + 8 <= s.size()) {
      std::uint64_t word;
      std::memcpy(&word, s.data() + i, 8);
      if ((word & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    const SequenceScan q = scan_sequence(s, i);
    if (!q.complete) return i;
    i += q.length;
  }
  return std::string_view::npos;
}

// Appends `s` to `out` with every maximal invalid subpart (a lone invalid byte counts as one)
// replaced by U+FFFD: the result is what from_utf8_lossy / errors="replace" give.
inline void append_lossy(std::string& out, std::string_view s) {
  std::size_t i = 0, clean = 0;  // [clean, i) is valid and not yet copied
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const SequenceScan q = scan_sequence(s, i);
    if (q.complete) {
      i += q.length;
      continue;
    }
    out.append(s.substr(clean, i - clean));
    out.append(kReplacement);
    i += q.length == 0 ? 1 : q.length;
    clean = i;
  }
  out.append(s.substr(clean));
}

// Decodes the valid UTF-8 sequence at s[i] (the caller has validated the text); advances i.
[[nodiscard]] inline char32_t decode_at(std::string_view s, std::size_t& i) noexcept {
  const auto c = static_cast<unsigned char>(s[i]);
  const auto cont = [&](std::size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F); };
  char32_t cp;
  if (c < 0x80) cp = c, i += 1;
  else if (c < 0xE0) cp = (static_cast<char32_t>(c & 0x1F) << 6) | cont(1), i += 2;
  else if (c < 0xF0) cp = (static_cast<char32_t>(c & 0x0F) << 12) | (cont(1) << 6) | cont(2), i += 3;
  else cp = (static_cast<char32_t>(c & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3), i += 4;
  return cp;
}

// Class flags of one code point.
enum ClassFlag : std::uint8_t {
  kLetter = 1,        // general category L* (Lu Ll Lt Lm Lo): the regex's \p{L}
  kNumber = 2,        // general category N* (Nd Nl No): \p{N}
  kWhitespace = 4,    // Unicode White_Space: \s of Oniguruma on UTF-8 text (Zs, Zl, Zp, \t-\r, U+0085)
  kNfcUnstable = 8,   // NFC may change this character or join it with the one before it
};

// The flag table, built once from utf8proc (thread-safe static initialisation).
class ClassTable {
 public:
  static const ClassTable& get() {
    static const ClassTable table;
    return table;
  }
  [[nodiscard]] std::uint8_t operator()(char32_t cp) const noexcept { return flags_[cp]; }

 private:
  ClassTable() : flags_(new std::uint8_t[kMaxCodePoint + 1]()) {
    for (char32_t cp = 0; cp <= kMaxCodePoint; ++cp) {
      const utf8proc_property_t* p = utf8proc_get_property(static_cast<utf8proc_int32_t>(cp));
      std::uint8_t f = 0;
      switch (p->category) {
        case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
        case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: f |= kLetter; break;
        case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO: f |= kNumber; break;
        case UTF8PROC_CATEGORY_ZS: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP: f |= kWhitespace; break;
        default: break;
      }
      if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x85) f |= kWhitespace;
      // NFC can touch a character with a combining class, one with a canonical decomposition,
      // a Hangul syllable or jamo (composed algorithmically), and -- found below -- any character
      // that occurs after the first place of a canonical decomposition (it may compose with the
      // character before it). Everything else is a safe boundary for normalization.
      const bool canonical_decomposition = p->decomp_seqindex != UINT16_MAX && p->decomp_type == 0;
      if (p->combining_class != 0 || canonical_decomposition || (cp >= 0x1100 && cp <= 0x11FF) ||
          (cp >= 0xAC00 && cp <= 0xD7A3))
        f |= kNfcUnstable;
      flags_[cp] = static_cast<std::uint8_t>(flags_[cp] | f);
      if (canonical_decomposition) {
        utf8proc_int32_t parts[8];
        int last = 0;
        const utf8proc_ssize_t n = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(cp), parts, 8,
                                                           static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE), &last);
        for (utf8proc_ssize_t k = 1; k < n && k < 8; ++k) flags_[parts[k]] |= kNfcUnstable;
      }
    }
  }
  std::unique_ptr<std::uint8_t[]> flags_;
};

// Appends the NFC form of valid UTF-8 `s` to `out`. Text is cut at characters NFC cannot touch
// and that nothing can join (see kNfcUnstable); only the stretches between such boundaries that
// hold an unstable character go through utf8proc, the rest is copied.
inline void append_nfc(std::string& out, std::string_view s, const ClassTable& classes = ClassTable::get()) {
  std::size_t i = 0;
  std::size_t copied = 0;    // s[copied, ...) is not yet in out
  std::size_t boundary = 0;  // start of the last character that is a normalization boundary
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {  // ASCII is always a boundary
      boundary = ++i - 1;
      continue;
    }
    const std::size_t start = i;
    const char32_t cp = decode_at(s, i);
    if (!(classes(cp) & kNfcUnstable)) {
      boundary = start;
      continue;
    }
    // Extend to the next boundary, then normalise [boundary, end) as one piece.
    std::size_t end = i;
    while (end < s.size()) {
      std::size_t next = end;
      const char32_t c = decode_at(s, next);
      if (!(classes(c) & kNfcUnstable)) break;
      end = next;
    }
    out.append(s.substr(copied, boundary - copied));
    utf8proc_uint8_t* normalized = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + boundary),
                                            static_cast<utf8proc_ssize_t>(end - boundary), &normalized,
                                            static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (n < 0) throw_error<InvalidArgument>("NFC normalization failed: ", utf8proc_errmsg(n));
    out.append(reinterpret_cast<const char*>(normalized), static_cast<std::size_t>(n));
    std::free(normalized);
    copied = boundary = i = end;
  }
  out.append(s.substr(copied));
}

}  // namespace unicode
}  // namespace qwen::tokenizer

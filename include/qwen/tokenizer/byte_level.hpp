// GPT-2's byte-level alphabet, used by the ByteLevel pre-tokenizer and decoder: every byte is
// written as one printable character, so that vocabulary entries are text. Bytes '!'..'~',
// 0xA1..0xAC and 0xAE..0xFF stand for themselves (as code points); the other 68 bytes (controls,
// space, DEL, 0x80..0xA0, 0xAD) take U+0100, U+0101, ... in byte order. Space is U+0120 'Ġ',
// newline U+010A 'Ċ'.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "qwen/tokenizer/unicode.hpp"

namespace qwen::tokenizer::byte_level {

// The code point that stands for byte b.
[[nodiscard]] constexpr char32_t char_of_byte(std::uint8_t b) noexcept {
  const auto self = [](unsigned v) { return (v >= 0x21 && v <= 0x7E) || (v >= 0xA1 && v <= 0xAC) || (v >= 0xAE && v <= 0xFF); };
  if (self(b)) return b;
  char32_t next = 0x100;
  for (unsigned v = 0; v < b; ++v)
    if (!self(v)) ++next;
  return next;
}

// UTF-8 of a code point below U+0800 (all the alphabet's characters are).
[[nodiscard]] inline std::string utf8_of_small(char32_t cp) {
  if (cp < 0x80) return std::string(1, static_cast<char>(cp));
  return {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
}

// The byte a code point stands for, or nullopt when it is not in the alphabet.
[[nodiscard]] inline std::optional<std::uint8_t> byte_of_char(char32_t cp) noexcept {
  static const auto table = [] {
    std::array<std::int16_t, 0x144> t{};
    t.fill(-1);
    for (unsigned b = 0; b < 256; ++b) t[char_of_byte(static_cast<std::uint8_t>(b))] = static_cast<std::int16_t>(b);
    return t;
  }();
  if (cp >= table.size() || table[cp] < 0) return std::nullopt;
  return static_cast<std::uint8_t>(table[cp]);
}

// The bytes a vocabulary entry stands for, as the ByteLevel decoder computes them: the alphabet
// mapped back when every character is in it, else (an added token such as "<|im_end|>" written
// outside the alphabet) the entry's own UTF-8 bytes. `token` is valid UTF-8.
[[nodiscard]] inline std::string decode_token(std::string_view token) {
  std::string bytes;
  bytes.reserve(token.size());
  for (std::size_t i = 0; i < token.size();) {
    const auto b = byte_of_char(unicode::decode_at(token, i));
    if (!b) return std::string(token);
    bytes.push_back(static_cast<char>(*b));
  }
  return bytes;
}

// The vocabulary spelling of raw bytes (for lookups of whole words).
[[nodiscard]] inline std::string encode_bytes(std::string_view bytes) {
  std::string out;
  for (const char c : bytes) out += utf8_of_small(char_of_byte(static_cast<std::uint8_t>(c)));
  return out;
}

}  // namespace qwen::tokenizer::byte_level

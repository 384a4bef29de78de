// A byte-at-a-time JSON recognizer (RFC 8259) for guided decoding.
//
// json_step(state, byte) consumes one byte and returns false when no JSON document starts with
// the bytes so far plus this one. It never accepts a byte that leads to a dead end: every prefix
// it accepts can still be completed into a valid document (so a mask built from it never leaves a
// sampler without a token). That is why it checks, byte by byte:
//   - UTF-8 inside strings: lead bytes C2..F4 only, and the allowed range of each continuation
//     byte (no overlong forms, no surrogates U+D800..DFFF, nothing above U+10FFFF);
//   - \u escapes as valid Unicode: a high surrogate \uD800..DBFF must be followed by a low one
//     \uDC00..DFFF, a lone low surrogate is refused at its second hex digit;
//   - numbers as -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, with at most
//     max_integer_digits before the point and max_exponent_digits in the exponent, so that every
//     number fits a double (10^20 x 10^99 < 1.8e308): RFC 8259 allows parsers to refuse larger
//     ones, and nlohmann does (out_of_range 406);
//   - nesting up to max_json_depth levels, and at most max_whitespace_run whitespace bytes in a
//     row (a weak model under a grammar can otherwise emit newlines until max_tokens).
// The root is any value, or only an object (response_format json_object, tool arguments).
// json_complete(state) says whether the bytes so far are a whole document; with an object root
// the document ends at its closing brace and json_step refuses anything after it.
#pragma once

#include <cstdint>

namespace qwen::guided {

inline constexpr int max_json_depth = 64;
inline constexpr int max_whitespace_run = 64;
inline constexpr int max_integer_digits = 20;
inline constexpr int max_exponent_digits = 2;

enum class JsonMode : std::uint8_t {
  value,               // a value is expected
  first_key_or_close,  // after '{'
  key,                 // after ',' in an object: '"' starts the key
  colon,               // after a key
  first_value_or_close,  // after '['
  after_value,         // a value ended: ',' or the container's close
  string,
  number,
  literal,             // true, false, null
  done,                // the root value ended (only whitespace may follow, and only with an any-value root)
};

enum class StringStep : std::uint8_t {
  plain,           // ordinary characters
  escape,          // after '\'
  hex,             // inside \uXXXX: `hex_digits` digits seen
  low_backslash,   // a high surrogate escape ended: '\' of its low surrogate must follow
  low_u,           // ... then 'u'
};

enum class NumberStep : std::uint8_t { minus, zero, integer, dot, fraction, exponent_mark, exponent_sign, exponent };

struct JsonState {
  std::uint64_t objects = 0;  // bit i: nesting level i is an object (else an array)
  std::uint8_t depth = 0;
  JsonMode mode = JsonMode::value;
  bool object_root = false;
  std::uint8_t whitespace_run = 0;
  // string
  bool in_key = false;
  StringStep string_step = StringStep::plain;
  std::uint8_t hex_digits = 0;           // \uXXXX: digits read
  std::uint8_t hex_first = 0;            // its first digit
  bool want_low = false;                 // this \u must be a low surrogate (one of a pair)
  bool is_high = false;                  // this \u is a high surrogate: a low one must follow
  std::uint8_t utf8_left = 0;            // continuation bytes still expected
  std::uint8_t utf8_low = 0x80, utf8_high = 0xBF;  // range of the next continuation byte
  // number and literals
  NumberStep number_step = NumberStep::minus;
  std::uint8_t number_digits = 0;  // digits of the integer part, or of the exponent once in it
  std::uint8_t literal = 0;  // index into json_literals
  std::uint8_t literal_pos = 0;

  [[nodiscard]] bool top_is_object() const noexcept { return depth > 0 && ((objects >> (depth - 1)) & 1u); }
};

inline constexpr const char* json_literals[3] = {"true", "false", "null"};

[[nodiscard]] inline JsonState json_start(bool object_root) noexcept {
  JsonState s;
  s.object_root = object_root;
  return s;
}

// Whether the bytes so far are a complete document.
[[nodiscard]] inline bool json_complete(const JsonState& s) noexcept {
  if (s.mode == JsonMode::done) return true;
  // A number at the root ends where the input does.
  return s.depth == 0 && s.mode == JsonMode::number &&
         (s.number_step == NumberStep::zero || s.number_step == NumberStep::integer || s.number_step == NumberStep::fraction ||
          s.number_step == NumberStep::exponent);
}

// Whether the state is inside a string with nothing pending: any run of complete UTF-8
// characters other than '"', '\' and controls leaves it unchanged (token_mask's fast path).
[[nodiscard]] inline bool json_in_plain_string(const JsonState& s) noexcept {
  return s.mode == JsonMode::string && s.string_step == StringStep::plain && s.utf8_left == 0;
}

namespace json_detail {

[[nodiscard]] constexpr bool is_whitespace(std::uint8_t b) noexcept { return b == ' ' || b == '\t' || b == '\n' || b == '\r'; }
[[nodiscard]] constexpr bool is_digit(std::uint8_t b) noexcept { return b >= '0' && b <= '9'; }
[[nodiscard]] constexpr int hex_value(std::uint8_t b) noexcept {
  if (b >= '0' && b <= '9') return b - '0';
  if (b >= 'a' && b <= 'f') return b - 'a' + 10;
  if (b >= 'A' && b <= 'F') return b - 'A' + 10;
  return -1;
}

// A value ended (string, number, literal or container): what may follow.
inline void value_ended(JsonState& s) noexcept { s.mode = s.depth == 0 ? JsonMode::done : JsonMode::after_value; }

inline bool open(JsonState& s, bool object) noexcept {
  if (s.depth >= max_json_depth) return false;
  if (object) s.objects |= std::uint64_t{1} << s.depth;
  else s.objects &= ~(std::uint64_t{1} << s.depth);
  ++s.depth;
  s.mode = object ? JsonMode::first_key_or_close : JsonMode::first_value_or_close;
  return true;
}

inline void close(JsonState& s) noexcept {
  --s.depth;
  value_ended(s);
}

inline void start_string(JsonState& s, bool key) noexcept {
  s.mode = JsonMode::string;
  s.in_key = key;
  s.string_step = StringStep::plain;
  s.utf8_left = 0;
}

// The first byte of a value (not whitespace).
inline bool start_value(JsonState& s, std::uint8_t b) noexcept {
  if (s.depth == 0 && s.object_root) return b == '{' && open(s, true);
  switch (b) {
    case '{': return open(s, true);
    case '[': return open(s, false);
    case '"': start_string(s, false); return true;
    case '-': s.mode = JsonMode::number; s.number_step = NumberStep::minus; s.number_digits = 0; return true;
    case 't': case 'f': case 'n':
      s.mode = JsonMode::literal;
      s.literal = b == 't' ? 0 : b == 'f' ? 1 : 2;
      s.literal_pos = 1;
      return true;
    default:
      if (!is_digit(b)) return false;
      s.mode = JsonMode::number;
      s.number_step = b == '0' ? NumberStep::zero : NumberStep::integer;
      s.number_digits = 1;
      return true;
  }
}

inline bool string_byte(JsonState& s, std::uint8_t b) noexcept {
  if (s.utf8_left > 0) {
    if (b < s.utf8_low || b > s.utf8_high) return false;
    --s.utf8_left;
    s.utf8_low = 0x80, s.utf8_high = 0xBF;
    return true;
  }
  switch (s.string_step) {
    case StringStep::plain:
      if (b == '"') {
        if (s.in_key) s.mode = JsonMode::colon;
        else value_ended(s);
        return true;
      }
      if (b == '\\') { s.string_step = StringStep::escape; return true; }
      if (b < 0x20) return false;
      if (b < 0x80) return true;
      // A UTF-8 lead byte: how many continuation bytes, and the range of the first.
      if (b >= 0xC2 && b <= 0xDF) { s.utf8_left = 1; return true; }
      if (b >= 0xE0 && b <= 0xEF) {
        s.utf8_left = 2;
        if (b == 0xE0) s.utf8_low = 0xA0;       // no overlong 3-byte forms
        else if (b == 0xED) s.utf8_high = 0x9F; // no surrogates
        return true;
      }
      if (b >= 0xF0 && b <= 0xF4) {
        s.utf8_left = 3;
        if (b == 0xF0) s.utf8_low = 0x90;       // no overlong 4-byte forms
        else if (b == 0xF4) s.utf8_high = 0x8F; // nothing above U+10FFFF
        return true;
      }
      return false;  // continuation byte without a lead, C0, C1, F5..FF
    case StringStep::escape:
      switch (b) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
          s.string_step = StringStep::plain;
          return true;
        case 'u':
          s.string_step = StringStep::hex;
          s.hex_digits = 0;
          s.want_low = false;
          return true;
        default: return false;
      }
    case StringStep::low_backslash:
      if (b != '\\') return false;
      s.string_step = StringStep::low_u;
      return true;
    case StringStep::low_u:
      if (b != 'u') return false;
      s.string_step = StringStep::hex;
      s.hex_digits = 0;
      s.want_low = true;
      return true;
    case StringStep::hex: {
      const int v = hex_value(b);
      if (v < 0) return false;
      // Surrogates are decided by the first two digits: D8..DB high, DC..DF low.
      if (s.hex_digits == 0) s.hex_first = static_cast<std::uint8_t>(v);
      if (s.want_low) {
        if ((s.hex_digits == 0 && v != 0xD) || (s.hex_digits == 1 && v < 0xC)) return false;
      } else if (s.hex_digits == 1 && s.hex_first == 0xD) {
        if (v >= 0xC) return false;  // a low surrogate without a high one before it
        s.is_high = v >= 0x8;
      }
      if (++s.hex_digits < 4) return true;
      s.string_step = s.is_high ? StringStep::low_backslash : StringStep::plain;
      s.is_high = false;
      s.want_low = false;
      return true;
    }
  }
  return false;
}

inline bool number_byte(JsonState& s, std::uint8_t b, bool& consumed) noexcept {
  consumed = true;
  switch (s.number_step) {
    case NumberStep::minus:
      if (!is_digit(b)) return false;
      s.number_step = b == '0' ? NumberStep::zero : NumberStep::integer;
      s.number_digits = 1;
      return true;
    case NumberStep::zero:
    case NumberStep::integer:
      if (is_digit(b) && s.number_step == NumberStep::integer) return ++s.number_digits <= max_integer_digits;
      if (b == '.') { s.number_step = NumberStep::dot; return true; }
      if (b == 'e' || b == 'E') { s.number_step = NumberStep::exponent_mark; return true; }
      break;
    case NumberStep::dot:
      if (!is_digit(b)) return false;
      s.number_step = NumberStep::fraction;
      return true;
    case NumberStep::fraction:
      if (is_digit(b)) return true;
      if (b == 'e' || b == 'E') { s.number_step = NumberStep::exponent_mark; return true; }
      break;
    case NumberStep::exponent_mark:
      if (b == '+' || b == '-') { s.number_step = NumberStep::exponent_sign; return true; }
      [[fallthrough]];
    case NumberStep::exponent_sign:
      if (!is_digit(b)) return false;
      s.number_step = NumberStep::exponent;
      s.number_digits = 1;
      return true;
    case NumberStep::exponent:
      if (is_digit(b)) return ++s.number_digits <= max_exponent_digits;
      break;
  }
  // The number is complete and this byte is not part of it: it belongs to what follows.
  consumed = false;
  value_ended(s);
  return true;
}

}  // namespace json_detail

// Consumes one byte; false: the bytes so far plus this one start no document (the state is then
// unspecified: callers step a copy).
[[nodiscard]] inline bool json_step(JsonState& s, std::uint8_t b) noexcept {
  using namespace json_detail;
  if (s.mode == JsonMode::string) return string_byte(s, b);
  if (s.mode == JsonMode::literal) {
    const char* word = json_literals[s.literal];
    if (b != static_cast<std::uint8_t>(word[s.literal_pos])) return false;
    if (word[++s.literal_pos] == '\0') value_ended(s);
    return true;
  }
  if (s.mode == JsonMode::number) {
    bool consumed = false;
    if (!number_byte(s, b, consumed)) return false;
    if (consumed) return true;
    s.whitespace_run = 0;  // falls through to the structural byte below
  }
  if (is_whitespace(b)) {
    if (s.mode == JsonMode::done && s.object_root) return false;  // the object is the whole output
    if (s.whitespace_run >= max_whitespace_run) return false;
    ++s.whitespace_run;
    return true;
  }
  s.whitespace_run = 0;
  switch (s.mode) {
    case JsonMode::value: return start_value(s, b);
    case JsonMode::first_value_or_close:
      if (b == ']') { close(s); return true; }
      return start_value(s, b);
    case JsonMode::first_key_or_close:
      if (b == '}') { close(s); return true; }
      [[fallthrough]];
    case JsonMode::key:
      if (b != '"') return false;
      start_string(s, true);
      return true;
    case JsonMode::colon:
      if (b != ':') return false;
      s.mode = JsonMode::value;
      return true;
    case JsonMode::after_value:
      if (b == ',') {
        s.mode = s.top_is_object() ? JsonMode::key : JsonMode::value;
        return true;
      }
      if ((b == '}' && s.top_is_object()) || (b == ']' && !s.top_is_object())) {
        close(s);
        return true;
      }
      return false;
    default: return false;  // done
  }
}

}  // namespace qwen::guided

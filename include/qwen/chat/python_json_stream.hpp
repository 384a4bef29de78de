// PythonJsonStream: reads one JSON value a byte at a time and writes it as python_json() writes
// the parsed value (json.dumps(value, ensure_ascii=False), see python_json.hpp), each piece as
// soon as no later byte can change it. It is what lets a tool call's arguments be streamed in
// fragments whose concatenation is, byte for byte, what the whole text would give.
//
// The language is parse_json_strict's (qwen/io/json_file.hpp), so that a value this accepts is
// exactly one that parse_json_strict accepts, and its output equals python_json of that parse:
//   * RFC 8259 syntax; whitespace is space, \t, \n, \r; no NUL byte; strings are well-formed
//     UTF-8 (RFC 3629) with no raw control character; \u escapes decode to UTF-8, a surrogate
//     pair to one code point, a lone surrogate is an error (as nlohmann's parser);
//   * at most kMaxJsonDepth containers open, counting the `depth` given at construction (the
//     containers around the value in the whole text);
//   * no duplicate key in an object (keys compared after decoding);
//   * numbers: the token is read whole and parsed by parse_json_strict itself, so its value and
//     its spelling in the output are the same as in a whole-text parse (1e999 is an error).
// When output appears:
//   * structure at once: "{", "[", "}", "]", ", " for a comma, ": " for a colon;
//   * a string value: its opening quote at once, then each character as soon as it is complete
//     (a UTF-8 sequence, an escape, a surrogate pair), escaped as python_json escapes it;
//   * an object key: whole, when its closing quote shows it is not a duplicate;
//   * a number or a literal (true, false, null): whole, when it is complete (a number when the
//     byte after it arrives).
// held() is the number of bytes already fed whose output is held back by these rules; after an
// error, of those before the refused byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/chat/python_json.hpp"
#include "qwen/core/error.hpp"
#include "qwen/io/json_file.hpp"

namespace qwen::chat {

// JSON's whitespace (RFC 8259): space, tab, newline, carriage return.
[[nodiscard]] constexpr bool is_json_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

class PythonJsonStream {
 public:
  enum class Status {
    more,         // the byte was taken; the value goes on
    done,         // the byte was taken and completes the value
    done_before,  // the value (a number) had ended before this byte, which was not taken
    error,        // the byte cannot continue a valid value; nothing more is taken
  };

  // depth: containers already open around the value (0 for a whole text).
  explicit PythonJsonStream(int depth = 0) : base_depth_(depth) {}

  // Feeds one byte; appends to `out` what it settles.
  Status feed(char byte, std::string& out) {
    if (status_ != Status::more) return Status::error;
    held_before_ = held_;
    status_ = step(static_cast<unsigned char>(byte), out);
    if (status_ == Status::error) held_ = held_before_;
    return status_;
  }

  // After an error: how many of the bytes before the refused one are held (a number that the
  // refused byte ended was written, so it is not).
  [[nodiscard]] std::size_t held() const noexcept { return held_; }
  // A top-level string value's characters, decoded (complete once feed returned done).
  [[nodiscard]] const std::string& decoded() const noexcept { return decoded_; }

 private:
  enum class Expect : std::uint8_t { value, value_or_end, key, key_or_end, colon, comma_or_end };
  struct Frame {
    bool object = false;
    Expect expect = Expect::value;
    std::set<std::string> keys;
  };
  enum class Token : std::uint8_t { none, string, number, literal };
  enum class StringPart : std::uint8_t { chars, utf8, escape, unicode, low_backslash, low_u, low_unicode };

  static bool is_number_byte(unsigned char c) noexcept {
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
  }
  static int hex_value(unsigned char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // What the byte does where a value may start: the container or token it opens.
  Status start_value(unsigned char c, std::string& out) {
    if (c == '{' || c == '[') {
      if (base_depth_ + static_cast<int>(stack_.size()) >= io::kMaxJsonDepth) return Status::error;
      stack_.push_back({c == '{', c == '{' ? Expect::key_or_end : Expect::value_or_end, {}});
      out += static_cast<char>(c);
      return Status::more;
    }
    if (c == '"') {
      token_ = Token::string;
      key_ = false;
      part_ = StringPart::chars;
      out += '"';
      return Status::more;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      token_ = Token::number;
      text_.assign(1, static_cast<char>(c));
      held_ = 1;
      return Status::more;
    }
    if (c == 't' || c == 'f' || c == 'n') {
      token_ = Token::literal;
      literal_ = c == 't' ? "true" : c == 'f' ? "false" : "null";
      text_.assign(1, static_cast<char>(c));
      held_ = 1;
      return Status::more;
    }
    return Status::error;
  }

  // A value has ended: the enclosing container expects a comma or its end, or the whole value is done.
  Status value_ended() {
    if (stack_.empty()) return Status::done;
    stack_.back().expect = Expect::comma_or_end;
    return Status::more;
  }

  Status step(unsigned char c, std::string& out) {
    switch (token_) {
      case Token::string: return string_byte(c, out);
      case Token::literal: {
        text_ += static_cast<char>(c);
        ++held_;
        if (!literal_.starts_with(text_)) return Status::error;
        if (text_.size() < literal_.size()) return Status::more;
        out += literal_;
        token_ = Token::none;
        held_ = 0;
        return value_ended();
      }
      case Token::number: {
        if (is_number_byte(c)) {
          text_ += static_cast<char>(c);
          ++held_;
          return Status::more;
        }
        nlohmann::ordered_json number;
        try {
          number = io::parse_json_strict<nlohmann::ordered_json>(text_, "number", "number");
        } catch (const FormatError&) {
          return Status::error;
        }
        if (!number.is_number()) return Status::error;
        append_python_json(out, number);
        token_ = Token::none;
        held_ = held_before_ = 0;
        if (stack_.empty()) return Status::done_before;
        stack_.back().expect = Expect::comma_or_end;
        return structure(c, out);
      }
      case Token::none: return structure(c, out);
    }
    return Status::error;
  }

  // A byte outside any token.
  Status structure(unsigned char c, std::string& out) {
    if (is_json_space(static_cast<char>(c))) return Status::more;
    if (stack_.empty()) return start_value(c, out);  // before the value (after it, feed refuses)
    Frame& f = stack_.back();
    switch (f.expect) {
      case Expect::value: return start_value(c, out);
      case Expect::value_or_end:
        if (c == ']') return close(out);
        return start_value(c, out);
      case Expect::key_or_end:
        if (c == '}') return close(out);
        [[fallthrough]];
      case Expect::key:
        if (c != '"') return Status::error;
        token_ = Token::string;
        key_ = true;
        part_ = StringPart::chars;
        text_.clear();  // the decoded key
        held_ = 1;
        return Status::more;
      case Expect::colon:
        if (c != ':') return Status::error;
        out += ": ";
        f.expect = Expect::value;
        return Status::more;
      case Expect::comma_or_end:
        if (c == ',') {
          out += ", ";
          f.expect = f.object ? Expect::key : Expect::value;
          return Status::more;
        }
        if (c == (f.object ? '}' : ']')) return close(out);
        return Status::error;
    }
    return Status::error;
  }

  Status close(std::string& out) {
    out += stack_.back().object ? '}' : ']';
    stack_.pop_back();
    return value_ended();
  }

  // A decoded character (its UTF-8 bytes) of the current string.
  void put(std::string_view bytes, std::string& out) {
    if (key_) {
      text_ += bytes;
      return;
    }
    detail::append_python_escaped(out, bytes);
    if (stack_.empty()) decoded_ += bytes;
    held_ = 0;
  }
  void put_code_point(std::uint32_t cp, std::string& out) {
    char b[4];
    std::size_t n = 0;
    if (cp < 0x80) {
      b[n++] = static_cast<char>(cp);
    } else if (cp < 0x800) {
      b[n++] = static_cast<char>(0xC0 | (cp >> 6));
      b[n++] = static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      b[n++] = static_cast<char>(0xE0 | (cp >> 12));
      b[n++] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      b[n++] = static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      b[n++] = static_cast<char>(0xF0 | (cp >> 18));
      b[n++] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      b[n++] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      b[n++] = static_cast<char>(0x80 | (cp & 0x3F));
    }
    put(std::string_view(b, n), out);
  }

  Status string_byte(unsigned char c, std::string& out) {
    ++held_;  // until put() or end_string() settles it
    switch (part_) {
      case StringPart::chars:
        if (c == '"') return end_string(out);
        if (c == '\\') {
          part_ = StringPart::escape;
          return Status::more;
        }
        if (c < 0x20) return Status::error;
        if (c < 0x80) {
          const char ch = static_cast<char>(c);
          put(std::string_view(&ch, 1), out);
          return Status::more;
        }
        // A UTF-8 lead byte: how many continuation bytes follow, and the range of the first
        // (RFC 3629: no overlong form, no surrogate, nothing above U+10FFFF).
        if (c >= 0xC2 && c <= 0xDF) utf8_need_ = 1, utf8_low_ = 0x80, utf8_high_ = 0xBF;
        else if (c == 0xE0) utf8_need_ = 2, utf8_low_ = 0xA0, utf8_high_ = 0xBF;
        else if (c == 0xED) utf8_need_ = 2, utf8_low_ = 0x80, utf8_high_ = 0x9F;
        else if (c >= 0xE1 && c <= 0xEF) utf8_need_ = 2, utf8_low_ = 0x80, utf8_high_ = 0xBF;
        else if (c == 0xF0) utf8_need_ = 3, utf8_low_ = 0x90, utf8_high_ = 0xBF;
        else if (c >= 0xF1 && c <= 0xF3) utf8_need_ = 3, utf8_low_ = 0x80, utf8_high_ = 0xBF;
        else if (c == 0xF4) utf8_need_ = 3, utf8_low_ = 0x80, utf8_high_ = 0x8F;
        else return Status::error;
        utf8_.assign(1, static_cast<char>(c));
        part_ = StringPart::utf8;
        return Status::more;
      case StringPart::utf8:
        if (c < utf8_low_ || c > utf8_high_) return Status::error;
        utf8_ += static_cast<char>(c);
        utf8_low_ = 0x80, utf8_high_ = 0xBF;
        if (--utf8_need_ > 0) return Status::more;
        part_ = StringPart::chars;
        put(utf8_, out);
        return Status::more;
      case StringPart::escape: {
        char decoded = 0;
        switch (c) {
          case '"': decoded = '"'; break;
          case '\\': decoded = '\\'; break;
          case '/': decoded = '/'; break;
          case 'b': decoded = '\b'; break;
          case 'f': decoded = '\f'; break;
          case 'n': decoded = '\n'; break;
          case 'r': decoded = '\r'; break;
          case 't': decoded = '\t'; break;
          case 'u':
            part_ = StringPart::unicode;
            hex_digits_ = 0;
            code_ = 0;
            return Status::more;
          default: return Status::error;
        }
        part_ = StringPart::chars;
        put(std::string_view(&decoded, 1), out);
        return Status::more;
      }
      case StringPart::unicode:
      case StringPart::low_unicode: {
        const int h = hex_value(c);
        if (h < 0) return Status::error;
        code_ = code_ << 4 | static_cast<std::uint32_t>(h);
        if (++hex_digits_ < 4) return Status::more;
        if (part_ == StringPart::low_unicode) {
          if (code_ < 0xDC00 || code_ > 0xDFFF) return Status::error;
          part_ = StringPart::chars;
          put_code_point(0x10000 + ((high_surrogate_ - 0xD800) << 10) + (code_ - 0xDC00), out);
          return Status::more;
        }
        if (code_ >= 0xDC00 && code_ <= 0xDFFF) return Status::error;  // a low surrogate alone
        if (code_ >= 0xD800 && code_ <= 0xDBFF) {                       // a high one: its pair must follow
          high_surrogate_ = code_;
          part_ = StringPart::low_backslash;
          return Status::more;
        }
        part_ = StringPart::chars;
        put_code_point(code_, out);
        return Status::more;
      }
      case StringPart::low_backslash:
        if (c != '\\') return Status::error;
        part_ = StringPart::low_u;
        return Status::more;
      case StringPart::low_u:
        if (c != 'u') return Status::error;
        part_ = StringPart::low_unicode;
        hex_digits_ = 0;
        code_ = 0;
        return Status::more;
    }
    return Status::error;
  }

  Status end_string(std::string& out) {
    token_ = Token::none;
    if (key_) {
      Frame& f = stack_.back();
      if (!f.keys.insert(text_).second) return Status::error;  // a duplicate key
      detail::append_python_string(out, text_);
      f.expect = Expect::colon;
      held_ = 0;
      return Status::more;
    }
    out += '"';
    held_ = 0;
    return value_ended();
  }

  int base_depth_ = 0;
  Status status_ = Status::more;
  std::size_t held_ = 0;
  std::size_t held_before_ = 0;              // held_ before the byte being fed, less what it settled
  std::vector<Frame> stack_;
  Token token_ = Token::none;
  bool key_ = false;                         // the string being read is an object key
  StringPart part_ = StringPart::chars;
  std::string text_;                         // a number's or literal's bytes so far; a key's decoded bytes
  std::string_view literal_;                 // the literal being matched
  std::string utf8_;                         // a UTF-8 sequence so far
  int utf8_need_ = 0;                        // its continuation bytes still to come
  unsigned char utf8_low_ = 0, utf8_high_ = 0;  // the range of the next one
  int hex_digits_ = 0;
  std::uint32_t code_ = 0;                   // a \u escape's value so far
  std::uint32_t high_surrogate_ = 0;         // the first half of a pair
  std::string decoded_;
};

}  // namespace qwen::chat

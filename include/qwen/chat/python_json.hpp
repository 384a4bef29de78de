// JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes it, which is what
// the `tojson` filter of transformers' chat templates produces (transformers
// utils/chat_template_utils.py: json.dumps(x, ensure_ascii=False, indent=None, separators=None,
// sort_keys=False)). The chat template renders tools and tool-call arguments with it, so every
// byte must agree:
//   * separators ", " and ": ", no newlines, object keys in the order given (use ordered_json),
//   * strings: `"` `\` and the control characters U+0000..U+001F escaped (\n \r \t \b \f by name,
//     the others as \u00XX in lower-case hex); everything else -- non-ASCII, U+007F, U+2028 --
//     written as is (ensure_ascii=False),
//   * floats as Python's repr: the shortest digits that read back to the same double, in fixed
//     notation when the decimal exponent is in [-4, 16), else d.ddde+XX with at least two
//     exponent digits; a float always shows a '.' or an exponent (1.0, 1e-07, 1e+16, -0.0),
//   * integers exactly (int64 and uint64). An integer beyond 64 bits is held by nlohmann as a
//     double and comes out as a float, where Python would print the exact integer.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace qwen::chat {

namespace detail {

// The characters of a string between its quotes, escaped as json.dumps escapes them. Works on any
// cut of the bytes (each byte is written alone), so a stream may write a string in pieces.
inline void append_python_escaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += ch;
        }
    }
  }
}

inline void append_python_string(std::string& out, std::string_view s) {
  out += '"';
  append_python_escaped(out, s);
  out += '"';
}

// Python's repr(float) (json.dumps uses float.__repr__; NaN and infinities as json.dumps spells them).
inline void append_python_float(std::string& out, double d) {
  if (std::isnan(d)) return void(out += "NaN");
  if (std::isinf(d)) return void(out += d < 0 ? "-Infinity" : "Infinity");
  // Shortest round-trip digits in scientific form, e.g. "-1.2345e+02" or "1e-07".
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<std::size_t>(end - buf));
  if (sci.front() == '-') {
    out += '-';
    sci.remove_prefix(1);
  }
  const std::size_t e_pos = sci.find('e');
  std::string digits(sci.substr(0, e_pos));
  if (digits.size() > 1) digits.erase(1, 1);  // drop the '.'
  const int exponent = std::atoi(std::string(sci.substr(e_pos + 1)).c_str());
  if (exponent >= -4 && exponent < 16) {
    if (exponent >= 0) {
      const auto int_len = static_cast<std::size_t>(exponent) + 1;
      if (digits.size() <= int_len) {
        out += digits;
        out.append(int_len - digits.size(), '0');
        out += ".0";
      } else {
        out += digits.substr(0, int_len);
        out += '.';
        out += digits.substr(int_len);
      }
    } else {
      out += "0.";
      out.append(static_cast<std::size_t>(-exponent - 1), '0');
      out += digits;
    }
  } else {
    out += digits[0];
    if (digits.size() > 1) {
      out += '.';
      out += digits.substr(1);
    }
    out += exponent < 0 ? "e-" : "e+";
    const int magnitude = std::abs(exponent);
    if (magnitude < 10) out += '0';
    out += std::to_string(magnitude);
  }
}

}  // namespace detail

// Appends json.dumps(value, ensure_ascii=False) to `out`. Works for nlohmann::json and
// nlohmann::ordered_json; only the latter keeps the caller's key order.
template <class Json>
void append_python_json(std::string& out, const Json& value) {
  switch (value.type()) {
    case Json::value_t::null: out += "null"; break;
    case Json::value_t::boolean: out += value.template get<bool>() ? "true" : "false"; break;
    case Json::value_t::number_integer: out += std::to_string(value.template get<std::int64_t>()); break;
    case Json::value_t::number_unsigned: out += std::to_string(value.template get<std::uint64_t>()); break;
    case Json::value_t::number_float: detail::append_python_float(out, value.template get<double>()); break;
    case Json::value_t::string: detail::append_python_string(out, value.template get_ref<const std::string&>()); break;
    case Json::value_t::array: {
      out += '[';
      bool first = true;
      for (const Json& element : value) {
        if (!first) out += ", ";
        first = false;
        append_python_json(out, element);
      }
      out += ']';
      break;
    }
    case Json::value_t::object: {
      out += '{';
      bool first = true;
      for (auto it = value.begin(); it != value.end(); ++it) {
        if (!first) out += ", ";
        first = false;
        detail::append_python_string(out, it.key());
        out += ": ";
        append_python_json(out, it.value());
      }
      out += '}';
      break;
    }
    case Json::value_t::binary:
    case Json::value_t::discarded: out += "null"; break;  // never produced by the JSON parser
  }
}

template <class Json>
[[nodiscard]] std::string python_json(const Json& value) {
  std::string out;
  append_python_json(out, value);
  return out;
}

}  // namespace qwen::chat

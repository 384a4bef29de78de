// Reading JSON files and their fields with errors that name the file, the field and the value.
//
// Every JSON text the toolkit reads -- config.json, generation_config.json,
// tokenizer_config.json, the shard index, safetensors headers -- goes through parse_json_strict:
//   * no NUL byte anywhere (nlohmann's parser stops at one and would accept `{...}\0garbage`;
//     Python's json and the reference safetensors library reject trailing characters),
//   * well-formed UTF-8 (RFC 3629) without a byte-order mark (Python's json and serde_json
//     reject one; nlohmann would skip it),
//   * objects and arrays nested at most kMaxJsonDepth levels (deeper input is refused while
//     parsing, so nothing later recurses deeply),
//   * no duplicate keys in an object (Python keeps the last one silently),
//   * numbers that fit a double (`1e999` is an error naming the file, not an escaped exception).
// Files read with read_json_file are at most kMaxJsonFileBytes.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/core/error.hpp"
#include "qwen/io/path_status.hpp"

namespace qwen::io {

using json = nlohmann::json;

// A safetensors header needs 3 levels (header object, entry object, shape array), Qwen3's
// tokenizer.json about 6, and a chat request's tool schemas as many as their authors nest (OpenAI
// and transformers take deep ones). The bound is far above any real file or request and only
// refuses pathological nesting: parsing is iterative, and what recurses later over a parsed value
// (a dump, the chat template's tojson) stays within a few hundred frames.
inline constexpr int kMaxJsonDepth = 256;
// Cap on a JSON file read whole into memory. Qwen3's tokenizer.json, the largest one, is 11 MB.
inline constexpr std::uint64_t kMaxJsonFileBytes = 64ull << 20;

// Offset of the first byte that breaks well-formed UTF-8 (RFC 3629: no overlongs, no surrogates,
// nothing above U+10FFFF), or npos when the whole string is valid.
[[nodiscard]] inline std::size_t first_invalid_utf8(std::string_view s) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = byte(i);
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) len = 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = (c == 0xE0 ? 0xA0 : 0x80), hi = (c == 0xED ? 0x9F : 0xBF);
    else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = (c == 0xF0 ? 0x90 : 0x80), hi = (c == 0xF4 ? 0x8F : 0xBF);
    else return i;
    if (len > s.size() - i) return i;
    for (std::size_t k = 1; k < len; ++k) {
      const unsigned char b = byte(i + k);
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

// Parses JSON text with the checks listed at the top of this file. `where` (a file path, perhaps
// with a part name) starts every FormatError; byte offsets are counted from the start of `text`,
// which is called `unit` in messages ("file", "header"). `Json` may be nlohmann::ordered_json where
// the order of object keys matters (a chat request's tools are rendered in the order given).
template <class Json = json>
[[nodiscard]] Json parse_json_strict(std::string_view text, const std::string& where, std::string_view unit = "file") {
  if (const std::size_t nul = text.find('\0'); nul != std::string_view::npos)
    throw_error<FormatError>(where, ": NUL byte at offset ", nul, " of the ", unit, " (JSON text cannot contain one)");
  if (const std::size_t bad = first_invalid_utf8(text); bad != std::string_view::npos)
    throw_error<FormatError>(where, ": not valid UTF-8 (byte ", bad, " of the ", unit, ")");
  if (text.starts_with("\xEF\xBB\xBF"))
    throw_error<FormatError>(where, ": starts with a UTF-8 byte-order mark, which JSON does not allow");
  std::vector<std::set<std::string>> keys;  // one key set per object being parsed
  auto check = [&](int depth, typename Json::parse_event_t event, Json& parsed) {
    using event_t = typename Json::parse_event_t;
    switch (event) {
      case event_t::object_start:
      case event_t::array_start:
        if (depth >= kMaxJsonDepth) throw_error<FormatError>(where, ": JSON nests deeper than ", kMaxJsonDepth, " levels");
        if (event == event_t::object_start) keys.emplace_back();
        break;
      case event_t::object_end: keys.pop_back(); break;
      case event_t::key:
        if (!keys.back().insert(parsed.template get<std::string>()).second)
          throw_error<FormatError>(where, ": duplicate key \"", parsed.template get<std::string>(), "\" ",
                                   depth == 1 ? "in the top-level object" : "in a nested object");
        break;
      default: break;
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), check);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range.406 for 1e999
    throw_error<FormatError>(where, ": not valid JSON: ", e.what());
  }
}

// Reads everything an open descriptor gives until end of file (a regular file, a pipe, a
// terminal, a device), at most `max_bytes` bytes, `size_hint` bytes expected. IoError naming
// `name` when a read fails (a directory given as stdin: "Is a directory"); FormatError when there
// is more than `max_bytes` (an endless source such as /dev/zero stops there).
[[nodiscard]] inline std::string read_all(int fd, const std::string& name, std::uint64_t max_bytes, std::size_t size_hint = 0) {
  // `size` bytes seen so far; with a known size (a regular file's) the message gives it
  const auto too_large = [&](std::uint64_t size) {
    if (size_hint > max_bytes)
      throw_error<FormatError>(name, ": file is ", size, " bytes, above the limit of ", max_bytes, " bytes (", max_bytes >> 20, " MiB)");
    throw_error<FormatError>(name, ": more than the limit of ", max_bytes, " bytes (", max_bytes >> 20, " MiB)");
  };
  if (size_hint > max_bytes) too_large(size_hint);
  std::string text(size_hint, '\0');
  std::size_t have = 0;
  for (;;) {
    if (have == text.size()) {
      if (have > max_bytes) too_large(have);  // grew while being read, or an endless source
      text.resize(std::max<std::size_t>(have + 4096, std::min<std::uint64_t>(2 * have, max_bytes + 1)));
    }
    const ssize_t n = ::read(fd, text.data() + have, text.size() - have);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_error<IoError>(name, ": read failed: ", std::strerror(errno));
    }
    if (n == 0) break;
    have += static_cast<std::size_t>(n);
  }
  if (have > max_bytes) too_large(have);
  text.resize(have);
  return text;
}

// Reads a whole regular file of at most `max_bytes` bytes. IoError when it is absent, not a
// regular file (a FIFO would block the read forever), or unreadable; FormatError when too large.
[[nodiscard]] inline std::string read_small_file(const std::filesystem::path& path, std::uint64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer; no effect on regular files.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) {
      (void)file_type_at(path);  // throws for a dangling symbolic link
      throw_error<IoError>(path.string(), ": file not found");
    }
    throw_error<IoError>(path.string(), ": cannot open: ", std::strerror(err));
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_error<IoError>(path.string(), ": cannot stat: ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw_error<IoError>(path.string(), ": not a regular file");
  return read_all(fd, path.string(), max_bytes, static_cast<std::size_t>(st.st_size));
}

// Reads and strictly parses a whole JSON file (at most kMaxJsonFileBytes). IoError when it cannot
// be read, FormatError when it is too large or not JSON; messages start with the path.
[[nodiscard]] inline json read_json_file(const std::filesystem::path& path) {
  return parse_json_strict(read_small_file(path, kMaxJsonFileBytes), path.string());
}

// Reads and parses an optional file with parse(json, file name); nullopt only when nothing exists
// at the path (a dangling symbolic link or an unreadable directory is an error).
template <class Parse>
[[nodiscard]] auto read_optional_json_file(const std::filesystem::path& path, Parse parse)
    -> std::optional<decltype(parse(std::declval<const json&>(), std::string()))> {
  if (!path_exists(path)) return std::nullopt;
  return parse(read_json_file(path), path.string());
}

// A short description of a JSON value for messages: the value itself when it is a scalar or a
// flat array/object of a few scalars, else its type and size. Never recursive. `Json` is json or
// ordered_json.
template <class Json>
[[nodiscard]] std::string json_preview(const Json& v) {
  const auto text = [](const Json& value) {
    // `replace`: a value built in code (not parsed) may hold invalid UTF-8; dump must not throw.
    std::string s = value.dump(-1, ' ', false, Json::error_handler_t::replace);
    if (s.size() > 80) {
      std::size_t cut = 77;
      while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 sequence
      s = s.substr(0, cut) + "...";
    }
    return s;
  };
  if (!v.is_structured()) return text(v);
  bool flat = v.size() <= 8;
  for (auto it = v.begin(); flat && it != v.end(); ++it) flat = !it->is_structured();
  if (flat) return text(v);
  return qwen::detail::cat(v.is_array() ? "an array of " : "an object of ", v.size(), v.is_array() ? " elements" : " keys");
}

// A JSON object read field by field; every error names the file and the field.
// Fields absent or null are "missing"; a present field of the wrong type is an error, never
// ignored. Every integer is range-checked before it is narrowed: nothing wraps or truncates.
class JsonObject {
 public:
  JsonObject(const json& object, std::string file) : object_(&object), file_(std::move(file)) {
    if (!object.is_object()) throw_error<ConfigError>(file_, ": expected a JSON object, got ", json_preview(object));
  }

  [[nodiscard]] const std::string& file() const noexcept { return file_; }
  [[nodiscard]] const json& raw() const noexcept { return *object_; }
  [[nodiscard]] bool has(std::string_view key) const { return find(key) != nullptr; }
  // The field's value, or nullptr when absent or null.
  [[nodiscard]] const json* value(std::string_view key) const { return find(key); }

  // Integer field in [lo, hi]; required unless optional_. Integral floats (128.0) are accepted.
  [[nodiscard]] std::optional<std::int64_t> optional_integer(std::string_view key, std::int64_t lo = kMin, std::int64_t hi = kMax) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    return checked_integer(*v, key, lo, hi);
  }
  [[nodiscard]] std::int64_t integer(std::string_view key, std::int64_t lo = kMin, std::int64_t hi = kMax) const {
    return require(key, optional_integer(key, lo, hi));
  }
  // Positive integer that fits in int (shape fields).
  [[nodiscard]] std::optional<int> optional_positive_int(std::string_view key) const {
    auto v = optional_integer(key, 1, std::numeric_limits<int>::max());
    return v ? std::optional<int>(static_cast<int>(*v)) : std::nullopt;
  }
  [[nodiscard]] int positive_int(std::string_view key) const { return require(key, optional_positive_int(key)); }

  [[nodiscard]] std::optional<double> optional_number(std::string_view key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) bad_type(key, *v, "a number");
    return v->get<double>();
  }
  [[nodiscard]] double number(std::string_view key) const { return require(key, optional_number(key)); }

  [[nodiscard]] std::optional<bool> optional_boolean(std::string_view key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) bad_type(key, *v, "true or false");
    return v->get<bool>();
  }
  [[nodiscard]] bool boolean(std::string_view key) const { return require(key, optional_boolean(key)); }

  [[nodiscard]] std::optional<std::string> optional_string(std::string_view key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) bad_type(key, *v, "a string");
    return v->get<std::string>();
  }
  [[nodiscard]] std::string string(std::string_view key) const { return require(key, optional_string(key)); }

  // A list of integers in [lo, hi] (nullopt when absent).
  [[nodiscard]] std::optional<std::vector<std::int64_t>> optional_integer_array(std::string_view key, std::int64_t lo = kMin,
                                                                                std::int64_t hi = kMax) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_array()) bad_type(key, *v, "a list of integers");
    return integers_of(*v, key, lo, hi);
  }
  // An integer or a list of integers (eos_token_id is either), as a list; empty when absent.
  [[nodiscard]] std::vector<std::int64_t> integer_list(std::string_view key, std::int64_t lo = kMin, std::int64_t hi = kMax) const {
    const json* v = find(key);
    if (!v) return {};
    if (v->is_array()) return integers_of(*v, key, lo, hi);
    if (!v->is_number()) bad_type(key, *v, "an integer or a list of integers");
    return {checked_integer(*v, key, lo, hi)};
  }
  // A list of strings (nullopt when absent).
  [[nodiscard]] std::optional<std::vector<std::string>> optional_string_array(std::string_view key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_array()) bad_type(key, *v, "a list of strings");
    std::vector<std::string> out;
    for (const json& e : *v) {
      if (!e.is_string()) bad_type(key, *v, "a list of strings");
      out.push_back(e.get<std::string>());
    }
    return out;
  }

  // A nested object (nullopt when absent or null).
  [[nodiscard]] std::optional<JsonObject> optional_object(std::string_view key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_object()) bad_type(key, *v, "an object");
    return JsonObject(*v, file_ + ": " + std::string(key));
  }

  [[noreturn]] void bad_type(std::string_view key, const json& v, std::string_view expected) const {
    throw_error<ConfigError>(file_, ": field '", key, "' must be ", expected, ", got ", json_preview(v));
  }

 private:
  static constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
  static constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();

  [[nodiscard]] const json* find(std::string_view key) const {
    auto it = object_->find(key);
    if (it == object_->end() || it->is_null()) return nullptr;
    return &*it;
  }
  template <class T>
  [[nodiscard]] T require(std::string_view key, std::optional<T> v) const {
    if (!v) throw_error<ConfigError>(file_, ": required field '", key, "' is missing");
    return *std::move(v);
  }

  // `v` as an integer in [lo, hi]; the message quotes the value as written, never a wrapped one.
  [[nodiscard]] std::int64_t checked_integer(const json& v, std::string_view key, std::int64_t lo, std::int64_t hi) const {
    bool in_range = false;
    std::int64_t out = 0;
    if (v.is_number_unsigned()) {
      const auto u = v.get<std::uint64_t>();
      in_range = u <= static_cast<std::uint64_t>(kMax) && static_cast<std::int64_t>(u) >= lo && static_cast<std::int64_t>(u) <= hi;
      out = in_range ? static_cast<std::int64_t>(u) : 0;
    } else if (v.is_number_integer()) {
      out = v.get<std::int64_t>();
      in_range = out >= lo && out <= hi;
    } else if (v.is_number_float()) {
      // Some writers store integral values as floats (e.g. 128.0): accept those exactly.
      const double d = v.get<double>();
      if (!std::isfinite(d) || d != std::floor(d)) bad_type(key, v, "an integer");
      in_range = std::abs(d) < 9.0e15 && d >= static_cast<double>(lo) && d <= static_cast<double>(hi);
      out = in_range ? static_cast<std::int64_t>(d) : 0;
    } else {
      bad_type(key, v, "an integer");
    }
    if (!in_range) {
      if (lo == kMin && hi == kMax)
        throw_error<ConfigError>(file_, ": field '", key, "' is ", json_preview(v), ", outside the 64-bit integer range");
      throw_error<ConfigError>(file_, ": field '", key, "' must be an integer in [", lo, ", ", hi, "], got ", json_preview(v));
    }
    return out;
  }
  [[nodiscard]] std::vector<std::int64_t> integers_of(const json& array, std::string_view key, std::int64_t lo, std::int64_t hi) const {
    std::vector<std::int64_t> out;
    for (std::size_t i = 0; i < array.size(); ++i) {
      if (!array[i].is_number()) bad_type(key, array, "a list of integers");
      out.push_back(checked_integer(array[i], qwen::detail::cat(key, "[", i, "]"), lo, hi));
    }
    return out;
  }

  const json* object_;
  std::string file_;
};

}  // namespace qwen::io

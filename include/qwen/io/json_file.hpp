// Reading JSON files and their fields with errors that name the file, the field and the value.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/core/error.hpp"

namespace qwen::io {

using json = nlohmann::json;

// Reads and parses a whole JSON file. IoError when it cannot be read, FormatError when it is not JSON.
[[nodiscard]] inline json read_json_file(const std::filesystem::path& path) {
  // Only regular files: a FIFO would block the read forever, a directory reads as garbage.
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    if (!std::filesystem::exists(path, ec)) throw_error<IoError>(path.string(), ": file not found");
    throw_error<IoError>(path.string(), ": not a regular file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_error<IoError>(path.string(), ": cannot open for reading");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw_error<IoError>(path.string(), ": read failed");
  try {
    return json::parse(text.str());
  } catch (const json::parse_error& e) {
    throw_error<FormatError>(path.string(), ": not valid JSON (", e.what(), ")");
  }
}

// Reads and parses an optional file with parse(json, file name); nullopt when the file is absent.
template <class Parse>
[[nodiscard]] auto read_optional_json_file(const std::filesystem::path& path, Parse parse)
    -> std::optional<decltype(parse(std::declval<const json&>(), std::string()))> {
  if (!std::filesystem::exists(path)) return std::nullopt;
  return parse(read_json_file(path), path.string());
}

// A JSON object read field by field; every error names the file and the field.
// Fields absent or null are "missing"; a present field of the wrong type is an error, never ignored.
class JsonObject {
 public:
  JsonObject(const json& object, std::string file) : object_(&object), file_(std::move(file)) {
    if (!object.is_object()) throw_error<ConfigError>(file_, ": expected a JSON object, got ", object.type_name());
  }

  [[nodiscard]] const std::string& file() const noexcept { return file_; }
  [[nodiscard]] const json& raw() const noexcept { return *object_; }
  [[nodiscard]] bool has(std::string_view key) const {
    auto it = object_->find(key);
    return it != object_->end() && !it->is_null();
  }

  // Integer field; required unless a default is given.
  [[nodiscard]] std::int64_t integer(std::string_view key) const { return require(key, optional_integer(key)); }
  [[nodiscard]] std::optional<std::int64_t> optional_integer(std::string_view key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (v->is_number_integer()) return v->get<std::int64_t>();
    // Some writers store integral values as floats (e.g. 128.0): accept those exactly.
    if (v->is_number_float()) {
      double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 9.0e15) return static_cast<std::int64_t>(d);
    }
    bad_type(key, *v, "an integer");
  }
  // Positive integer that fits in int (shape fields).
  [[nodiscard]] std::optional<int> optional_positive_int(std::string_view key) const {
    auto v = optional_integer(key);
    if (!v) return std::nullopt;
    if (*v <= 0 || *v > std::numeric_limits<int>::max())
      throw_error<ConfigError>(file_, ": field '", key, "' must be a positive integer, got ", *v);
    return static_cast<int>(*v);
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

  // An integer or a list of integers (eos_token_id is either), as a list.
  [[nodiscard]] std::vector<std::int64_t> integer_list(std::string_view key) const {
    const json* v = find(key);
    if (!v) return {};
    if (v->is_number_integer()) return {v->get<std::int64_t>()};
    if (!v->is_array()) bad_type(key, *v, "an integer or a list of integers");
    std::vector<std::int64_t> out;
    for (const json& e : *v) {
      if (!e.is_number_integer()) bad_type(key, *v, "a list of integers");
      out.push_back(e.get<std::int64_t>());
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
    throw_error<ConfigError>(file_, ": field '", key, "' must be ", expected, ", got ", abbreviate(v.dump()));
  }

 private:
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
  [[nodiscard]] static std::string abbreviate(std::string s) {
    if (s.size() > 80) s = s.substr(0, 77) + "...";
    return s;
  }

  const json* object_;
  std::string file_;
};

}  // namespace qwen::io

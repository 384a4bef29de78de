// generation_config.json: the checkpoint's sampling defaults and end-of-sequence ids.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "qwen/io/json_file.hpp"
#include "qwen/sampling/params.hpp"

namespace qwen::io {

struct GenerationConfig {
  bool do_sample = false;
  std::optional<double> temperature;
  std::optional<int> top_k;
  std::optional<double> top_p;
  std::optional<double> min_p;
  std::optional<double> repetition_penalty;
  std::vector<std::int64_t> eos_token_ids;  // "eos_token_id": an int or a list
  std::optional<std::int64_t> bos_token_id;
  std::optional<std::int64_t> pad_token_id;
};

[[nodiscard]] inline GenerationConfig parse_generation_config(const json& root, const std::string& file) {
  const JsonObject g(root, file);
  GenerationConfig c;
  c.do_sample = g.optional_boolean("do_sample").value_or(false);
  c.temperature = g.optional_number("temperature");
  if (auto k = g.optional_integer("top_k", -1, std::numeric_limits<int>::max())) c.top_k = static_cast<int>(*k);
  c.top_p = g.optional_number("top_p");
  c.min_p = g.optional_number("min_p");
  c.repetition_penalty = g.optional_number("repetition_penalty");
  c.eos_token_ids = g.integer_list("eos_token_id", 0);
  c.bos_token_id = g.optional_integer("bos_token_id");
  c.pad_token_id = g.optional_integer("pad_token_id");

  auto in_range = [&](const char* field, const std::optional<double>& v, double lo, double hi, bool lo_open) {
    if (v && !(std::isfinite(*v) && (lo_open ? *v > lo : *v >= lo) && *v <= hi))
      throw_error<ConfigError>(file, ": field '", field, "' is ", *v, ", outside ", lo_open ? "(" : "[", lo, ", ", hi, "]");
  };
  in_range("temperature", c.temperature, 0.0, sampling::max_temperature, false);
  in_range("top_p", c.top_p, 0.0, 1.0, true);
  in_range("min_p", c.min_p, 0.0, 1.0, false);
  in_range("repetition_penalty", c.repetition_penalty, sampling::min_repetition_penalty, sampling::max_repetition_penalty, false);
  return c;
}

// Reads DIR/generation_config.json; nullopt when the checkpoint has none.
[[nodiscard]] inline std::optional<GenerationConfig> read_generation_config(const std::filesystem::path& dir) {
  return read_optional_json_file(dir / "generation_config.json", parse_generation_config);
}

}  // namespace qwen::io

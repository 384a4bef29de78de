// qwen-generate's command line: the options as given, the checks that need no checkpoint, and
// the values they turn into (generation parameters, engine options). See main.cpp for the usage.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <qwen/core/error.hpp>
#include <qwen/engine/engine.hpp>
#include <qwen/engine/llm.hpp>
#include <qwen/engine/request.hpp>
#include <qwen/io/generation_config.hpp>

namespace generate {

// The command line as given; an empty optional is an option the user did not pass.
struct Options {
  std::filesystem::path model;
  // The prompt: exactly one of the four.
  std::optional<std::string> prompt_ids, prompt, chat;
  std::optional<std::filesystem::path> input;
  std::optional<std::filesystem::path> output;  // --input only; default stdout
  std::optional<std::string> system;            // --chat only
  bool no_think = false;                        // --chat only
  int max_tokens = 16;
  int logprobs = 0;
  int n = 1;
  std::vector<std::string> stop;
  std::vector<std::string> logit_bias;  // "ID=BIAS", as given
  bool json = false;
  bool ignore_eos = false;
  bool use_generation_config = false;
  std::optional<double> temperature, top_p, min_p, presence_penalty, frequency_penalty, repetition_penalty;
  std::optional<int> top_k, min_tokens;
  std::optional<std::string> seed;  // parsed by parse_seed: CLI11 would wrap "-1" to 2^64 - 1
  // The engine.
  unsigned threads = 0;
  std::string kv_cache_dtype = "bf16";
  int max_num_seqs = 64;
  std::int64_t max_num_batched_tokens = 512;
  std::optional<std::string> kv_cache_memory;
  std::int64_t max_model_len = 0;
  bool no_prefix_caching = false;
};

enum class PromptForm { ids, text, chat, input };

// Which of --prompt-ids, --prompt, --chat, --input was given; exactly one must be. Also refuses
// the options that belong to another form.
inline PromptForm prompt_form(const Options& opt) {
  const int given = (opt.prompt_ids ? 1 : 0) + (opt.prompt ? 1 : 0) + (opt.chat ? 1 : 0) + (opt.input ? 1 : 0);
  if (given == 0) throw qwen::InvalidArgument("one of --prompt, --chat, --input or --prompt-ids is required");
  if (given > 1)
    throw qwen::InvalidArgument("give only one of --prompt-ids, --prompt, --chat and --input (" + std::to_string(given) + " given)");
  const PromptForm form = opt.prompt_ids ? PromptForm::ids : opt.prompt ? PromptForm::text : opt.chat ? PromptForm::chat : PromptForm::input;
  if (form != PromptForm::chat && opt.system) throw qwen::InvalidArgument("--system goes with --chat");
  if (form != PromptForm::chat && opt.no_think) throw qwen::InvalidArgument("--no-think goes with --chat");
  if (form != PromptForm::input && opt.output) throw qwen::InvalidArgument("--output goes with --input (the other forms print to stdout)");
  return form;
}

// --prompt-ids: decimal token ids separated by commas, each optionally surrounded by spaces or
// tabs; no sign, no empty item (so no leading, trailing or doubled comma). Each id <= 2^31 - 1;
// whether it is in the vocabulary is checked against the model.
inline std::vector<std::int32_t> parse_ids(const std::string& text) {
  std::vector<std::int32_t> ids;
  if (text.find_first_not_of(" \t") == std::string::npos) throw qwen::InvalidArgument("--prompt-ids: the prompt is empty");
  std::size_t begin = 0;
  for (std::size_t index = 0;; ++index) {
    const std::size_t comma = text.find(',', begin);
    const std::string item = text.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin);
    const std::size_t first = item.find_first_not_of(" \t");
    const std::string digits = first == std::string::npos ? "" : item.substr(first, item.find_last_not_of(" \t") - first + 1);
    std::uint32_t v = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    // from_chars into an unsigned type takes no sign, and fails on an empty text and on overflow.
    if (error != std::errc() || end != digits.data() + digits.size() || v > static_cast<std::uint32_t>(INT32_MAX))
      throw qwen::InvalidArgument("--prompt-ids: item " + std::to_string(index) + " '" + item +
                                  "' is not a token id (expected decimal ids in [0, 2^31) separated by commas)");
    ids.push_back(static_cast<std::int32_t>(v));
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  return ids;
}

// A decimal integer in [0, 2^64), the whole text.
inline std::uint64_t parse_seed(const std::string& text) {
  std::uint64_t seed = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), seed);
  if (text.empty() || error != std::errc() || end != text.data() + text.size())
    throw qwen::InvalidArgument("--seed: '" + text + "' is not a seed (expected an integer in [0, 2^64))");
  return seed;
}

// A byte count: a whole number of bytes ("1073741824"), or a number (a fraction allowed) with a
// unit: K, M, G, T or KiB, MiB, GiB, TiB (powers of 1024, as coreutils reads K, M, G), KB, MB,
// GB, TB (powers of 1000). At least 1 byte and at most 2^62.
inline std::int64_t parse_byte_size(const std::string& option, const std::string& text) {
  const auto bad = [&]() -> std::int64_t {
    throw qwen::InvalidArgument(option + ": '" + text +
                                "' is not a size (expected a number of bytes, or a number with one of the units "
                                "K, M, G, T, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000))");
  };
  std::size_t digits = 0;
  while (digits < text.size() && ((text[digits] >= '0' && text[digits] <= '9') || text[digits] == '.')) ++digits;
  const std::string_view number(text.data(), digits), unit = std::string_view(text).substr(digits);
  if (number.empty() || number.front() == '.' || number.back() == '.') return bad();
  constexpr double kMax = 4611686018427387904.0;  // 2^62
  if (unit.empty()) {
    std::int64_t bytes = 0;
    const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), bytes);
    if (error != std::errc() || end != number.data() + number.size()) return bad();
    if (bytes < 1) throw qwen::InvalidArgument(option + ": '" + text + "' must be at least 1 byte");
    return bytes;
  }
  struct Unit {
    std::string_view name;
    double bytes;
  };
  constexpr double Ki = 1024.0;
  const Unit units[] = {{"K", Ki},   {"M", Ki * Ki},   {"G", Ki * Ki * Ki},   {"T", Ki * Ki * Ki * Ki},
                        {"KiB", Ki}, {"MiB", Ki * Ki}, {"GiB", Ki * Ki * Ki}, {"TiB", Ki * Ki * Ki * Ki},
                        {"KB", 1e3}, {"MB", 1e6},      {"GB", 1e9},           {"TB", 1e12}};
  double scale = 0;
  for (const Unit& u : units)
    if (unit == u.name) scale = u.bytes;
  if (scale == 0) return bad();
  double value = 0;
  const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), value);
  if (error != std::errc() || end != number.data() + number.size()) return bad();
  const double bytes = std::floor(value * scale);
  if (bytes < 1) throw qwen::InvalidArgument(option + ": '" + text + "' must be at least 1 byte");
  if (bytes > kMax) throw qwen::InvalidArgument(option + ": '" + text + "' is more than 2^62 bytes");
  return static_cast<std::int64_t>(bytes);
}

// "ID=BIAS" (repeatable --logit-bias): a token id and the number added to its logit.
inline std::pair<std::int32_t, float> parse_logit_bias(const std::string& text) {
  const auto bad = [&]() -> std::pair<std::int32_t, float> {
    throw qwen::InvalidArgument("--logit-bias: '" + text + "' is not ID=BIAS (a token id, '=', a number)");
  };
  const std::size_t eq = text.find('=');
  if (eq == std::string::npos) return bad();
  std::int32_t id = 0;
  double bias = 0;
  const char* first = text.data();
  const char* mid = first + eq;
  const char* last = first + text.size();
  const auto [id_end, id_error] = std::from_chars(first, mid, id);
  if (eq == 0 || id_error != std::errc() || id_end != mid || id < 0) return bad();
  const auto [bias_end, bias_error] = std::from_chars(mid + 1, last, bias);
  if (mid + 1 == last || bias_error != std::errc() || bias_end != last) return bad();
  return {id, static_cast<float>(bias)};
}

// The engine's options from the command line (the engine checks their ranges).
inline qwen::engine::LLMOptions llm_options(const Options& opt) {
  qwen::engine::LLMOptions o;
  o.threads = opt.threads;
  o.kv_cache_dtype = qwen::parse_kv_cache_dtype(opt.kv_cache_dtype);
  o.engine.max_num_seqs = opt.max_num_seqs;
  o.engine.max_num_batched_tokens = opt.max_num_batched_tokens;
  o.engine.max_model_len = opt.max_model_len;
  o.engine.kv_cache_bytes = opt.kv_cache_memory ? parse_byte_size("--kv-cache-memory", *opt.kv_cache_memory) : 0;
  o.engine.enable_prefix_caching = !opt.no_prefix_caching;
  return o;
}

// Every request's parameters before a JSONL line's own: the tool's default (greedy) or the
// checkpoint's generation_config.json (--use-generation-config), then the options given.
// `form`: the --prompt-ids form always asks for logprobs (its JSON lists them, empty at 0), the
// others only when --logprobs is not 0.
inline qwen::engine::GenerationParams base_params(const Options& opt, const std::optional<qwen::io::GenerationConfig>& generation,
                                                  PromptForm form) {
  qwen::engine::GenerationParams params;
  qwen::sampling::SamplingParams& p = params.sampling;
  p.temperature = 0;
  if (opt.use_generation_config) {
    if (!generation)
      throw qwen::InvalidArgument("--use-generation-config: " + (opt.model / "generation_config.json").string() +
                                  " does not exist");
    p = qwen::engine::sampling_from_generation_config(*generation);
  }
  p.temperature = opt.temperature.value_or(p.temperature);
  p.top_k = opt.top_k.value_or(p.top_k);
  p.top_p = opt.top_p.value_or(p.top_p);
  p.min_p = opt.min_p.value_or(p.min_p);
  p.presence_penalty = opt.presence_penalty.value_or(p.presence_penalty);
  p.frequency_penalty = opt.frequency_penalty.value_or(p.frequency_penalty);
  p.repetition_penalty = opt.repetition_penalty.value_or(p.repetition_penalty);
  p.min_tokens = opt.min_tokens.value_or(p.min_tokens);
  if (opt.seed) p.seed = parse_seed(*opt.seed);
  if (form == PromptForm::ids || opt.logprobs != 0) p.logprobs = opt.logprobs;
  for (const std::string& b : opt.logit_bias) p.logit_bias.push_back(parse_logit_bias(b));
  params.max_tokens = opt.max_tokens;
  params.stop = opt.stop;
  params.ignore_eos = opt.ignore_eos;
  params.n = opt.n;
  return params;
}

}  // namespace generate

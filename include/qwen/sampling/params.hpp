// Per-request sampling parameters and their validation.
//
// Semantics follow vLLM's SamplingParams (which follow the OpenAI API), with Hugging Face's
// repetition penalty; docs/sampler.md gives the order in which they act. Defaults sample from the
// model's distribution unchanged (temperature 1, every filter off, no penalty).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qwen/core/error.hpp"

namespace qwen::sampling {

// Temperatures below this are greedy (vLLM's _SAMPLING_EPS): dividing by a smaller one only
// turns the distribution into a numerically fragile argmax.
inline constexpr double greedy_temperature_below = 1e-5;
// OpenAI's and vLLM's limit on returned alternatives.
inline constexpr int max_logprobs = 20;
// OpenAI's ranges for the additive penalties and for logit_bias values.
inline constexpr double max_abs_penalty = 2.0;
inline constexpr double max_abs_logit_bias = 100.0;
// The ranges of temperature and repetition_penalty, the same wherever a value comes from (a
// request, a command line, generation_config.json), and narrow enough that no logit of
// magnitude below 1e32 becomes infinite when divided or multiplied by them.
inline constexpr double max_temperature = 1e6;
inline constexpr double min_repetition_penalty = 1e-6;
inline constexpr double max_repetition_penalty = 1e6;

struct SamplingParams {
  double temperature = 1.0;         // in [0, 1e6]; below greedy_temperature_below: greedy (argmax)
  int top_k = 0;                    // 0 or -1: off; otherwise keep the k best tokens
  double top_p = 1.0;               // in (0, 1]; 1: off
  double min_p = 0.0;               // in [0, 1]; 0: off
  double presence_penalty = 0.0;    // in [-2, 2]; subtracted once from every generated token
  double frequency_penalty = 0.0;   // in [-2, 2]; subtracted once per occurrence in the output
  double repetition_penalty = 1.0;  // in [1e-6, 1e6]; HF: over prompt and output tokens, l > 0 ? l / r : l * r
  std::vector<std::pair<std::int32_t, float>> logit_bias;  // token id -> bias in [-100, 100]
  std::optional<std::uint64_t> seed;  // none: the Sampler draws one when the request is admitted
  int min_tokens = 0;               // stop_token_ids are masked until this many tokens are generated
  std::vector<std::int32_t> stop_token_ids;  // every id that ends the request (include the EOS ids)
  std::optional<int> logprobs;      // none: no logprobs; n in [0, 20]: sampled token + n best

  [[nodiscard]] bool greedy() const noexcept { return temperature < greedy_temperature_below; }
};

namespace detail {
[[noreturn]] inline void bad_parameter(const std::string& where, const char* name, double value, const char* rule) {
  throw_error<InvalidArgument>(where, "sampling parameter '", name, "' is ", value, ", ", rule);
}
}  // namespace detail

// Throws InvalidArgument naming the parameter and its value. `where` starts the message (e.g.
// "row 3: "); vocab_size bounds token ids.
inline void validate(const SamplingParams& p, std::int64_t vocab_size, const std::string& where = "") {
  using detail::bad_parameter;
  if (!(p.temperature >= 0 && p.temperature <= max_temperature))
    bad_parameter(where, "temperature", p.temperature, "must be in [0, 1e6]");
  if (p.top_k < -1) bad_parameter(where, "top_k", p.top_k, "must be >= -1 (0 or -1 disable it)");
  if (!(p.top_p > 0 && p.top_p <= 1)) bad_parameter(where, "top_p", p.top_p, "must be in (0, 1]");
  if (!(p.min_p >= 0 && p.min_p <= 1)) bad_parameter(where, "min_p", p.min_p, "must be in [0, 1]");
  if (!(std::abs(p.presence_penalty) <= max_abs_penalty))
    bad_parameter(where, "presence_penalty", p.presence_penalty, "must be in [-2, 2]");
  if (!(std::abs(p.frequency_penalty) <= max_abs_penalty))
    bad_parameter(where, "frequency_penalty", p.frequency_penalty, "must be in [-2, 2]");
  if (!(p.repetition_penalty >= min_repetition_penalty && p.repetition_penalty <= max_repetition_penalty))
    bad_parameter(where, "repetition_penalty", p.repetition_penalty, "must be in [1e-06, 1e+06]");
  if (p.min_tokens < 0) bad_parameter(where, "min_tokens", p.min_tokens, "must be >= 0");
  if (p.logprobs && (*p.logprobs < 0 || *p.logprobs > max_logprobs))
    bad_parameter(where, "logprobs", *p.logprobs, "must be in [0, 20]");
  for (const auto& [token, bias] : p.logit_bias) {
    if (token < 0 || token >= vocab_size)
      throw_error<InvalidArgument>(where, "sampling parameter 'logit_bias' names token ", token,
                                   ", outside the vocabulary [0, ", vocab_size, ")");
    if (!(std::abs(bias) <= max_abs_logit_bias))
      throw_error<InvalidArgument>(where, "sampling parameter 'logit_bias' for token ", token, " is ", bias,
                                   ", must be in [-100, 100]");
  }
  for (const std::int32_t token : p.stop_token_ids)
    if (token < 0 || token >= vocab_size)
      throw_error<InvalidArgument>(where, "sampling parameter 'stop_token_ids' names token ", token,
                                   ", outside the vocabulary [0, ", vocab_size, ")");
}

}  // namespace qwen::sampling

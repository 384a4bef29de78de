// What a caller gives the engine (Request: a prompt and GenerationParams) and what it gets back
// (RequestOutput deltas while a request runs, RequestResult when it ends).
//
// Parameters follow vLLM's SamplingParams / the OpenAI API. Every field is checked at submit
// (validate_generation_params); a bad value is an InvalidArgument naming the field and the value,
// e.g. "request: 'max_tokens' is 0, must be >= 1".
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/chat/tool_call_parser.hpp"
#include "qwen/core/error.hpp"
#include "qwen/sampling/params.hpp"
#include "qwen/sampling/row_sampler.hpp"

namespace qwen::engine {

// Completions per request (`n`): at most this many.
inline constexpr int max_choices = 128;
// Stop strings per request, and bytes per stop string.
inline constexpr std::size_t max_stop_strings = 64;
inline constexpr std::size_t max_stop_string_bytes = 1024;

// Guided decoding (qwen/guided/grammar.hpp): what the output must be. The grammar takes over
// after a thinking model's think block and ends the choice (finish reason stop) when complete.
struct GuidedOutput {
  enum class Kind : std::uint8_t {
    none,
    json_object,  // one JSON object (OpenAI response_format json_object)
    json_schema,  // one JSON object valid under `schema` (response_format json_schema)
    tool_call,    // one tool call in Qwen3's format (OpenAI tool_choice naming a function, or "required");
                  // its arguments follow the function's "parameters" schema when the tool has one
  };
  Kind kind = Kind::none;
  // tool_call: the function called is one of these, each one of the chat request's tools; empty:
  // any of the request's tools.
  std::vector<std::string> tool_names;
  // json_schema: the schema (qwen/guided/json_schema.hpp lists the subset; others are refused at submit).
  nlohmann::ordered_json schema;
};

struct GenerationParams {
  // temperature, top_k, top_p, min_p, penalties, logit_bias, seed, min_tokens, logprobs, and
  // stop_token_ids: the caller's extra stop ids (the engine adds the model's end-of-sequence ids
  // unless ignore_eos).
  sampling::SamplingParams sampling;
  std::optional<int> max_tokens;          // none: up to the context length
  std::vector<std::string> stop;          // stop strings, matched on the detokenized output
  bool ignore_eos = false;                // do not stop at the model's end-of-sequence ids
  bool include_stop_str_in_output = false;  // keep the matched stop string (or stop token's text) in the text
  bool skip_special_tokens = true;        // special tokens' text is left out of the output text
  int n = 1;                              // completions of the prompt; choice i samples with seed + i
  GuidedOutput guided;                    // none: free generation
};

// One prompt: exactly one of token ids, text, or an OpenAI chat request object ({"messages",
// "tools", "chat_template_kwargs", ...}; see qwen/chat/request.hpp), which goes through the
// checkpoint's chat template and whose output is split by the reasoning parser and, when the
// request has tools, the tool-call parser.
struct Request {
  std::vector<std::int32_t> prompt_ids;
  std::optional<std::string> prompt;
  std::optional<nlohmann::ordered_json> chat;
  GenerationParams params;
};

[[nodiscard]] inline Request token_request(std::vector<std::int32_t> ids, GenerationParams params = {}) {
  Request r;
  r.prompt_ids = std::move(ids);
  r.params = std::move(params);
  return r;
}
[[nodiscard]] inline Request text_request(std::string text, GenerationParams params = {}) {
  Request r;
  r.prompt = std::move(text);
  r.params = std::move(params);
  return r;
}
[[nodiscard]] inline Request chat_request(nlohmann::ordered_json chat, GenerationParams params = {}) {
  Request r;
  r.chat = std::move(chat);
  r.params = std::move(params);
  return r;
}

using RequestId = std::uint64_t;

enum class FinishReason : std::uint8_t {
  stop,    // an end-of-sequence id, a stop token id or a stop string
  length,  // max_tokens, or the context length
  abort,   // cancelled (or a sibling choice failed)
  error,   // this choice failed (the message is in `error`); the engine goes on
};

[[nodiscard]] constexpr const char* finish_reason_name(FinishReason r) noexcept {
  switch (r) {
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::abort: return "abort";
    case FinishReason::error: return "error";
  }
  return "?";
}

// One generated token: its id and, when logprobs were asked for, the raw model distribution's
// log-probability of it and the `logprobs` best alternatives (qwen/sampling/row_sampler.hpp).
struct TokenOutput {
  std::int32_t id = -1;
  float logprob = std::numeric_limits<float>::quiet_NaN();
  std::vector<sampling::TokenLogprob> top;
};

struct Usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;     // over every choice
  std::int64_t cached_prompt_tokens = 0;  // prompt tokens served from the prefix cache (first admission)
};

// What one step added to one choice. Text fields hold only the new text: their concatenation
// over a choice's deltas equals the final Choice's field.
struct ChoiceDelta {
  int index = 0;
  std::string text;       // the detokenized output (after stop-string handling)
  std::string reasoning;  // chat: reasoning_content
  std::string content;    // chat: content (tool calls taken out when the request has tools); else = text
  std::vector<chat::ToolCallFragment> tool_calls;  // chat with tools: the calls' pieces (chat::append_fragment)
  std::vector<TokenOutput> tokens;
  std::optional<FinishReason> finish_reason;     // set in the choice's last delta
};

struct Choice {
  int index = 0;
  std::string text;
  std::optional<std::string> reasoning_content;  // chat only; absent without a think block
  std::string content;
  std::vector<chat::ParsedToolCall> tool_calls;
  std::vector<TokenOutput> tokens;
  FinishReason finish_reason = FinishReason::abort;
  std::optional<std::string> stop_string;        // the stop string that ended it
  std::optional<std::int32_t> stop_token;        // the stop / end-of-sequence id that ended it
  std::string error;                             // finish_reason error: why
};

struct RequestResult {
  RequestId id = 0;
  std::vector<std::int32_t> prompt_ids;
  std::vector<Choice> choices;  // by index
  Usage usage;
  std::uint64_t seed = 0;             // the seed choice 0 sampled with (drawn when none was given)
  double time_to_first_token = -1;    // seconds from submit to the first generated token; -1: none
  double duration = 0;                // seconds from submit to the end
};

// Delivered to a request's callback on the engine's loop thread: one per choice per step in
// which that choice changed, and, on the request's last one, `result` (everything, final).
struct RequestOutput {
  RequestId id = 0;
  ChoiceDelta delta;
  const RequestResult* result = nullptr;  // non-null exactly once: when every choice has finished
};

namespace detail {
[[noreturn]] inline void bad_request(const std::string& field, const std::string& problem) {
  throw_error<InvalidArgument>("request: '", field, "' ", problem);
}
}  // namespace detail

// Checks what can be checked without the prompt: n, max_tokens, min_tokens, stop strings and the
// sampling parameters. The engine then checks the prompt against the context and the KV pool.
inline void validate_generation_params(const GenerationParams& p, std::int64_t vocab_size) {
  using detail::bad_request;
  if (p.n < 1 || p.n > max_choices)
    bad_request("n", qwen::detail::cat("is ", p.n, ", must be in [1, ", max_choices, "]"));
  if (p.max_tokens && *p.max_tokens < 1) bad_request("max_tokens", qwen::detail::cat("is ", *p.max_tokens, ", must be >= 1"));
  if (p.max_tokens && p.sampling.min_tokens > *p.max_tokens)
    bad_request("min_tokens", qwen::detail::cat("is ", p.sampling.min_tokens, ", more than max_tokens ", *p.max_tokens));
  if (p.stop.size() > max_stop_strings)
    bad_request("stop", qwen::detail::cat("has ", p.stop.size(), " strings, at most ", max_stop_strings, " are allowed"));
  for (std::size_t i = 0; i < p.stop.size(); ++i) {
    const std::string field = qwen::detail::cat("stop[", i, "]");
    if (p.stop[i].empty()) bad_request(field, "is empty");
    if (p.stop[i].size() > max_stop_string_bytes)
      bad_request(field, qwen::detail::cat("has ", p.stop[i].size(), " bytes, at most ", max_stop_string_bytes, " are allowed"));
  }
  sampling::validate(p.sampling, vocab_size, "request: ");
}

}  // namespace qwen::engine

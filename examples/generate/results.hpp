// qwen-generate's JSON output of a finished request (the --json forms and each JSONL output line).
//
// One choice:
//   {"text", "reasoning_content" (when asked: chat requests' reasoning or null), "content",
//    "tool_calls": [OpenAI tool calls], "token_ids", "finish_reason", "logprobs" (when asked)}
// A request: its choice's fields (n = 1) or "choices": [{"index", ...}, ...] (n > 1), then
//   "usage": {"prompt_tokens", "completion_tokens", "cached_prompt_tokens"}.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <qwen/engine/request.hpp>

namespace generate {

using ordered_json = nlohmann::ordered_json;

// What a choice's JSON holds besides the fields every form has.
struct ResultFields {
  bool reasoning_content = false;  // "reasoning_content" (string or null)
  bool logprobs = false;           // "logprobs"
};

inline std::vector<std::int32_t> token_ids(const qwen::engine::Choice& c) {
  std::vector<std::int32_t> ids;
  ids.reserve(c.tokens.size());
  for (const qwen::engine::TokenOutput& t : c.tokens) ids.push_back(t.id);
  return ids;
}

// [[[id, logprob], ... the K best of the raw distribution], ... one list per generated token].
inline ordered_json logprobs_json(const qwen::engine::Choice& c) {
  ordered_json out = ordered_json::array();
  for (const qwen::engine::TokenOutput& t : c.tokens) {
    ordered_json pairs = ordered_json::array();
    for (const auto& [id, logprob] : t.top) pairs.push_back({id, static_cast<double>(logprob)});
    out.push_back(std::move(pairs));
  }
  return out;
}

inline ordered_json choice_json(const qwen::engine::Choice& c, ResultFields fields) {
  ordered_json j = ordered_json::object();
  j["text"] = c.text;
  if (fields.reasoning_content) j["reasoning_content"] = c.reasoning_content ? ordered_json(*c.reasoning_content) : ordered_json();
  j["content"] = c.content;
  j["tool_calls"] = ordered_json::array();
  for (const auto& call : c.tool_calls) j["tool_calls"].push_back(call.to_openai());
  j["token_ids"] = token_ids(c);
  j["finish_reason"] = qwen::engine::finish_reason_name(c.finish_reason);
  if (fields.logprobs) j["logprobs"] = logprobs_json(c);
  return j;
}

inline ordered_json usage_json(const qwen::engine::Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens}, {"completion_tokens", u.completion_tokens}, {"cached_prompt_tokens", u.cached_prompt_tokens}};
}

// Appends the request's fields to `out` (an object that may already hold an "id").
inline void append_result(ordered_json& out, const qwen::engine::RequestResult& r, ResultFields fields) {
  if (r.choices.size() == 1) {
    const ordered_json choice = choice_json(r.choices[0], fields);
    for (const auto& [key, value] : choice.items()) out[key] = value;
  } else {
    ordered_json choices = ordered_json::array();
    for (const qwen::engine::Choice& c : r.choices) {
      ordered_json one = {{"index", c.index}};
      const ordered_json choice = choice_json(c, fields);
      for (const auto& [key, value] : choice.items()) one[key] = value;
      choices.push_back(std::move(one));
    }
    out["choices"] = std::move(choices);
  }
  out["usage"] = usage_json(r.usage);
}

// The first error of a request whose choice failed (finish reason error), or "".
inline std::string request_error(const qwen::engine::RequestResult& r) {
  for (const qwen::engine::Choice& c : r.choices)
    if (c.finish_reason == qwen::engine::FinishReason::error) return c.error;
  return "";
}

// One line of JSON text; invalid UTF-8 (which the engine's text never holds) would be replaced.
inline std::string dump_line(const ordered_json& j) { return j.dump(-1, ' ', false, ordered_json::error_handler_t::replace) + "\n"; }

}  // namespace generate

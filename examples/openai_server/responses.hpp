// Engine results -> OpenAI response bodies and server-sent-event chunks.
//
//   chat.completion        {"id", "object", "created", "model", "choices": [{"index", "message":
//                           {"role", "content", "reasoning_content", "tool_calls"}, "logprobs",
//                           "finish_reason", "stop_reason"}], "usage"}
//   chat.completion.chunk  the same with "delta" instead of "message", one event per change
//   text_completion        {"choices": [{"index", "text", "logprobs", "finish_reason", "stop_reason"}]}
//   usage                  {"prompt_tokens", "completion_tokens", "total_tokens",
//                           "prompt_tokens_details": {"cached_tokens"}}
//
// finish_reason: "stop", "length", "tool_calls" (a chat choice that ended with tool calls), and,
// when the server aborted it (shutdown), "abort". Token strings in logprobs are the token's bytes
// (invalid UTF-8 replaced by U+FFFD when the JSON is written); "bytes" holds them exactly.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <qwen/engine/request.hpp>
#include <qwen/tokenizer/tokenizer.hpp>

namespace qwen_serve {

using json = nlohmann::ordered_json;

// JSON text of a body or chunk; strings holding invalid UTF-8 (a token's partial character) are
// written with U+FFFD rather than failing.
[[nodiscard]] inline std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// One server-sent event.
[[nodiscard]] inline std::string sse_event(const json& j) { return "data: " + dump_json(j) + "\n\n"; }
inline constexpr std::string_view sse_done = "data: [DONE]\n\n";

// What every body of one response shares.
struct ResponseHead {
  std::string id;     // "chatcmpl-..." or "cmpl-..."
  std::int64_t created = 0;
  std::string model;
};

// The bytes of one token; nothing for an id the tokenizer does not know (a padded vocabulary).
[[nodiscard]] inline std::string token_bytes(const qwen::tokenizer::Tokenizer* tokenizer, std::int32_t id) {
  std::string bytes;
  if (tokenizer && tokenizer->has_token(id)) tokenizer->append_token_bytes(bytes, id, 0, false);
  return bytes;
}

// A log-probability as JSON can hold it (-inf, for a token the distribution excludes, becomes
// -9999, as vLLM writes it).
[[nodiscard]] inline double finite_logprob(float lp) { return std::isfinite(lp) ? static_cast<double>(lp) : -9999.0; }

[[nodiscard]] inline json usage_json(const qwen::engine::Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_prompt_tokens}}}};
}

// A stream's usage event (include_usage): the chunk head, no choices, the usage.
[[nodiscard]] inline std::string usage_sse_event(json head, const qwen::engine::Usage& usage) {
  head["choices"] = json::array();
  head["usage"] = usage_json(usage);
  return sse_event(head);
}

[[nodiscard]] inline qwen::engine::Usage add_usage(qwen::engine::Usage a, const qwen::engine::Usage& b) {
  a.prompt_tokens += b.prompt_tokens;
  a.completion_tokens += b.completion_tokens;
  a.cached_prompt_tokens += b.cached_prompt_tokens;
  return a;
}

[[nodiscard]] inline std::string finish_reason_text(qwen::engine::FinishReason r, bool tool_calls) {
  if (r == qwen::engine::FinishReason::stop && tool_calls) return "tool_calls";
  return qwen::engine::finish_reason_name(r);
}

// vLLM's stop_reason: the stop string or stop token id that ended the choice, else null.
[[nodiscard]] inline json stop_reason_json(const qwen::engine::Choice& c) {
  if (c.stop_string) return *c.stop_string;
  if (c.stop_token) return *c.stop_token;
  return nullptr;
}

// {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}
[[nodiscard]] inline json chat_logprobs_json(std::span<const qwen::engine::TokenOutput> tokens, const qwen::tokenizer::Tokenizer* tokenizer) {
  const auto entry = [&](std::int32_t id, float logprob) {
    const std::string bytes = token_bytes(tokenizer, id);
    json b = json::array();
    for (const char c : bytes) b.push_back(static_cast<unsigned char>(c));
    return json{{"token", bytes}, {"logprob", finite_logprob(logprob)}, {"bytes", std::move(b)}};
  };
  json content = json::array();
  for (const auto& t : tokens) {
    json e = entry(t.id, t.logprob);
    json top = json::array();
    for (const auto& alt : t.top) top.push_back(entry(alt.token, alt.logprob));
    e["top_logprobs"] = std::move(top);
    content.push_back(std::move(e));
  }
  return {{"content", std::move(content)}, {"refusal", nullptr}};
}

// {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}; offsets count
// bytes of the choice's text from `offset` on, which is advanced.
[[nodiscard]] inline json completion_logprobs_json(std::span<const qwen::engine::TokenOutput> tokens,
                                                   const qwen::tokenizer::Tokenizer* tokenizer, std::int64_t& offset) {
  json out = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()}, {"text_offset", json::array()}};
  for (const auto& t : tokens) {
    const std::string bytes = token_bytes(tokenizer, t.id);
    out["tokens"].push_back(bytes);
    out["token_logprobs"].push_back(finite_logprob(t.logprob));
    json top = json::object();
    for (const auto& alt : t.top) top[token_bytes(tokenizer, alt.token)] = finite_logprob(alt.logprob);
    out["top_logprobs"].push_back(std::move(top));
    out["text_offset"].push_back(offset);
    offset += static_cast<std::int64_t>(bytes.size());
  }
  return out;
}

[[nodiscard]] inline json tool_calls_json(const std::vector<qwen::chat::ParsedToolCall>& calls) {
  json list = json::array();
  for (const auto& c : calls) list.push_back(c.to_openai());
  return list;
}

// The whole reply to a chat request (stream false).
[[nodiscard]] inline json chat_completion_json(const ResponseHead& head, const qwen::engine::RequestResult& result, bool logprobs,
                                               const qwen::tokenizer::Tokenizer* tokenizer) {
  json choices = json::array();
  for (const auto& c : result.choices) {
    json message = {{"role", "assistant"}};
    message["content"] = c.content.empty() && !c.tool_calls.empty() ? json(nullptr) : json(c.content);
    message["reasoning_content"] = c.reasoning_content ? json(*c.reasoning_content) : json(nullptr);
    message["tool_calls"] = tool_calls_json(c.tool_calls);
    choices.push_back({{"index", c.index},
                       {"message", std::move(message)},
                       {"logprobs", logprobs ? chat_logprobs_json(c.tokens, tokenizer) : json(nullptr)},
                       {"finish_reason", finish_reason_text(c.finish_reason, !c.tool_calls.empty())},
                       {"stop_reason", stop_reason_json(c)}});
  }
  return {{"id", head.id},
          {"object", "chat.completion"},
          {"created", head.created},
          {"model", head.model},
          {"choices", std::move(choices)},
          {"usage", usage_json(result.usage)}};
}

// The whole reply to a completion request: `results` per prompt, `echo` the prompts' text (empty
// without echo).
[[nodiscard]] inline json completion_json(const ResponseHead& head, const std::vector<qwen::engine::RequestResult>& results,
                                          const std::vector<std::string>& echo, bool logprobs, const qwen::tokenizer::Tokenizer* tokenizer) {
  json choices = json::array();
  qwen::engine::Usage usage;
  for (std::size_t p = 0; p < results.size(); ++p) {
    const auto& result = results[p];
    usage = add_usage(usage, result.usage);
    for (const auto& c : result.choices) {
      const std::string prefix = echo.empty() ? std::string() : echo[p];
      std::int64_t offset = static_cast<std::int64_t>(prefix.size());
      choices.push_back({{"index", static_cast<std::int64_t>(p * result.choices.size()) + c.index},
                         {"text", prefix + c.text},
                         {"logprobs", logprobs ? completion_logprobs_json(c.tokens, tokenizer, offset) : json(nullptr)},
                         {"finish_reason", finish_reason_text(c.finish_reason, false)},
                         {"stop_reason", stop_reason_json(c)}});
    }
  }
  return {{"id", head.id},
          {"object", "text_completion"},
          {"created", head.created},
          {"model", head.model},
          {"choices", std::move(choices)},
          {"usage", usage_json(usage)}};
}

// Chunks of a streamed chat reply, choice by choice as the engine's deltas arrive.
class ChatStream {
 public:
  ChatStream(ResponseHead head, int choices, bool logprobs, bool include_usage, const qwen::tokenizer::Tokenizer* tokenizer)
      : head_(std::move(head)), state_(static_cast<std::size_t>(choices)), logprobs_(logprobs), include_usage_(include_usage),
        tokenizer_(tokenizer) {}

  // The events for one delta: the role first (once per choice), then reasoning, content and each
  // tool-call piece in chunks of their own, logprobs on the last of them, and the finish reason.
  [[nodiscard]] std::string on_delta(const qwen::engine::ChoiceDelta& d, const qwen::engine::Choice* final_choice) {
    State& st = state_.at(static_cast<std::size_t>(d.index));
    std::vector<json> deltas;
    if (!st.role_sent) {
      deltas.push_back({{"role", "assistant"}, {"content", ""}});
      st.role_sent = true;
    }
    if (!d.reasoning.empty()) deltas.push_back({{"reasoning_content", d.reasoning}});
    if (!d.content.empty()) deltas.push_back({{"content", d.content}});
    // A call's first piece carries its id, type and name; every piece the next part of its
    // arguments (OpenAI's streamed form; the SDK concatenates them by index).
    for (const auto& piece : d.tool_calls) {
      json call = {{"index", piece.index}};
      if (piece.starts_call()) {
        call["id"] = piece.id;
        call["type"] = "function";
        call["function"] = {{"name", piece.name}, {"arguments", piece.arguments}};
        ++st.tool_calls;
      } else {
        call["function"] = {{"arguments", piece.arguments}};
      }
      deltas.push_back({{"tool_calls", json::array({std::move(call)})}});
    }
    const bool want_logprobs = logprobs_ && !d.tokens.empty();
    if (want_logprobs && deltas.empty()) deltas.push_back(json::object());
    std::string out;
    for (std::size_t i = 0; i < deltas.size(); ++i) {
      json logprobs = want_logprobs && i + 1 == deltas.size() ? chat_logprobs_json(d.tokens, tokenizer_) : json(nullptr);
      out += sse_event(chunk(d.index, std::move(deltas[i]), std::move(logprobs), nullptr, nullptr));
    }
    if (d.finish_reason) {
      json stop = final_choice ? stop_reason_json(*final_choice) : json(nullptr);
      out += sse_event(chunk(d.index, json::object(), nullptr, finish_reason_text(*d.finish_reason, st.tool_calls > 0), std::move(stop)));
    }
    return out;
  }

  // The last event when include_usage: no choices, the usage.
  [[nodiscard]] std::string usage_event(const qwen::engine::Usage& usage) const { return usage_sse_event(head_json(), usage); }

 private:
  struct State {
    bool role_sent = false;
    int tool_calls = 0;
  };
  [[nodiscard]] json head_json() const {
    return {{"id", head_.id}, {"object", "chat.completion.chunk"}, {"created", head_.created}, {"model", head_.model}};
  }
  [[nodiscard]] json chunk(int index, json delta, json logprobs, json finish, json stop) const {
    json c = head_json();
    c["choices"] = json::array(
        {{{"index", index}, {"delta", std::move(delta)}, {"logprobs", std::move(logprobs)}, {"finish_reason", std::move(finish)},
          {"stop_reason", std::move(stop)}}});
    if (include_usage_) c["usage"] = nullptr;
    return c;
  }

  ResponseHead head_;
  std::vector<State> state_;
  bool logprobs_;
  bool include_usage_;
  const qwen::tokenizer::Tokenizer* tokenizer_;
};

// Chunks of a streamed completion: choice index = prompt * n + choice; with echo the prompt's text
// opens each choice.
class CompletionStream {
 public:
  CompletionStream(ResponseHead head, std::vector<std::string> echo, int n, bool logprobs, bool include_usage,
                   const qwen::tokenizer::Tokenizer* tokenizer)
      : head_(std::move(head)), echo_(std::move(echo)), n_(n), offsets_(std::max<std::size_t>(echo_.size(), 1) * static_cast<std::size_t>(n), -1),
        logprobs_(logprobs), include_usage_(include_usage), tokenizer_(tokenizer) {}

  [[nodiscard]] std::string on_delta(std::size_t prompt, const qwen::engine::ChoiceDelta& d, const qwen::engine::Choice* final_choice) {
    const std::size_t index = prompt * static_cast<std::size_t>(n_) + static_cast<std::size_t>(d.index);
    if (index >= offsets_.size()) offsets_.resize(index + 1, -1);
    std::string text;
    if (offsets_[index] < 0) {  // the choice's first delta
      offsets_[index] = 0;
      if (!echo_.empty()) text = echo_[prompt];
      offsets_[index] = static_cast<std::int64_t>(text.size());
    }
    text += d.text;
    json logprobs = nullptr;
    if (logprobs_) logprobs = completion_logprobs_json(d.tokens, tokenizer_, offsets_[index]);
    std::string out;
    if (!text.empty() || (logprobs_ && !d.tokens.empty()) || d.finish_reason) {
      json c = head_json();
      json choice = {{"index", index}, {"text", std::move(text)}, {"logprobs", std::move(logprobs)}, {"finish_reason", nullptr},
                     {"stop_reason", nullptr}};
      if (d.finish_reason) {
        choice["finish_reason"] = finish_reason_text(*d.finish_reason, false);
        if (final_choice) choice["stop_reason"] = stop_reason_json(*final_choice);
      }
      c["choices"] = json::array({std::move(choice)});
      if (include_usage_) c["usage"] = nullptr;
      out += sse_event(c);
    }
    return out;
  }

  [[nodiscard]] std::string usage_event(const qwen::engine::Usage& usage) const { return usage_sse_event(head_json(), usage); }

 private:
  [[nodiscard]] json head_json() const {
    return {{"id", head_.id}, {"object", "text_completion"}, {"created", head_.created}, {"model", head_.model}};
  }

  ResponseHead head_;
  std::vector<std::string> echo_;
  int n_;
  std::vector<std::int64_t> offsets_;  // per choice: text bytes sent so far; -1 before its first delta
  bool logprobs_;
  bool include_usage_;
  const qwen::tokenizer::Tokenizer* tokenizer_;
};

}  // namespace qwen_serve

// OpenAI request bodies -> engine requests.
//
// Reads the fields of /v1/chat/completions and /v1/completions (docs/server.md lists them) with
// their JSON types checked here (a wrong type is a 400 naming the field); the values' ranges
// are checked by the engine at submit (qwen::engine::validate_generation_params, the chat request
// parser), whose InvalidArgument messages name the field too. `null` means "not given", as
// OpenAI's clients send it. Unknown fields are ignored, as OpenAI's API does.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <qwen/engine/request.hpp>
#include <qwen/engine/openai_guided.hpp>
#include <qwen/io/json_file.hpp>

#include "api_error.hpp"

namespace qwen_serve {

using json = nlohmann::ordered_json;

// Prompts in one /v1/completions request (each becomes an engine request).
inline constexpr std::size_t max_prompts_per_request = 1024;

// OpenAI's default max_tokens for /v1/completions (chat has none: up to the context length).
inline constexpr int default_completion_max_tokens = 16;

// Objects and arrays nest at most this deep in a request body: the bound of every JSON text the
// toolkit reads (a tool's JSON schema may be deep; the chat template renders tools recursively).
inline constexpr int max_body_depth = qwen::io::kMaxJsonDepth;

// The request body as JSON, keys in the client's order (tools are rendered in it). 400 for text
// that is not JSON (invalid UTF-8 included), a NUL byte, or nesting deeper than max_body_depth.
[[nodiscard]] inline json parse_request_body(std::string_view text) {
  if (text.find('\0') != std::string_view::npos) throw bad_request("the request body contains a NUL byte");
  int depth = 0;
  const json::parser_callback_t limit_depth = [&depth](int, json::parse_event_t event, json&) {
    if (event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) {
      if (++depth > max_body_depth)
        throw bad_request("the request body nests objects and arrays deeper than " + std::to_string(max_body_depth) + " levels");
    } else if (event == json::parse_event_t::object_end || event == json::parse_event_t::array_end) {
      --depth;
    }
    return true;
  };
  try {
    return json::parse(text, limit_depth);
  } catch (const json::parse_error& e) {
    throw bad_request(std::string("the request body is not valid JSON: ") + e.what());
  }
}

// The field `key`, or nullptr when it is absent or null.
[[nodiscard]] inline const json* field(const json& body, std::string_view key) {
  const auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

namespace detail {

[[nodiscard]] inline std::string preview(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}
[[noreturn]] inline void type_error(std::string_view key, std::string_view expected, const json& got) {
  throw bad_request("'" + std::string(key) + "' must be " + std::string(expected) + ", got " + preview(got), std::string(key));
}

}  // namespace detail

[[nodiscard]] inline std::optional<bool> get_bool(const json& body, std::string_view key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) detail::type_error(key, "true or false", *v);
  return v->get<bool>();
}

[[nodiscard]] inline std::optional<double> get_number(const json& body, std::string_view key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) detail::type_error(key, "a number", *v);
  return v->get<double>();
}

// An integer in [lo, hi]; a number with a fractional part, or outside the range, is a 400 (an
// integral float such as 5.0 is taken, as OpenAI's server does).
[[nodiscard]] inline std::optional<std::int64_t> get_integer(const json& body, std::string_view key,
                                                             std::int64_t lo = std::numeric_limits<int>::min(),
                                                             std::int64_t hi = std::numeric_limits<int>::max()) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  std::int64_t value = 0;
  if (v->is_number_unsigned()) {
    const auto u = v->get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(hi))
      throw bad_request("'" + std::string(key) + "' is " + std::to_string(u) + ", must be at most " + std::to_string(hi), std::string(key));
    value = static_cast<std::int64_t>(u);
  } else if (v->is_number_integer()) {
    value = v->get<std::int64_t>();
  } else if (v->is_number_float()) {
    const double d = v->get<double>();
    if (!(d == std::floor(d)) || !(std::abs(d) < 9.0e18)) detail::type_error(key, "an integer", *v);
    value = static_cast<std::int64_t>(d);
  } else {
    detail::type_error(key, "an integer", *v);
  }
  if (value < lo || value > hi)
    throw bad_request("'" + std::string(key) + "' is " + std::to_string(value) + ", must be in [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "]",
                      std::string(key));
  return value;
}

[[nodiscard]] inline std::optional<std::string> get_string(const json& body, std::string_view key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) detail::type_error(key, "a string", *v);
  return v->get<std::string>();
}

// A list of token ids (each in [0, 2^31)); the engine checks them against the vocabulary.
[[nodiscard]] inline std::vector<std::int32_t> token_ids(const json& list, const std::string& key) {
  std::vector<std::int32_t> ids;
  ids.reserve(list.size());
  for (std::size_t i = 0; i < list.size(); ++i) {
    const json& t = list[i];
    const std::string name = key + "[" + std::to_string(i) + "]";
    if (!t.is_number_integer()) detail::type_error(name, "a token id (an integer)", t);
    if (t.is_number_unsigned() ? t.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())
                               : (t.get<std::int64_t>() < 0 || t.get<std::int64_t>() > std::numeric_limits<std::int32_t>::max()))
      throw bad_request("'" + name + "' is " + t.dump() + ", not a token id", name);
    ids.push_back(static_cast<std::int32_t>(t.get<std::int64_t>()));
  }
  return ids;
}

// What both endpoints share: sampling, stops, n, max_tokens. `defaults` are the checkpoint's
// (generation_config.json), overridden by every field given.
[[nodiscard]] inline qwen::engine::GenerationParams read_generation_params(const json& body, qwen::engine::GenerationParams defaults,
                                                                           bool chat) {
  qwen::engine::GenerationParams p = std::move(defaults);
  auto& s = p.sampling;
  if (auto v = get_integer(body, "max_tokens")) p.max_tokens = static_cast<int>(*v);
  if (chat)
    if (auto v = get_integer(body, "max_completion_tokens")) p.max_tokens = static_cast<int>(*v);
  if (!chat && !p.max_tokens) p.max_tokens = default_completion_max_tokens;
  if (auto v = get_number(body, "temperature")) s.temperature = *v;
  if (auto v = get_number(body, "top_p")) s.top_p = *v;
  if (auto v = get_integer(body, "top_k")) s.top_k = static_cast<int>(*v);
  if (auto v = get_number(body, "min_p")) s.min_p = *v;
  if (auto v = get_number(body, "presence_penalty")) s.presence_penalty = *v;
  if (auto v = get_number(body, "frequency_penalty")) s.frequency_penalty = *v;
  if (auto v = get_number(body, "repetition_penalty")) s.repetition_penalty = *v;
  if (auto v = get_integer(body, "min_tokens")) s.min_tokens = static_cast<int>(*v);
  if (const json* seed = field(body, "seed")) {
    // Any 64-bit integer; a negative one is taken modulo 2^64.
    if (seed->is_number_unsigned()) s.seed = seed->get<std::uint64_t>();
    else if (seed->is_number_integer()) s.seed = static_cast<std::uint64_t>(seed->get<std::int64_t>());
    else detail::type_error("seed", "an integer", *seed);
  }
  if (auto v = get_integer(body, "n")) p.n = static_cast<int>(*v);
  if (const json* stop = field(body, "stop")) {
    p.stop.clear();
    if (stop->is_string()) {
      p.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (std::size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string()) detail::type_error("stop[" + std::to_string(i) + "]", "a string", (*stop)[i]);
        p.stop.push_back((*stop)[i].get<std::string>());
      }
    } else {
      detail::type_error("stop", "a string or a list of strings", *stop);
    }
  }
  if (const json* ids = field(body, "stop_token_ids")) {
    if (!ids->is_array()) detail::type_error("stop_token_ids", "a list of token ids", *ids);
    s.stop_token_ids = token_ids(*ids, "stop_token_ids");
  }
  if (const json* bias = field(body, "logit_bias")) {
    if (!bias->is_object()) detail::type_error("logit_bias", "an object mapping token ids to biases", *bias);
    s.logit_bias.clear();
    for (const auto& [key, value] : bias->items()) {
      std::int32_t id = -1;
      const auto [end, error] = std::from_chars(key.data(), key.data() + key.size(), id);
      if (key.empty() || error != std::errc() || end != key.data() + key.size() || id < 0)
        throw bad_request("'logit_bias' key \"" + key + "\" is not a token id", "logit_bias");
      if (!value.is_number()) detail::type_error("logit_bias[\"" + key + "\"]", "a number", value);
      s.logit_bias.emplace_back(id, value.get<float>());
    }
  }
  if (auto v = get_bool(body, "ignore_eos")) p.ignore_eos = *v;
  if (auto v = get_bool(body, "include_stop_str_in_output")) p.include_stop_str_in_output = *v;
  if (auto v = get_bool(body, "skip_special_tokens")) p.skip_special_tokens = *v;
  return p;
}

struct StreamFlags {
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

[[nodiscard]] inline StreamFlags read_stream_flags(const json& body) {
  StreamFlags f;
  f.stream = get_bool(body, "stream").value_or(false);
  if (const json* options = field(body, "stream_options")) {
    if (!options->is_object()) detail::type_error("stream_options", "an object", *options);
    if (!f.stream) throw bad_request("'stream_options' is only allowed when 'stream' is true", "stream_options");
    f.include_usage = get_bool(*options, "include_usage").value_or(false);
  }
  return f;
}

// The served model's name when the body names one (a string); a 404 for another name is the
// server's call.
[[nodiscard]] inline std::optional<std::string> requested_model(const json& body) { return get_string(body, "model"); }

// ---- /v1/chat/completions -----------------------------------------------------------------

struct ChatCall {
  qwen::engine::Request request;
  StreamFlags stream;
  bool logprobs = false;  // choices carry logprobs (top_logprobs alternatives each)
};

[[nodiscard]] inline ChatCall read_chat_request(const json& body, const qwen::engine::GenerationParams& defaults) {
  if (!body.is_object()) throw bad_request("the request body must be a JSON object, got " + detail::preview(body));
  ChatCall call;
  call.stream = read_stream_flags(body);
  qwen::engine::GenerationParams params = read_generation_params(body, defaults, true);

  call.logprobs = get_bool(body, "logprobs").value_or(false);
  const std::optional<std::int64_t> top = get_integer(body, "top_logprobs", 0, qwen::sampling::max_logprobs);
  if (top && !call.logprobs) throw bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs");
  if (call.logprobs) params.sampling.logprobs = static_cast<int>(top.value_or(0));

  // What the chat template reads; parse_chat_request (at submit) checks it field by field.
  json chat = json::object();
  for (const char* key : {"messages", "tools", "chat_template_kwargs", "add_generation_prompt"})
    if (const auto it = body.find(key); it != body.end()) chat[key] = *it;
  // tool_choice and response_format: guided decoding (qwen/engine/openai_guided.hpp).
  try {
    const qwen::engine::OpenAIGuided guided =
        qwen::engine::read_openai_guided(field(body, "tool_choice"), field(body, "response_format"), field(body, "tools"));
    params.guided = guided.guided;
    if (guided.hide_tools) chat.erase("tools");  // the model is not told about the tools, so it calls none
  } catch (const qwen::engine::OpenAIFieldError& e) {
    throw bad_request(e.what(), e.field());
  }
  call.request = qwen::engine::chat_request(std::move(chat), std::move(params));
  return call;
}

// ---- /v1/completions ----------------------------------------------------------------------

struct CompletionCall {
  std::vector<qwen::engine::Request> requests;  // one per prompt; choice index = prompt * n + choice
  StreamFlags stream;
  bool echo = false;
  std::optional<int> logprobs;  // the sampled token's logprob and this many alternatives
};

[[nodiscard]] inline CompletionCall read_completion_request(const json& body, const qwen::engine::GenerationParams& defaults) {
  if (!body.is_object()) throw bad_request("the request body must be a JSON object, got " + detail::preview(body));
  CompletionCall call;
  call.stream = read_stream_flags(body);
  qwen::engine::GenerationParams params = read_generation_params(body, defaults, false);
  call.echo = get_bool(body, "echo").value_or(false);
  if (const std::optional<std::int64_t> lp = get_integer(body, "logprobs", 0, qwen::sampling::max_logprobs)) {
    call.logprobs = static_cast<int>(*lp);
    params.sampling.logprobs = call.logprobs;
  }
  if (call.echo && call.logprobs)
    throw not_supported("'echo' with 'logprobs' is not supported yet (it needs the prompt's logprobs)", "echo");
  if (const std::optional<std::string> suffix = get_string(body, "suffix"); suffix && !suffix->empty())
    throw not_supported("'suffix' is not supported", "suffix");
  if (const std::optional<std::int64_t> best_of = get_integer(body, "best_of"); best_of && *best_of != params.n)
    throw not_supported("'best_of' other than n is not supported", "best_of");
  // response_format (vLLM takes it here too): the completion is one JSON object, or one under a schema.
  try {
    params.guided = qwen::engine::read_openai_guided(nullptr, field(body, "response_format"), nullptr).guided;
  } catch (const qwen::engine::OpenAIFieldError& e) {
    throw bad_request(e.what(), e.field());
  }

  const json* prompt = field(body, "prompt");
  if (!prompt) throw bad_request("'prompt' is missing", "prompt");
  const auto add_text = [&](const json& text) { call.requests.push_back(qwen::engine::text_request(text.get<std::string>(), params)); };
  const auto add_ids = [&](const json& list, const std::string& name) {
    if (list.empty()) throw bad_request("'" + name + "' is an empty list of token ids", name);
    call.requests.push_back(qwen::engine::token_request(token_ids(list, name), params));
  };
  if (prompt->is_string()) {
    add_text(*prompt);
  } else if (prompt->is_array()) {
    if (prompt->empty()) throw bad_request("'prompt' is an empty list", "prompt");
    if (prompt->size() > max_prompts_per_request && !prompt->front().is_number())
      throw bad_request("'prompt' has " + std::to_string(prompt->size()) + " prompts, at most " + std::to_string(max_prompts_per_request) +
                            " are allowed",
                        "prompt");
    const json& first = prompt->front();
    if (first.is_number()) {
      add_ids(*prompt, "prompt");
    } else {
      for (std::size_t i = 0; i < prompt->size(); ++i) {
        const json& item = (*prompt)[i];
        const std::string name = "prompt[" + std::to_string(i) + "]";
        if (item.is_string()) add_text(item);
        else if (item.is_array()) add_ids(item, name);
        else detail::type_error(name, "a string or a list of token ids", item);
      }
    }
  } else {
    detail::type_error("prompt", "a string, a list of strings, a list of token ids or a list of such lists", *prompt);
  }
  return call;
}

}  // namespace qwen_serve

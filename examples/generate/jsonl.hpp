// qwen-generate --input: one request per line of a JSONL file.
//
// A line is a JSON object with exactly one prompt:
//   "prompt": "text" | [token ids]                       a completion
//   "messages": [...] (+ "tools", "tool_choice", "chat_template_kwargs", "add_generation_prompt")
//                                                        a chat request (qwen/chat/request.hpp)
// and an optional "response_format" (OpenAI's; with "tool_choice" it is guided decoding, see
// qwen/engine/openai_guided.hpp: a forced tool call, a JSON object, an object under a JSON Schema),
// an optional "id" (string or integer; default: the line's 1-based number), and optional
// per-line values of the command line's parameters, each null for "as on the command line":
//   max_tokens, n, min_tokens, top_k, logprobs          integers
//   temperature, top_p, min_p, presence_penalty, frequency_penalty, repetition_penalty, numbers
//   seed                                                an integer in [0, 2^64)
//   stop                                                a string or a list of strings
//   stop_token_ids                                      a list of token ids
//   logit_bias                                          {"token id": number, ...} (OpenAI's form)
//   ignore_eos, include_stop_str_in_output, skip_special_tokens   booleans
// Any other key, or a value of the wrong type, makes the line an error naming the key. Ranges
// are checked by the engine when the request is submitted (its message names the field too).
#pragma once

#include <charconv>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <qwen/core/error.hpp>
#include <qwen/engine/openai_guided.hpp>
#include <qwen/engine/request.hpp>
#include <qwen/io/json_file.hpp>

namespace generate {

struct InputLine {
  std::size_t number = 0;                        // 1-based line number in the file
  nlohmann::ordered_json id;                     // the line's "id", or its number
  std::optional<qwen::engine::Request> request;  // none: the line is bad
  std::string error;                             // why (without the line number)
  bool chat = false;                             // a chat request (its output has reasoning)
};

namespace detail {

using ordered_json = nlohmann::ordered_json;

// A value as a message shows it: its JSON, cut after 60 bytes.
inline std::string shown(const ordered_json& v) {
  std::string s = v.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

[[noreturn]] inline void bad_value(std::string_view key, std::string_view expected, const ordered_json& v) {
  throw qwen::InvalidArgument(qwen::detail::cat("'", key, "' must be ", expected, ", got ", shown(v)));
}

inline std::int32_t int32_of(std::string_view key, const ordered_json& v) {
  if (!v.is_number_integer()) bad_value(key, "an integer", v);
  if (v.is_number_unsigned() ? v.get<std::uint64_t>() > std::uint64_t{INT32_MAX}
                             : (v.get<std::int64_t>() < INT32_MIN || v.get<std::int64_t>() > INT32_MAX))
    bad_value(key, "an integer in [-2^31, 2^31)", v);
  return static_cast<std::int32_t>(v.get<std::int64_t>());
}

inline std::int32_t token_id_of(std::string_view key, const ordered_json& v) {
  if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<std::int64_t>() < 0) || v.get<std::uint64_t>() > std::uint64_t{INT32_MAX})
    bad_value(key, "a token id (an integer >= 0)", v);
  return static_cast<std::int32_t>(v.get<std::int64_t>());
}

inline double number_of(std::string_view key, const ordered_json& v) {
  if (!v.is_number()) bad_value(key, "a number", v);
  return v.get<double>();
}

inline bool bool_of(std::string_view key, const ordered_json& v) {
  if (!v.is_boolean()) bad_value(key, "true or false", v);
  return v.get<bool>();
}

inline std::string string_of(std::string_view key, const ordered_json& v) {
  if (!v.is_string()) bad_value(key, "a string", v);
  return v.get<std::string>();
}

inline constexpr std::string_view parameter_keys[] = {
    "max_tokens", "n", "min_tokens", "top_k", "logprobs", "temperature", "top_p", "min_p", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "ignore_eos", "include_stop_str_in_output", "skip_special_tokens",
    "seed", "stop", "stop_token_ids", "logit_bias"};

inline bool is_parameter(std::string_view key) {
  for (const std::string_view k : parameter_keys)
    if (k == key) return true;
  return false;
}

// Sets the parameter `key` of `p` from `v` (not null); false for a key that is no parameter.
inline bool set_parameter(qwen::engine::GenerationParams& p, const std::string& key, const ordered_json& v) {
  qwen::sampling::SamplingParams& s = p.sampling;
  if (key == "max_tokens") p.max_tokens = int32_of(key, v);
  else if (key == "n") p.n = int32_of(key, v);
  else if (key == "min_tokens") s.min_tokens = int32_of(key, v);
  else if (key == "top_k") s.top_k = int32_of(key, v);
  else if (key == "logprobs") s.logprobs = int32_of(key, v);
  else if (key == "temperature") s.temperature = number_of(key, v);
  else if (key == "top_p") s.top_p = number_of(key, v);
  else if (key == "min_p") s.min_p = number_of(key, v);
  else if (key == "presence_penalty") s.presence_penalty = number_of(key, v);
  else if (key == "frequency_penalty") s.frequency_penalty = number_of(key, v);
  else if (key == "repetition_penalty") s.repetition_penalty = number_of(key, v);
  else if (key == "ignore_eos") p.ignore_eos = bool_of(key, v);
  else if (key == "include_stop_str_in_output") p.include_stop_str_in_output = bool_of(key, v);
  else if (key == "skip_special_tokens") p.skip_special_tokens = bool_of(key, v);
  else if (key == "seed") {
    if (!v.is_number_unsigned()) bad_value(key, "an integer in [0, 2^64)", v);
    s.seed = v.get<std::uint64_t>();
  } else if (key == "stop") {
    p.stop.clear();
    if (v.is_string()) {
      p.stop.push_back(v.get<std::string>());
    } else if (v.is_array()) {
      for (std::size_t i = 0; i < v.size(); ++i) p.stop.push_back(string_of(qwen::detail::cat("stop[", i, "]"), v[i]));
    } else {
      bad_value(key, "a string or a list of strings", v);
    }
  } else if (key == "stop_token_ids") {
    if (!v.is_array()) bad_value(key, "a list of token ids", v);
    s.stop_token_ids.clear();
    for (std::size_t i = 0; i < v.size(); ++i) s.stop_token_ids.push_back(token_id_of(qwen::detail::cat("stop_token_ids[", i, "]"), v[i]));
  } else if (key == "logit_bias") {
    if (!v.is_object()) bad_value(key, "an object {\"token id\": bias, ...}", v);
    s.logit_bias.clear();
    for (const auto& [id_text, bias] : v.items()) {
      std::int32_t id = 0;
      const auto [end, error] = std::from_chars(id_text.data(), id_text.data() + id_text.size(), id);
      if (id_text.empty() || error != std::errc() || end != id_text.data() + id_text.size() || id < 0)
        throw qwen::InvalidArgument(qwen::detail::cat("'logit_bias' key \"", id_text, "\" is not a token id"));
      s.logit_bias.emplace_back(id, static_cast<float>(number_of(qwen::detail::cat("logit_bias[\"", id_text, "\"]"), bias)));
    }
  } else {
    return false;
  }
  return true;
}

}  // namespace detail

// Reads one line (not empty). `defaults`: the command line's parameters. Never throws: a bad line
// comes back with `error` set.
inline InputLine parse_input_line(std::string_view text, std::size_t number, const qwen::engine::GenerationParams& defaults) {
  using detail::ordered_json;
  InputLine line;
  line.number = number;
  line.id = number;
  try {
    ordered_json j;
    try {
      j = qwen::io::parse_json_strict<ordered_json>(text, "the line", "line");
    } catch (const qwen::Error& e) {
      std::string message = e.what();
      if (message.starts_with("the line: ")) message.erase(0, 10);
      throw qwen::InvalidArgument(message);
    }
    if (!j.is_object()) throw qwen::InvalidArgument("the line must be a JSON object, got " + detail::shown(j));
    if (const auto it = j.find("id"); it != j.end()) {
      if (!it->is_string() && !it->is_number_integer()) detail::bad_value("id", "a string or an integer", *it);
      line.id = *it;
    }
    const bool has_prompt = j.contains("prompt"), has_messages = j.contains("messages");
    if (has_prompt == has_messages) throw qwen::InvalidArgument("give exactly one of 'prompt' and 'messages'");
    qwen::engine::Request request;
    request.params = defaults;
    ordered_json chat = ordered_json::object();
    const ordered_json* tool_choice = nullptr;
    const ordered_json* response_format = nullptr;
    for (const auto& [key, value] : j.items()) {
      if (key == "id") continue;
      if (key == "tool_choice" || key == "response_format") {
        if (key == "tool_choice" && !has_messages) throw qwen::InvalidArgument("'tool_choice' goes with 'messages', not with 'prompt'");
        (key == "tool_choice" ? tool_choice : response_format) = &value;
        continue;
      }
      if (key == "prompt") {
        if (value.is_string()) {
          request.prompt = value.get<std::string>();
        } else if (value.is_array()) {
          if (value.empty()) throw qwen::InvalidArgument("'prompt' is an empty list of token ids");
          for (std::size_t i = 0; i < value.size(); ++i)
            request.prompt_ids.push_back(detail::token_id_of(qwen::detail::cat("prompt[", i, "]"), value[i]));
        } else {
          detail::bad_value(key, "a string or a list of token ids", value);
        }
      } else if (key == "messages" || key == "tools" || key == "chat_template_kwargs" || key == "add_generation_prompt") {
        if (!has_messages) throw qwen::InvalidArgument("'" + key + "' goes with 'messages', not with 'prompt'");
        chat[key] = value;  // checked by the chat request parser at submit
      } else if (value.is_null()) {
        if (!detail::is_parameter(key)) throw qwen::InvalidArgument("unknown key '" + key + "'");
        // null: the command line's value, already in request.params
      } else if (!detail::set_parameter(request.params, key, value)) {
        throw qwen::InvalidArgument("unknown key '" + key + "'");
      }
    }
    const qwen::engine::OpenAIGuided guided =
        qwen::engine::read_openai_guided(tool_choice, response_format, chat.contains("tools") ? &chat["tools"] : nullptr);
    request.params.guided = guided.guided;
    if (guided.hide_tools) chat.erase("tools");
    if (has_messages) {
      request.chat = std::move(chat);
      line.chat = true;
    }
    line.request = std::move(request);
  } catch (const qwen::Error& e) {
    line.error = e.what();
  } catch (const nlohmann::json::exception& e) {
    line.error = e.what();
  }
  return line;
}

}  // namespace generate

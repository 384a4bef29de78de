// An OpenAI chat request (the part a chat template reads), validated into plain structs.
//
// Accepted (everything else in the request is ignored here):
//   {"messages": [...],                      required, a non-empty list of objects
//    "tools": [{"type": "function", "function": {"name": ..., ...}}, ...],   optional
//    "add_generation_prompt": bool,          optional, default true
//    "chat_template_kwargs": {"enable_thinking": bool}}   optional; other kwargs are ignored
// A message: "role" one of system, user, assistant, tool; "content" a string or a list of text
// parts {"type": "text", "text": "..."} (joined with "\n", as vLLM does for templates that take
// string content). An assistant message may omit content (or give null) when it has tool_calls;
// it is then "". Assistant extras: "reasoning_content" (string or null) and "tool_calls", a list
// of {"id"?, "type": "function"?, "function": {"name", "arguments"}} or the flat
// {"name", "arguments"}; arguments a JSON string (rendered as is) or an object (rendered with
// tojson). Fields the template does not read (name, tool_call_id, ...) are ignored.
//
// Every violation is a ChatRequestError naming the field by its path, e.g.
// "chat request: messages[3].tool_calls[0]: must be an object, got 42".
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/core/error.hpp"
#include "qwen/io/json_file.hpp"

namespace qwen::chat {

// A chat request that breaks the contract above. An InvalidArgument: a server answers 400.
class ChatRequestError : public InvalidArgument {
 public:
  using InvalidArgument::InvalidArgument;
};

using ordered_json = nlohmann::ordered_json;

enum class Role { System, User, Assistant, Tool };

[[nodiscard]] constexpr std::string_view role_name(Role r) noexcept {
  switch (r) {
    case Role::System: return "system";
    case Role::User: return "user";
    case Role::Assistant: return "assistant";
    case Role::Tool: return "tool";
  }
  return "?";
}

struct ToolCall {
  std::string name;
  // Exactly one of the two: the arguments as the JSON string the caller gave, or as an object.
  std::optional<std::string> arguments_text;
  ordered_json arguments_object;
};

struct Message {
  Role role = Role::User;
  std::string content;
  std::optional<std::string> reasoning_content;  // assistant only; nullopt when absent or null
  std::vector<ToolCall> tool_calls;              // assistant only
};

struct ChatRequest {
  std::vector<Message> messages;   // never empty
  std::vector<ordered_json> tools; // each an object, rendered with tojson in the given key order
  bool add_generation_prompt = true;
  std::optional<bool> enable_thinking;  // chat_template_kwargs.enable_thinking; nullopt when absent
};

namespace detail {

[[noreturn]] inline void request_error(std::string_view path, std::string_view problem) {
  throw_error<ChatRequestError>("chat request: ", path, ": ", problem);
}
[[noreturn]] inline void request_type_error(std::string_view path, std::string_view expected, const ordered_json& got) {
  throw_error<ChatRequestError>("chat request: ", path, ": must be ", expected, ", got ",
                                io::json_preview(got));
}

// The field `key` of object `o`, or nullptr when absent or null (OpenAI clients send null for
// "not given").
inline const ordered_json* field(const ordered_json& o, std::string_view key) {
  const auto it = o.find(key);
  return it == o.end() || it->is_null() ? nullptr : &*it;
}

inline std::string content_text(const ordered_json& content, const std::string& path) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) request_type_error(path, "a string or a list of text parts", content);
  std::string text;
  for (std::size_t i = 0; i < content.size(); ++i) {
    const ordered_json& part = content[i];
    const std::string part_path = qwen::detail::cat(path, "[", i, "]");
    if (!part.is_object()) request_type_error(part_path, "a text part {\"type\": \"text\", \"text\": ...}", part);
    const ordered_json* type = field(part, "type");
    if (!type || !type->is_string() || type->get<std::string>() != "text")
      request_error(part_path + ".type", type ? qwen::detail::cat("only text parts are supported, got ", type->dump())
                                              : std::string("missing (expected \"text\")"));
    const ordered_json* t = field(part, "text");
    if (!t) request_error(part_path + ".text", "missing");
    if (!t->is_string()) request_type_error(part_path + ".text", "a string", *t);
    if (i > 0) text += '\n';
    text += t->get<std::string>();
  }
  return text;
}

inline ToolCall parse_tool_call(const ordered_json& call, const std::string& path) {
  if (!call.is_object()) request_type_error(path, "an object", call);
  if (const ordered_json* type = field(call, "type"); type && (!type->is_string() || type->get<std::string>() != "function"))
    request_error(path + ".type", qwen::detail::cat("must be \"function\", got ", type->dump()));
  // The template reads tool_call.function when it is truthy, else the call itself.
  const ordered_json* function = field(call, "function");
  std::string fpath = path;
  const ordered_json* body = &call;
  if (function) {
    if (!function->is_object()) request_type_error(path + ".function", "an object", *function);
    body = function;
    fpath += ".function";
  }
  ToolCall out;
  const ordered_json* name = field(*body, "name");
  if (!name) request_error(fpath + ".name", "missing");
  if (!name->is_string()) request_type_error(fpath + ".name", "a string", *name);
  out.name = name->get<std::string>();
  const ordered_json* arguments = field(*body, "arguments");
  if (!arguments) request_error(fpath + ".arguments", "missing");
  if (arguments->is_string()) out.arguments_text = arguments->get<std::string>();
  else if (arguments->is_object()) out.arguments_object = *arguments;
  else request_type_error(fpath + ".arguments", "a JSON string or an object", *arguments);
  return out;
}

inline Message parse_message(const ordered_json& m, std::size_t index) {
  const std::string path = qwen::detail::cat("messages[", index, "]");
  if (!m.is_object()) request_type_error(path, "an object with \"role\" and \"content\"", m);
  Message out;
  const ordered_json* role = field(m, "role");
  if (!role) request_error(path + ".role", "missing");
  if (!role->is_string()) request_type_error(path + ".role", "a string", *role);
  const std::string r = role->get<std::string>();
  if (r == "system") out.role = Role::System;
  else if (r == "user") out.role = Role::User;
  else if (r == "assistant") out.role = Role::Assistant;
  else if (r == "tool") out.role = Role::Tool;
  else request_error(path + ".role", qwen::detail::cat("unknown role ", role->dump(), " (expected system, user, assistant or tool)"));

  if (out.role == Role::Assistant) {
    if (const ordered_json* calls = field(m, "tool_calls")) {
      if (!calls->is_array()) request_type_error(path + ".tool_calls", "a list", *calls);
      for (std::size_t i = 0; i < calls->size(); ++i)
        out.tool_calls.push_back(parse_tool_call((*calls)[i], qwen::detail::cat(path, ".tool_calls[", i, "]")));
    }
    if (const ordered_json* reasoning = field(m, "reasoning_content")) {
      if (!reasoning->is_string()) request_type_error(path + ".reasoning_content", "a string or null", *reasoning);
      out.reasoning_content = reasoning->get<std::string>();
    }
  }
  const ordered_json* content = field(m, "content");
  if (content) out.content = content_text(*content, path + ".content");
  else if (out.role != Role::Assistant || out.tool_calls.empty())
    request_error(path + ".content", out.role == Role::Assistant ? std::string("missing (required for an assistant message without tool_calls)")
                                                                 : qwen::detail::cat("missing (required for a ", r, " message)"));
  return out;
}

}  // namespace detail

// Validates an OpenAI chat request (see the top of this file).
[[nodiscard]] inline ChatRequest parse_chat_request(const ordered_json& request) {
  using detail::field;
  if (!request.is_object()) detail::request_type_error("request", "a JSON object", request);
  ChatRequest out;
  const ordered_json* messages = field(request, "messages");
  if (!messages) detail::request_error("messages", "missing");
  if (!messages->is_array()) detail::request_type_error("messages", "a list of messages", *messages);
  if (messages->empty()) detail::request_error("messages", "the list is empty");
  for (std::size_t i = 0; i < messages->size(); ++i) out.messages.push_back(detail::parse_message((*messages)[i], i));

  if (const ordered_json* tools = field(request, "tools")) {
    if (!tools->is_array()) detail::request_type_error("tools", "a list of tools", *tools);
    for (std::size_t i = 0; i < tools->size(); ++i) {
      const ordered_json& tool = (*tools)[i];
      const std::string path = qwen::detail::cat("tools[", i, "]");
      if (!tool.is_object()) detail::request_type_error(path, "an object {\"type\": \"function\", \"function\": {...}}", tool);
      const ordered_json* type = field(tool, "type");
      if (!type || !type->is_string() || type->get<std::string>() != "function")
        detail::request_error(path + ".type", type ? qwen::detail::cat("must be \"function\", got ", type->dump()) : "missing");
      const ordered_json* function = field(tool, "function");
      if (!function) detail::request_error(path + ".function", "missing");
      if (!function->is_object()) detail::request_type_error(path + ".function", "an object", *function);
      const ordered_json* name = field(*function, "name");
      if (!name) detail::request_error(path + ".function.name", "missing");
      if (!name->is_string()) detail::request_type_error(path + ".function.name", "a string", *name);
      out.tools.push_back(tool);
    }
  }
  if (const ordered_json* agp = field(request, "add_generation_prompt")) {
    if (!agp->is_boolean()) detail::request_type_error("add_generation_prompt", "true or false", *agp);
    out.add_generation_prompt = agp->get<bool>();
  }
  if (const ordered_json* kwargs = field(request, "chat_template_kwargs")) {
    if (!kwargs->is_object()) detail::request_type_error("chat_template_kwargs", "an object", *kwargs);
    if (const ordered_json* thinking = field(*kwargs, "enable_thinking")) {
      if (!thinking->is_boolean()) detail::request_type_error("chat_template_kwargs.enable_thinking", "true or false", *thinking);
      out.enable_thinking = thinking->get<bool>();
    }
  }
  return out;
}

// nlohmann::json sorts object keys; see render() in chat_template.hpp. Use ordered_json.
ChatRequest parse_chat_request(const nlohmann::json& request) = delete;

}  // namespace qwen::chat

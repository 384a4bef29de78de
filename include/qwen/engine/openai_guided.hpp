// OpenAI's `tool_choice` and `response_format` as guided decoding (GuidedOutput), for every front
// end that takes OpenAI-shaped requests (qwen-serve's chat route, qwen-generate's input lines).
//
//   tool_choice  "auto" (or absent): the model may call a tool; "none": the tools are not shown
//                to the model (hide_tools); "required": exactly one call to one of the tools;
//                {"type": "function", "function": {"name": N}}: exactly one call to N, which
//                must be one of the tools.
//   response_format  {"type": "text"}; {"type": "json_object"}; {"type": "json_schema",
//                "json_schema": {"name": ..., "schema": S}}: S within qwen/guided/json_schema.hpp's
//                subset, checked here.
// A forced call and a JSON response_format together are refused. Errors are OpenAIFieldError (an
// InvalidArgument) whose message starts "request: " and quotes the field (e.g. "request:
// 'tool_choice.function.name' is \"x\", which is not among the request's tools"), and whose
// field() names it apart, whatever the client's text inside the message.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "qwen/core/error.hpp"
#include "qwen/engine/request.hpp"
#include "qwen/guided/json_schema.hpp"
#include "qwen/io/json_file.hpp"

namespace qwen::engine {

class OpenAIFieldError : public InvalidArgument {
 public:
  OpenAIFieldError(std::string field, const std::string& problem)
      : InvalidArgument("request: '" + field + "' " + problem), field_(std::move(field)) {}
  [[nodiscard]] const std::string& field() const noexcept { return field_; }

 private:
  std::string field_;
};

struct OpenAIGuided {
  GuidedOutput guided;
  bool hide_tools = false;  // tool_choice "none": leave the tools out of the prompt
};

namespace openai_detail {
using ordered_json = nlohmann::ordered_json;
[[noreturn]] inline void bad(const std::string& field, const std::string& problem) { throw OpenAIFieldError(field, problem); }
inline const ordered_json* member(const ordered_json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}
inline std::optional<std::string> string_at(const ordered_json& object, const char* key, const std::string& field) {
  const ordered_json* v = member(object, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) bad(field, "must be a string, got " + io::json_preview(*v));
  return v->get<std::string>();
}
}  // namespace openai_detail

// tool_choice, response_format and tools: the request's fields (null when absent).
[[nodiscard]] inline OpenAIGuided read_openai_guided(const nlohmann::ordered_json* tool_choice, const nlohmann::ordered_json* response_format,
                                                    const nlohmann::ordered_json* tools) {
  using namespace openai_detail;
  OpenAIGuided out;
  if (response_format && !response_format->is_null()) {
    if (!response_format->is_object()) bad("response_format", "must be an object {\"type\": ...}, got " + io::json_preview(*response_format));
    const std::optional<std::string> type = string_at(*response_format, "type", "response_format.type");
    if (!type) bad("response_format.type", "is missing");
    if (*type == "json_schema") {
      const ordered_json* spec = member(*response_format, "json_schema");
      if (!spec || !spec->is_object()) bad("response_format.json_schema", "must be an object {\"name\": ..., \"schema\": {...}}");
      const ordered_json* schema = member(*spec, "schema");
      if (!schema) bad("response_format.json_schema.schema", "is missing");
      try {
        (void)guided::JsonSchema(*schema, "");
      } catch (const guided::SchemaError& e) {
        bad("response_format.json_schema.schema" + e.path(), e.problem());
      }
      out.guided.kind = GuidedOutput::Kind::json_schema;
      out.guided.schema = *schema;
    } else if (*type == "json_object") {
      out.guided.kind = GuidedOutput::Kind::json_object;
    } else if (*type != "text") {
      bad("response_format.type", "is \"" + *type + "\", must be \"text\", \"json_object\" or \"json_schema\"");
    }
  }
  if (!tool_choice || tool_choice->is_null()) return out;
  // The tools a forced call may name (the chat request parser checks the rest of each at submit).
  if (tools && !tools->is_null() && !tools->is_array()) bad("tools", "must be a list of tools, got " + io::json_preview(*tools));
  const bool has_tools = tools && tools->is_array() && !tools->empty();
  if (has_tools)
    for (std::size_t i = 0; i < tools->size(); ++i) {
      const ordered_json& tool = (*tools)[i];
      const std::string at = "tools[" + std::to_string(i) + "]";
      const ordered_json* function = tool.is_object() ? member(tool, "function") : nullptr;
      if (!function || !function->is_object()) bad(at + ".function", "must be an object {\"name\": ...}");
      if (!string_at(*function, "name", at + ".function.name")) bad(at + ".function.name", "is missing");
    }
  bool forced = false;
  if (tool_choice->is_string()) {
    const std::string c = tool_choice->get<std::string>();
    if (c == "none") {
      out.hide_tools = true;
    } else if (c == "required") {
      if (!has_tools) bad("tool_choice", "is \"required\" but the request has no 'tools'");
      forced = true;
    } else if (c != "auto") {
      bad("tool_choice", "is \"" + c + "\", must be \"none\", \"auto\", \"required\" or a named function");
    }
  } else if (tool_choice->is_object()) {
    if (!has_tools) bad("tool_choice", "names a function but the request has no 'tools'");
    if (const std::optional<std::string> type = string_at(*tool_choice, "type", "tool_choice.type"); type && *type != "function")
      bad("tool_choice.type", "is \"" + *type + "\", must be \"function\"");
    const ordered_json* function = member(*tool_choice, "function");
    if (!function || !function->is_object()) bad("tool_choice.function", "must be an object {\"name\": ...}");
    const std::optional<std::string> name = string_at(*function, "name", "tool_choice.function.name");
    if (!name) bad("tool_choice.function.name", "is missing");
    bool known = false;
    for (const ordered_json& tool : *tools) known = known || (*member(tool, "function"))["name"].get<std::string>() == *name;
    if (!known) bad("tool_choice.function.name", "is \"" + *name + "\", which is not among the request's tools");
    forced = true;
    out.guided.tool_names = {*name};
  } else {
    bad("tool_choice", "must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}, got " +
                           io::json_preview(*tool_choice));
  }
  if (forced) {
    if (out.guided.kind != GuidedOutput::Kind::none)
      bad("response_format", "cannot be a JSON format together with a forced tool call ('tool_choice')");
    out.guided.kind = GuidedOutput::Kind::tool_call;
  }
  return out;
}

}  // namespace qwen::engine

// The Qwen3 chat template (the hybrid thinking template of the Qwen3 release, in its
// tokenizer_config.json), written as C++. Each function below is one part of the Jinja template
// and produces exactly the bytes transformers' apply_chat_template renders for it (the Jinja
// environment has trim_blocks and lstrip_blocks, and every tag strips the whitespace around it,
// so the output is only the concatenated expressions). The Jinja each part follows is quoted
// in prose; tests/chat/expected_renders.json holds the reference outputs.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "qwen/chat/python_json.hpp"
#include "qwen/chat/request.hpp"

namespace qwen::chat::qwen3 {

// Python's str.strip / lstrip / rstrip with the argument '\n' (only newlines are removed).
[[nodiscard]] inline std::string_view lstrip_newlines(std::string_view s) {
  const std::size_t i = s.find_first_not_of('\n');
  return i == std::string_view::npos ? std::string_view() : s.substr(i);
}
[[nodiscard]] inline std::string_view rstrip_newlines(std::string_view s) {
  const std::size_t i = s.find_last_not_of('\n');
  return i == std::string_view::npos ? std::string_view() : s.substr(0, i + 1);
}
[[nodiscard]] inline std::string_view strip_newlines(std::string_view s) { return rstrip_newlines(lstrip_newlines(s)); }

// Header: with tools, a system turn holding the first system message (if any), then every tool
// as `tojson` on its own line inside <tools></tools> and the instructions for calling them;
// without tools, the first message when it is a system message.
inline void render_header(std::string& out, const ChatRequest& request) {
  const Message& first = request.messages.front();
  const bool system_first = first.role == Role::System;
  if (!request.tools.empty()) {
    out += "<|im_start|>system\n";
    if (system_first) {
      out += first.content;
      out += "\n\n";
    }
    out += "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
           "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
    for (const ordered_json& tool : request.tools) {
      out += '\n';
      append_python_json(out, tool);
    }
    out += "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
           "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
           "<args-json-object>}\n</tool_call><|im_end|>\n";
  } else if (system_first) {
    out += "<|im_start|>system\n";
    out += first.content;
    out += "<|im_end|>\n";
  }
}

// ns.last_query_index: the index of the last user message that is not a wrapped tool response
// (content starting with "<tool_response>" and ending with "</tool_response>"); the last index
// when there is none. Only assistant turns after it keep their reasoning.
[[nodiscard]] inline std::size_t last_query_index(const ChatRequest& request) {
  const auto& messages = request.messages;
  for (std::size_t i = messages.size(); i-- > 0;) {
    const Message& m = messages[i];
    const bool wrapped = m.content.starts_with("<tool_response>") && m.content.ends_with("</tool_response>");
    if (m.role == Role::User && !wrapped) return i;
  }
  return messages.size() - 1;
}

// An assistant turn. Reasoning is reasoning_content when given (even ""), else, when the content
// holds "</think>", the text before the first "</think>" after the last "<think>" in it, and the
// content becomes what follows the last "</think>" (newlines trimmed as the template does).
// After the last query, the last message and every message with non-empty reasoning are
// written with a <think> block; earlier ones are written without their reasoning.
inline void render_assistant(std::string& out, const Message& m, std::size_t index, bool is_last, std::size_t last_query) {
  std::string_view content = m.content;
  std::string_view reasoning;
  if (m.reasoning_content) {
    reasoning = *m.reasoning_content;
  } else if (const std::size_t first_close = content.find("</think>"); first_close != std::string_view::npos) {
    const std::string_view before = rstrip_newlines(content.substr(0, first_close));
    const std::size_t open = before.rfind("<think>");
    reasoning = lstrip_newlines(open == std::string_view::npos ? before : before.substr(open + 7));
    content = lstrip_newlines(content.substr(content.rfind("</think>") + 8));
  }
  out += "<|im_start|>assistant\n";
  if (index > last_query && (is_last || !reasoning.empty())) {
    out += "<think>\n";
    out += strip_newlines(reasoning);
    out += "\n</think>\n\n";
    out += lstrip_newlines(content);
  } else {
    out += content;
  }
  for (std::size_t j = 0; j < m.tool_calls.size(); ++j) {
    const ToolCall& call = m.tool_calls[j];
    if (j > 0 || !content.empty()) out += '\n';  // `content` here is before the think block's lstrip
    out += "<tool_call>\n{\"name\": \"";
    out += call.name;
    out += "\", \"arguments\": ";
    if (call.arguments_text) out += *call.arguments_text;
    else append_python_json(out, call.arguments_object);
    out += "}\n</tool_call>";
  }
  out += "<|im_end|>\n";
}

// A run of consecutive tool messages becomes one user turn of <tool_response> blocks.
inline void render_tool(std::string& out, const ChatRequest& request, std::size_t index) {
  const auto& messages = request.messages;
  if (index == 0 || messages[index - 1].role != Role::Tool) out += "<|im_start|>user";
  out += "\n<tool_response>\n";
  out += messages[index].content;
  out += "\n</tool_response>";
  if (index + 1 == messages.size() || messages[index + 1].role != Role::Tool) out += "<|im_end|>\n";
}

// The whole prompt. The generation prompt opens an assistant turn; with enable_thinking false
// it also closes an empty think block, so the model answers without reasoning.
[[nodiscard]] inline std::string render(const ChatRequest& request) {
  std::string out;
  render_header(out, request);
  const std::size_t last_query = last_query_index(request);
  const auto& messages = request.messages;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const Message& m = messages[i];
    switch (m.role) {
      case Role::System:
        if (i == 0) break;  // already in the header
        [[fallthrough]];
      case Role::User:
        out += "<|im_start|>";
        out += role_name(m.role);
        out += '\n';
        out += m.content;
        out += "<|im_end|>\n";
        break;
      case Role::Assistant: render_assistant(out, m, i, i + 1 == messages.size(), last_query); break;
      case Role::Tool: render_tool(out, request, i); break;
    }
  }
  if (request.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (request.enable_thinking == false) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

}  // namespace qwen::chat::qwen3

// ToolCallParser: finds Qwen3's tool calls in the content of a reply, fed as text chunks while it
// is generated, and turns them into OpenAI tool_calls. The result never depends on how the text
// is cut into chunks.
//
// A tool call is the text the Qwen3 template teaches the model (and renders back):
//   <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>
// one or several per reply. Rules:
//   * Between "<tool_call>" and "</tool_call>" must be, after trimming whitespace, one JSON
//     object (parsed by io::parse_json_strict) with "name" a non-empty string and "arguments" an
//     object. It becomes {id, type "function", name, arguments}, arguments as JSON text written
//     as json.dumps(..., ensure_ascii=False) writes it (the form the template renders back, and
//     the one vLLM's hermes parser returns), keys in the model's order.
//   * Anything else between the tags (invalid JSON, another shape) is not a tool call: the whole
//     text, tags included, is returned as content, never dropped. So is a "<tool_call>" that is
//     never closed before the end.
//   * Text outside tool calls is content, except the whitespace right before and right after a
//     valid tool call (the template writes "content\n<tool_call>..." and separates calls by
//     "\n"), which is dropped.
//   * ids are `id_prefix` followed by the call's number in the reply (0, 1, ...); a server passes
//     a prefix unique to the request.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/chat/python_json.hpp"
#include "qwen/chat/reasoning_parser.hpp"
#include "qwen/core/error.hpp"
#include "qwen/io/json_file.hpp"

namespace qwen::chat {

inline constexpr std::string_view kToolCallOpen = "<tool_call>";
inline constexpr std::string_view kToolCallClose = "</tool_call>";

struct ParsedToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text of an object

  // The OpenAI form: {"id", "type": "function", "function": {"name", "arguments"}}.
  [[nodiscard]] nlohmann::ordered_json to_openai() const {
    return {{"id", id}, {"type", "function"}, {"function", {{"name", name}, {"arguments", arguments}}}};
  }
  friend bool operator==(const ParsedToolCall&, const ParsedToolCall&) = default;
};

struct ToolCallDelta {
  std::string content;
  std::vector<ParsedToolCall> tool_calls;
};

class ToolCallParser {
 public:
  explicit ToolCallParser(std::string id_prefix = "call_") : id_prefix_(std::move(id_prefix)) {}

  // The content and the complete tool calls that `chunk` settles; text that may still be part
  // of a tag or of a tool call, and whitespace that may precede one, are held back.
  [[nodiscard]] ToolCallDelta feed(std::string_view chunk) {
    ToolCallDelta delta;
    held_ += chunk;
    run(delta, false);
    return delta;
  }

  // The end of the reply: everything held back is settled.
  [[nodiscard]] ToolCallDelta finish() {
    ToolCallDelta delta;
    run(delta, true);
    return delta;
  }

  // Everything parsed so far (complete after finish()).
  [[nodiscard]] const std::string& content() const noexcept { return content_; }
  [[nodiscard]] const std::vector<ParsedToolCall>& tool_calls() const noexcept { return calls_; }

  // The body of a tool call (the text between the tags) as a call, or false when it is not one.
  [[nodiscard]] static bool parse_body(std::string_view body, ParsedToolCall& out) {
    constexpr std::string_view kSpace = " \t\r\n";
    const std::size_t begin = body.find_first_not_of(kSpace);
    if (begin == std::string_view::npos) return false;
    body = body.substr(begin, body.find_last_not_of(kSpace) - begin + 1);
    nlohmann::ordered_json call;
    try {
      call = io::parse_json_strict<nlohmann::ordered_json>(body, "tool call", "tool call");
    } catch (const FormatError&) {
      return false;
    }
    if (!call.is_object()) return false;
    const auto name = call.find("name");
    const auto arguments = call.find("arguments");
    if (name == call.end() || !name->is_string() || name->get_ref<const std::string&>().empty()) return false;
    if (arguments == call.end() || !arguments->is_object()) return false;
    out.name = name->get<std::string>();
    out.arguments = python_json(*arguments);
    return true;
  }

 private:
  enum class State { Text, InCall };

  static bool is_space(char c) noexcept { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

  void emit_content(ToolCallDelta& delta, std::string_view text) {
    delta.content += text;
    content_ += text;
  }

  // Text outside tool calls: whitespace is held back (it is dropped if a tool call follows) and
  // dropped right after a valid tool call.
  void add_text(ToolCallDelta& delta, std::string_view text) {
    for (const char c : text) {
      if (is_space(c)) {
        if (!after_call_) pending_space_ += c;
        continue;
      }
      after_call_ = false;
      emit_content(delta, pending_space_);
      pending_space_.clear();
      emit_content(delta, std::string_view(&c, 1));
    }
  }

  void run(ToolCallDelta& delta, bool at_end) {
    for (;;) {
      if (state_ == State::Text) {
        if (const std::size_t open = held_.find(kToolCallOpen); open != std::string::npos) {
          add_text(delta, std::string_view(held_).substr(0, open));
          space_before_call_ = std::exchange(pending_space_, {});
          held_.erase(0, open + kToolCallOpen.size());
          state_ = State::InCall;
          continue;
        }
        const std::size_t keep = at_end ? 0 : partial_tag_suffix(held_, kToolCallOpen);
        add_text(delta, std::string_view(held_).substr(0, held_.size() - keep));
        held_.erase(0, held_.size() - keep);
        if (at_end) {
          emit_content(delta, pending_space_);
          pending_space_.clear();
        }
        return;
      }
      // InCall: wait for the closing tag. The search resumes where the last one stopped (less the
      // length of a partial tag), so a long call fed token by token is scanned once.
      const std::size_t close = held_.find(kToolCallClose, scanned_);
      if (close == std::string::npos) {
        scanned_ = held_.size() < kToolCallClose.size() ? 0 : held_.size() - kToolCallClose.size() + 1;
        if (!at_end) return;
        // Never closed: the text is content, as written.
        emit_content(delta, space_before_call_);
        emit_content(delta, kToolCallOpen);
        emit_content(delta, held_);
        held_.clear();
        return;
      }
      ParsedToolCall call;
      if (parse_body(std::string_view(held_).substr(0, close), call)) {
        call.id = id_prefix_ + std::to_string(calls_.size());
        calls_.push_back(call);
        delta.tool_calls.push_back(std::move(call));
        after_call_ = true;
      } else {
        emit_content(delta, space_before_call_);
        emit_content(delta, kToolCallOpen);
        emit_content(delta, std::string_view(held_).substr(0, close + kToolCallClose.size()));
        after_call_ = false;
      }
      space_before_call_.clear();
      scanned_ = 0;
      held_.erase(0, close + kToolCallClose.size());
      state_ = State::Text;
    }
  }

  std::string id_prefix_;
  State state_ = State::Text;
  std::string held_;               // text not yet settled
  std::size_t scanned_ = 0;        // in a call: held_[0, scanned_) holds no start of "</tool_call>"
  std::string pending_space_;      // whitespace after the last content character
  std::string space_before_call_;  // whitespace before the open tool call (content if the call is invalid)
  bool after_call_ = false;        // right after a valid tool call: whitespace is dropped
  std::string content_;
  std::vector<ParsedToolCall> calls_;
};

}  // namespace qwen::chat

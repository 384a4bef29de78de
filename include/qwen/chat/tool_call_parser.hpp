// ToolCallParser: finds Qwen3's tool calls in the content of a reply, fed as text chunks while it
// is generated, and turns them into OpenAI tool_calls, streamed: a call's id and name as soon as
// its arguments begin, then its arguments in fragments as they are written. The result never
// depends on how the text is cut into chunks, and the fragments of a call concatenate to its
// final arguments.
//
// A tool call is the text the Qwen3 template teaches the model (and renders back):
//   <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>
// one or several per reply. The body (the text between the tags, whitespace trimmed) is read as
// JSON while it arrives (PythonJsonStream: parse_json_strict's language, byte for byte):
//   * A well-formed call is one JSON object with "name" a non-empty string and "arguments" an
//     object (other keys are read and ignored), and nothing but whitespace after it. It becomes
//     {id, type "function", name, arguments}, arguments as JSON text written as
//     json.dumps(..., ensure_ascii=False) writes it (the form the template renders back, and the
//     one vLLM's hermes parser returns), keys in the model's order. For a well-formed body this
//     equals parse_body(), the whole-text definition, which the tests hold it to.
//   * The call starts (its first fragment, with id and name, goes out) when the body's "name" is
//     read and its "arguments" object has begun (or, if "arguments" comes first, when "name" is
//     read). Before that point nothing of the call is emitted; a body that fails before it, or a
//     "<tool_call>" never closed before it, is not a tool call: the whole text, tags included, is
//     content, never dropped.
//   * A started call that then fails (the text stops being valid JSON, a duplicate key, junk
//     after the object) or is cut short (the reply ends, or "</tool_call>" comes, before the
//     object is complete) stays a call with the arguments emitted so far, which are then not
//     valid JSON (as OpenAI's own calls cut by max_tokens). The body's text from the first byte
//     whose output was still held back (see PythonJsonStream) to the end, with the closing tag if
//     there is one, is content, so no text is lost.
//   * A body ends at the first "</tool_call>", even inside a JSON string (as the whole-text rule:
//     such a call is cut short there).
//   * Text outside tool calls is content, except the whitespace right before a call that starts
//     and right after a well-formed call (the template writes "content\n<tool_call>..." and
//     separates calls by "\n"), which is dropped.
//   * ids are `id_prefix` followed by the call's number in the reply (0, 1, ...); a server passes
//     a prefix unique to the request.
#pragma once

#include <cstddef>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/chat/python_json.hpp"
#include "qwen/chat/python_json_stream.hpp"
#include "qwen/chat/reasoning_parser.hpp"
#include "qwen/core/error.hpp"
#include "qwen/io/json_file.hpp"

namespace qwen::chat {

inline constexpr std::string_view kToolCallOpen = "<tool_call>";
inline constexpr std::string_view kToolCallClose = "</tool_call>";

struct ParsedToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text of an object (not valid JSON when the call was cut short)

  // The OpenAI form: {"id", "type": "function", "function": {"name", "arguments"}}.
  [[nodiscard]] nlohmann::ordered_json to_openai() const {
    return {{"id", id}, {"type", "function"}, {"function", {{"name", name}, {"arguments", arguments}}}};
  }
  friend bool operator==(const ParsedToolCall&, const ParsedToolCall&) = default;
};

// A piece of a tool call: its first piece carries the id and the name, every piece the next
// part of the arguments' text (possibly empty).
struct ToolCallFragment {
  std::size_t index = 0;  // the call's number in the reply
  std::string id;         // first piece only
  std::string name;       // first piece only
  std::string arguments;
  [[nodiscard]] bool starts_call() const noexcept { return !id.empty(); }
  friend bool operator==(const ToolCallFragment&, const ToolCallFragment&) = default;
};

// Adds a fragment to the calls it starts or continues (calls[fragment.index]).
inline void append_fragment(std::vector<ParsedToolCall>& calls, const ToolCallFragment& fragment) {
  if (fragment.index == calls.size()) {
    calls.push_back({fragment.id, fragment.name, fragment.arguments});
    return;
  }
  if (fragment.index > calls.size() || fragment.starts_call())
    throw_error<InvalidArgument>("tool call fragment ", fragment.index, " does not continue the ", calls.size(), " calls so far");
  calls[fragment.index].arguments += fragment.arguments;
}

// Appends a fragment to a list of fragments, merged into the last one when it continues the
// same call (so a list holds at most one piece per call in a row).
inline void merge_fragment(std::vector<ToolCallFragment>& pieces, ToolCallFragment fragment) {
  if (!pieces.empty() && pieces.back().index == fragment.index && !fragment.starts_call()) {
    pieces.back().arguments += fragment.arguments;
    return;
  }
  pieces.push_back(std::move(fragment));
}

struct ToolCallDelta {
  std::string content;
  std::vector<ToolCallFragment> tool_calls;  // merged: at most one piece per call
};

class ToolCallParser {
 public:
  explicit ToolCallParser(std::string id_prefix = "call_") : id_prefix_(std::move(id_prefix)) {}

  // The content and the tool-call fragments that `chunk` settles; text that may still be part
  // of a tag, a call's text whose output is held back, and whitespace that may precede a call
  // are held back.
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

  // The whole-text definition of a well-formed call: the body (the text between the tags) as a
  // call (parse_json_strict, then python_json of the arguments), or false when it is not one.
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

  // The body of the open call, read a byte at a time: the top-level object by hand, each key and
  // value through a PythonJsonStream (the arguments' output kept, the others' dropped).
  class Body {
   public:
    // Feeds one byte; appends to `arguments` what it settles of the arguments' text once the
    // call has started (before, it is buffered).
    void feed(char byte, std::string& arguments) {
      ++fed_;
      if (top_ == Top::key_text) return key_byte(byte);
      if (top_ == Top::value_text && !value_byte(byte, arguments)) return;
      const auto c = static_cast<unsigned char>(byte);
      const bool space = is_json_space(byte);
      switch (top_) {
        case Top::lead:
          if (space) break;
          if (c != '{') return fail();
          top_ = Top::key_or_end;
          break;
        case Top::key_or_end:
        case Top::key:
          if (space) break;
          if (c == '}' && top_ == Top::key_or_end) {
            top_ = Top::after;
            break;
          }
          if (c != '"') return fail();
          stream_ = PythonJsonStream(1);
          top_ = Top::key_text;
          return key_byte(byte);
        case Top::colon:
          if (space) break;
          if (c != ':') return fail();
          top_ = Top::value;
          break;
        case Top::value:
          if (space) break;
          if (field_ == Field::name && c != '"') return fail();
          if (field_ == Field::arguments && c != '{') return fail();
          if (field_ == Field::arguments) arguments_begun_ = true;
          stream_ = PythonJsonStream(1);
          top_ = Top::value_text;
          (void)value_byte(byte, arguments);
          return;
        case Top::comma_or_end:
          if (space) break;
          if (c == ',') top_ = Top::key;
          else if (c == '}') top_ = Top::after;
          else return fail();
          break;
        case Top::after:
          if (!space) return fail();
          break;
        case Top::key_text:
        case Top::value_text:
        case Top::failed: return;
      }
      settled_ = fed_;
    }

    // Whether the call can start (not yet started, its name read, its arguments begun); start()
    // returns the arguments' text buffered until then.
    [[nodiscard]] bool ready() const noexcept { return !started_ && have_name_ && arguments_begun_; }
    [[nodiscard]] std::string start() {
      started_ = true;
      return std::exchange(buffered_, {});
    }
    [[nodiscard]] bool started() const noexcept { return started_; }
    [[nodiscard]] const std::string& name() const noexcept { return name_; }
    // The object is complete and nothing but whitespace followed.
    [[nodiscard]] bool complete() const noexcept { return top_ == Top::after; }
    // How many of the bytes fed, from the first, are settled (their output, if any, given).
    [[nodiscard]] std::size_t settled() const noexcept { return settled_; }

   private:
    enum class Top { lead, key_or_end, key, key_text, colon, value, value_text, comma_or_end, after, failed };
    enum class Field { name, arguments, other };

    void fail() noexcept { top_ = Top::failed; }

    void key_byte(char byte) {
      const PythonJsonStream::Status s = stream_.feed(byte, scratch_);
      scratch_.clear();
      if (s == PythonJsonStream::Status::error) return fail();
      if (s != PythonJsonStream::Status::done) return;  // a key is held until it ends
      const std::string& key = stream_.decoded();
      if (!keys_.insert(key).second) return fail();  // a duplicate key, as parse_json_strict
      field_ = key == "name" ? Field::name : key == "arguments" ? Field::arguments : Field::other;
      top_ = Top::colon;
      settled_ = fed_;
    }

    // A byte of a value; true when the value had ended before it (a number), so the byte is
    // the top level's.
    bool value_byte(char byte, std::string& arguments) {
      std::string& out = field_ == Field::arguments ? (started_ ? arguments : buffered_) : scratch_;
      const PythonJsonStream::Status s = stream_.feed(byte, out);
      scratch_.clear();
      switch (s) {
        case PythonJsonStream::Status::error:
          // The refused byte and those held before it are not settled.
          if (field_ == Field::arguments) settled_ = fed_ - 1 - stream_.held();
          fail();
          return false;
        case PythonJsonStream::Status::more:
          // The arguments settle as their text goes out; a name or an ignored value only whole.
          if (field_ == Field::arguments) settled_ = fed_ - stream_.held();
          return false;
        case PythonJsonStream::Status::done_before: top_ = Top::comma_or_end; return true;
        case PythonJsonStream::Status::done:
          top_ = Top::comma_or_end;
          settled_ = fed_;
          if (field_ == Field::name) {
            name_ = stream_.decoded();
            if (name_.empty()) fail();
            else have_name_ = true;
          }
          return false;
      }
      return false;
    }

    Top top_ = Top::lead;
    PythonJsonStream stream_;  // the key or value being read
    Field field_ = Field::other;
    std::set<std::string> keys_;
    std::string name_;
    bool have_name_ = false, arguments_begun_ = false, started_ = false;
    std::string buffered_;  // the arguments' text before the call starts
    std::string scratch_;   // the output of keys and ignored values
    std::size_t fed_ = 0, settled_ = 0;
  };

  void emit_content(ToolCallDelta& delta, std::string_view text) {
    delta.content += text;
    content_ += text;
  }

  // The next piece of the open call's arguments (`first`: its first piece, with id and name).
  void emit_arguments(ToolCallDelta& delta, std::string_view text, bool first) {
    const std::size_t index = calls_.size() - 1;
    if (!first && text.empty()) return;
    calls_.back().arguments += text;
    ToolCallFragment f{index, {}, {}, std::string(text)};
    if (first) f.id = calls_.back().id, f.name = calls_.back().name;
    merge_fragment(delta.tool_calls, std::move(f));
  }

  // Text outside tool calls: whitespace is held back (it is dropped if a tool call follows) and
  // dropped right after a well-formed tool call.
  void add_text(ToolCallDelta& delta, std::string_view text) {
    for (const char c : text) {
      if (is_json_space(c)) {
        if (!after_call_) pending_space_ += c;
        continue;
      }
      after_call_ = false;
      emit_content(delta, pending_space_);
      pending_space_.clear();
      emit_content(delta, std::string_view(&c, 1));
    }
  }

  // Body bytes of the open call.
  void feed_body(ToolCallDelta& delta, std::string_view bytes) {
    std::string arguments;
    for (const char c : bytes) {
      body_text_ += c;
      body_.feed(c, arguments);
      if (body_.ready()) {
        calls_.push_back({id_prefix_ + std::to_string(calls_.size()), body_.name(), {}});
        space_before_call_.clear();
        emit_arguments(delta, body_.start(), true);
      }
    }
    if (body_.started()) emit_arguments(delta, arguments, false);
  }

  // The end of the open call's body: at its closing tag (`closed`) or at the end of the reply.
  void end_call(ToolCallDelta& delta, bool closed) {
    if (body_.started()) {
      const bool well_formed = closed && body_.complete();
      if (!well_formed) {  // cut short or broken: the text not settled into the call is content
        emit_content(delta, std::string_view(body_text_).substr(body_.settled()));
        if (closed) emit_content(delta, kToolCallClose);
      }
      after_call_ = well_formed;
    } else {
      emit_content(delta, space_before_call_);
      emit_content(delta, kToolCallOpen);
      emit_content(delta, body_text_);
      if (closed) emit_content(delta, kToolCallClose);
      after_call_ = false;
    }
    space_before_call_.clear();
    body_text_.clear();
    body_ = Body();
    state_ = State::Text;
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
      // InCall: the body is read up to the closing tag; bytes that may begin the tag wait.
      const std::size_t close = held_.find(kToolCallClose);
      if (close == std::string::npos) {
        const std::size_t keep = at_end ? 0 : partial_tag_suffix(held_, kToolCallClose);
        feed_body(delta, std::string_view(held_).substr(0, held_.size() - keep));
        held_.erase(0, held_.size() - keep);
        if (at_end) end_call(delta, false);
        return;
      }
      feed_body(delta, std::string_view(held_).substr(0, close));
      held_.erase(0, close + kToolCallClose.size());
      end_call(delta, true);
    }
  }

  std::string id_prefix_;
  State state_ = State::Text;
  std::string held_;               // text not yet settled
  Body body_;                      // the open call's reader
  std::string body_text_;          // the open call's body so far
  std::string pending_space_;      // whitespace after the last content character
  std::string space_before_call_;  // whitespace before the open tool call (content if it never starts)
  bool after_call_ = false;        // right after a well-formed tool call: whitespace is dropped
  std::string content_;
  std::vector<ParsedToolCall> calls_;
};

}  // namespace qwen::chat

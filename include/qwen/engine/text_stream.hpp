// The text side of one choice: generated ids in, text deltas out.
//
//   id ──► StreamDecoder (complete UTF-8 only) ──► StopStrings (hold back a possible partial match;
//          cut at a match) ──► ReasoningParser (chat) ──► ToolCallParser (chat with tools)
//
// StopStrings: the earliest match of any stop string in the text generated so far ends the
// choice. The text before the match is emitted; the match itself only with
// include_stop_str_in_output; nothing after it, ever. While no match is found, the longest tail
// of the text that is a proper prefix of some stop string is held back (it may yet become a
// match when the next token arrives) and everything before it is emitted. Matches are found
// across token boundaries, since the search runs on text, not on tokens. Before min_tokens
// tokens have been generated stop strings are not searched (as in vLLM): text passes unheld.
#pragma once

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qwen/chat/reasoning_parser.hpp"
#include "qwen/chat/tool_call_parser.hpp"
#include "qwen/engine/request.hpp"
#include "qwen/tokenizer/stream_decoder.hpp"
#include "qwen/tokenizer/tokenizer.hpp"

namespace qwen::engine {

class StopStrings {
 public:
  StopStrings() = default;
  StopStrings(std::vector<std::string> stops, bool include_in_output)
      : stops_(std::move(stops)), include_(include_in_output) {}

  struct Result {
    std::string text;                    // settled text to emit
    std::optional<std::string> matched;  // the stop string found (the choice ends)
  };

  // More text. `search` false (before min_tokens): no search, no holdback.
  [[nodiscard]] Result feed(std::string_view delta, bool search = true) {
    Result r;
    if (done_) return r;
    held_ += delta;
    if (stops_.empty() || !search) {
      r.text = std::exchange(held_, {});
      return r;
    }
    std::size_t best = std::string::npos, which = 0;
    for (std::size_t s = 0; s < stops_.size(); ++s) {
      const std::size_t at = held_.find(stops_[s]);
      if (at < best) best = at, which = s;  // the earliest match; at one position the first listed
    }
    if (best != std::string::npos) {
      r.text = held_.substr(0, best);
      if (include_) r.text += stops_[which];
      r.matched = stops_[which];
      held_.clear();
      done_ = true;
      return r;
    }
    std::size_t keep = 0;
    for (const std::string& s : stops_) keep = std::max(keep, chat::partial_tag_suffix(held_, s));
    r.text = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return r;
  }

  // The end of the output without a match: what was held back.
  [[nodiscard]] std::string finish() { return done_ ? std::string() : std::exchange(held_, {}); }

  [[nodiscard]] std::size_t held_bytes() const noexcept { return held_.size(); }

 private:
  std::vector<std::string> stops_;
  bool include_ = false;
  bool done_ = false;
  std::string held_;
};

// Whether and how a choice's text is parsed as a chat reply.
struct ChatParsing {
  bool enabled = false;                       // the prompt was a chat request
  chat::ReasoningStart reasoning_start = chat::ReasoningStart::Detect;
  bool tools = false;                         // the request has tools: parse tool calls out of content
  std::string tool_call_id_prefix = "call_";
};

// One choice's text pipeline (see the top of the file). Deltas are appended to a ChoiceDelta.
class OutputText {
 public:
  OutputText(const tokenizer::Tokenizer& tokenizer, const GenerationParams& params, const ChatParsing& chat)
      : tokenizer_(&tokenizer),
        decoder_(tokenizer, params.skip_special_tokens),
        stops_(params.stop, params.include_stop_str_in_output),
        include_stop_token_(params.include_stop_str_in_output),
        reasoning_(chat.enabled ? std::optional<chat::ReasoningParser>(std::in_place, chat.reasoning_start) : std::nullopt),
        tools_(chat.enabled && chat.tools ? std::optional<chat::ToolCallParser>(std::in_place, chat.tool_call_id_prefix)
                                          : std::nullopt) {}

  // One generated id (an id the tokenizer does not know, such as a padded vocabulary entry,
  // adds no text). `is_stop_token`: the id ends the choice (its text is dropped unless
  // include_stop_str_in_output); `search_stops`: min_tokens reached. Returns the stop string
  // when one matched (the choice then ends; call finish()).
  std::optional<std::string> push(std::int32_t id, bool is_stop_token, bool search_stops, ChoiceDelta& out) {
    if (ended_) return std::nullopt;
    if ((is_stop_token && !include_stop_token_) || !tokenizer_->has_token(id)) return std::nullopt;
    StopStrings::Result r = stops_.feed(decoder_.push(id), search_stops);
    settle(r.text, out);
    if (r.matched) ended_ = true;
    return r.matched;
  }

  // The end: flushes the decoder (unless a stop string ended the text), the stop-string holdback
  // and the parsers into `out`.
  void finish(ChoiceDelta& out) {
    if (!ended_) {
      StopStrings::Result r = stops_.feed(decoder_.finish(), false);
      settle(r.text + stops_.finish(), out);
    }
    ended_ = true;
    if (reasoning_) {
      chat::ReasoningDelta d = reasoning_->finish();
      out.reasoning += d.reasoning;
      to_content(d.content, out);
      if (tools_) {
        chat::ToolCallDelta t = tools_->finish();
        out.content += t.content;
        for (auto& c : t.tool_calls) chat::merge_fragment(out.tool_calls, std::move(c));
      }
    }
  }

  // The whole parse (complete after finish()).
  [[nodiscard]] std::optional<std::string> reasoning_content() const {
    return reasoning_ ? reasoning_->reasoning_content() : std::nullopt;
  }

 private:
  void settle(const std::string& text, ChoiceDelta& out) {
    if (text.empty()) return;
    out.text += text;
    if (!reasoning_) {
      out.content += text;
      return;
    }
    chat::ReasoningDelta d = reasoning_->feed(text);
    out.reasoning += d.reasoning;
    to_content(d.content, out);
  }
  void to_content(const std::string& content, ChoiceDelta& out) {
    if (content.empty()) return;
    if (!tools_) {
      out.content += content;
      return;
    }
    chat::ToolCallDelta t = tools_->feed(content);
    out.content += t.content;
    for (auto& c : t.tool_calls) chat::merge_fragment(out.tool_calls, std::move(c));
  }

  const tokenizer::Tokenizer* tokenizer_;
  tokenizer::StreamDecoder decoder_;
  StopStrings stops_;
  bool include_stop_token_ = false;
  bool ended_ = false;
  std::optional<chat::ReasoningParser> reasoning_;
  std::optional<chat::ToolCallParser> tools_;
};

}  // namespace qwen::engine

// ReasoningParser: splits Qwen3 output, fed as text chunks while it is generated, into
// reasoning_content and content. The result never depends on how the text is cut into chunks.
//
// The rule (docs/chat.md explains it against vLLM's and SGLang's parsers):
//   * Where the output starts is read off the end of the rendered prompt (reasoning_start_for):
//       - the prompt ends with an empty think block "<think>\n\n</think>\n\n" (enable_thinking
//         false): thinking is off and the whole output is content, whatever it contains;
//       - the prompt ends with "<think>\n" (a template that opens the block for the model): the
//         output starts inside the think block; a "<think>" the model writes anyway at the very
//         start is dropped;
//       - otherwise (Qwen3 hybrid, thinking on): the output is a think block only when it
//         starts with "<think>"; without it, everything is content.
//   * Inside the block, everything up to the first "</think>" is reasoning. A block cut off (no
//     "</think>" before the end, e.g. max_tokens) leaves everything reasoning and no content.
//   * Newlines are trimmed as the Qwen3 template trims them when it renders a turn back
//     ("<think>\n" + reasoning.strip('\n') + "\n</think>\n\n" + content.lstrip('\n')): leading
//     and trailing newlines of the reasoning, and the newlines right after "</think>", are
//     dropped. Other whitespace is kept. So rendering a parsed turn gives back the model's text.
//   * reasoning_content is absent when there was no think block or the block held only newlines.
// Chunks are bytes: a delta may end inside a UTF-8 sequence when a chunk does (token text from a
// streaming detokenizer never does).
#pragma once

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace qwen::chat {

inline constexpr std::string_view kThinkOpen = "<think>";
inline constexpr std::string_view kThinkClose = "</think>";

enum class ReasoningStart {
  Detect,       // a think block only when the output starts with "<think>"
  InsideThink,  // the prompt opened the think block: the output starts as reasoning
  ThinkingOff,  // the prompt closed an empty think block: the output is all content
};

// Where the output of a model given `prompt` (the rendered chat prompt) starts.
[[nodiscard]] inline ReasoningStart reasoning_start_for(std::string_view prompt) noexcept {
  if (prompt.ends_with("<think>\n\n</think>\n\n")) return ReasoningStart::ThinkingOff;
  if (prompt.ends_with("<think>\n") || prompt.ends_with("<think>")) return ReasoningStart::InsideThink;
  return ReasoningStart::Detect;
}

// Length of the longest suffix of `text` that is a proper prefix of `tag` (text that may yet
// become the tag when the next chunk arrives).
[[nodiscard]] inline std::size_t partial_tag_suffix(std::string_view text, std::string_view tag) noexcept {
  for (std::size_t n = std::min(text.size(), tag.size() - 1); n > 0; --n)
    if (tag.starts_with(text.substr(text.size() - n))) return n;
  return 0;
}

struct ReasoningDelta {
  std::string reasoning;
  std::string content;
};

class ReasoningParser {
 public:
  explicit ReasoningParser(ReasoningStart start) : start_(start) {
    state_ = start == ReasoningStart::ThinkingOff ? State::Content : State::Opening;
  }

  // The reasoning and content that `chunk` completes. Text that may still turn out to be part of
  // a tag, or newlines that may turn out to be trailing, are held back until a later call.
  [[nodiscard]] ReasoningDelta feed(std::string_view chunk) {
    ReasoningDelta delta;
    held_ += chunk;
    run(delta, false);
    return delta;
  }

  // The end of the output: everything held back is settled.
  [[nodiscard]] ReasoningDelta finish() {
    ReasoningDelta delta;
    run(delta, true);
    return delta;
  }

  // Everything parsed so far (complete after finish()).
  [[nodiscard]] std::optional<std::string> reasoning_content() const {
    return reasoning_.empty() ? std::nullopt : std::optional<std::string>(reasoning_);
  }
  [[nodiscard]] const std::string& content() const noexcept { return content_; }

 private:
  enum class State { Opening, Reasoning, AfterClose, Content };

  void run(ReasoningDelta& delta, bool at_end) {
    for (;;) {
      switch (state_) {
        case State::Opening:
          if (held_.starts_with(kThinkOpen)) {
            held_.erase(0, kThinkOpen.size());
            state_ = State::Reasoning;
          } else if (!at_end && held_.size() < kThinkOpen.size() && kThinkOpen.starts_with(held_)) {
            return;  // may still become "<think>"
          } else {
            state_ = start_ == ReasoningStart::InsideThink ? State::Reasoning : State::Content;
          }
          break;
        case State::Reasoning: {
          if (const std::size_t close = held_.find(kThinkClose); close != std::string::npos) {
            add_reasoning(delta, std::string_view(held_).substr(0, close));
            pending_newlines_ = 0;  // trailing newlines of the reasoning
            held_.erase(0, close + kThinkClose.size());
            state_ = State::AfterClose;
            break;
          }
          const std::size_t keep = at_end ? 0 : partial_tag_suffix(held_, kThinkClose);
          add_reasoning(delta, std::string_view(held_).substr(0, held_.size() - keep));
          held_.erase(0, held_.size() - keep);
          return;
        }
        case State::AfterClose: {
          const std::size_t text = held_.find_first_not_of('\n');
          if (text == std::string::npos) {
            held_.clear();
            return;
          }
          held_.erase(0, text);
          state_ = State::Content;
          break;
        }
        case State::Content:
          delta.content += held_;
          content_ += held_;
          held_.clear();
          return;
      }
    }
  }

  // Reasoning text, with leading newlines dropped and trailing ones held back.
  void add_reasoning(ReasoningDelta& delta, std::string_view text) {
    for (const char c : text) {
      if (c == '\n') {
        if (!reasoning_.empty()) ++pending_newlines_;
        continue;
      }
      delta.reasoning.append(pending_newlines_, '\n');
      reasoning_.append(pending_newlines_, '\n');
      pending_newlines_ = 0;
      delta.reasoning += c;
      reasoning_ += c;
    }
  }

  ReasoningStart start_;
  State state_;
  std::string held_;  // text not yet classified
  std::size_t pending_newlines_ = 0;
  std::string reasoning_;
  std::string content_;
};

}  // namespace qwen::chat

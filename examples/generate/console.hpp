// qwen-generate's console: the streamed answer of the single-prompt forms, and the progress bar
// of --input runs.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <qwen/chat/tool_call_parser.hpp>
#include <qwen/engine/request.hpp>

namespace generate {

inline bool is_terminal(int fd) { return ::isatty(fd) == 1; }

inline void write_out(std::FILE* f, const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), f);
  std::fflush(f);
}

// Prints the deltas of one request's choices as they arrive: content (the whole text for a
// completion) on stdout, reasoning on stderr (dim under a "thinking:" header when stderr is a
// terminal, plain otherwise), each tool call as one JSON line on stdout when its choice ends.
// With n > 1 the choices are printed one after another, each under a "--- choice I ---" line on
// stdout: the first streams, the others are held until the ones before them have ended.
// stdout gets exactly the text, except that a newline ends it when stdout is a terminal, and
// before tool-call lines and choice headers when the text does not end with one.
class StreamPrinter {
 public:
  StreamPrinter(int n, bool stdout_terminal, bool stderr_terminal)
      : held_(static_cast<std::size_t>(n)), stdout_terminal_(stdout_terminal), stderr_terminal_(stderr_terminal) {
    if (held_.size() > 1) header(0);
  }

  void add(const qwen::engine::ChoiceDelta& d) {
    Held& h = held_.at(static_cast<std::size_t>(d.index));
    if (!d.reasoning.empty()) h.pieces.emplace_back(true, d.reasoning);
    if (!d.content.empty()) h.pieces.emplace_back(false, d.content);
    for (const auto& piece : d.tool_calls) qwen::chat::append_fragment(h.calls, piece);
    h.finished = h.finished || d.finish_reason.has_value();
    while (current_ < held_.size()) {
      Held& cur = held_[current_];
      for (auto& [reasoning, text] : cur.pieces) show(reasoning, text);
      cur.pieces.clear();
      if (!cur.finished) break;
      end_choice(cur.calls);
      if (++current_ < held_.size()) header(current_);
    }
  }

 private:
  struct Held {
    std::vector<std::pair<bool, std::string>> pieces;  // (reasoning?, text) not yet printed
    std::vector<qwen::chat::ParsedToolCall> calls;
    bool finished = false;
  };

  void show(bool reasoning, const std::string& text) {
    if (reasoning) {
      if (!in_reasoning_ && stderr_terminal_) write_out(stderr, "\033[2mthinking:\n");
      in_reasoning_ = true;
      write_out(stderr, text);
      reasoning_newline_ = text.back() == '\n';
      return;
    }
    close_reasoning();
    write_out(stdout, text);
    stdout_newline_ = text.back() == '\n';
  }

  void close_reasoning() {
    if (!in_reasoning_) return;
    in_reasoning_ = false;
    if (stderr_terminal_) write_out(stderr, reasoning_newline_ ? "\033[0m" : "\033[0m\n");
  }

  void end_line() {
    if (!stdout_newline_) write_out(stdout, "\n");
    stdout_newline_ = true;
  }

  void end_choice(const std::vector<qwen::chat::ParsedToolCall>& calls) {
    close_reasoning();
    if (!calls.empty()) end_line();
    for (const auto& call : calls) write_out(stdout, call.to_openai().dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n");
    if (stdout_terminal_ || held_.size() > 1) end_line();
  }

  void header(std::size_t index) {
    end_line();
    write_out(stdout, "--- choice " + std::to_string(index) + " ---\n");
  }

  std::vector<Held> held_;
  std::size_t current_ = 0;
  bool stdout_terminal_, stderr_terminal_;
  bool in_reasoning_ = false;
  bool reasoning_newline_ = true;
  bool stdout_newline_ = true;  // nothing printed yet counts as a line start
};

// The progress of an --input run on stderr, redrawn at most ten times a second, only when
// stderr is a terminal:
//   [#########...........] 12/40 requests | 345.6 tok/s | ETA <= 0:12
// The ETA is an upper bound: the tokens the unfinished requests may still generate (n x
// max_tokens each, less what they have) at the rate so far.
class Progress {
 public:
  using clock = std::chrono::steady_clock;

  Progress(bool enabled, std::size_t total) : enabled_(enabled), total_(total), start_(clock::now()) {}

  void update(std::size_t done, std::int64_t generated, std::int64_t budget_left, bool force = false) {
    if (!enabled_) return;
    const auto now = clock::now();
    if (!force && shown_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    shown_ = true;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double rate = seconds > 0 ? static_cast<double>(generated) / seconds : 0;
    constexpr std::size_t width = 20;
    const std::size_t filled = total_ ? done * width / total_ : width;
    std::string bar = "\r\033[K[" + std::string(filled, '#') + std::string(width - filled, '.') + "] " + std::to_string(done) + "/" +
                      std::to_string(total_) + " requests | ";
    char buffer[96];
    std::snprintf(buffer, sizeof buffer, "%.1f tok/s | ETA ", rate);
    bar += buffer;
    if (rate > 0) {
      const auto eta = static_cast<long long>(static_cast<double>(budget_left) / rate + 0.5);
      std::snprintf(buffer, sizeof buffer, "<= %lld:%02lld", eta / 60, eta % 60);
      bar += buffer;
    } else {
      bar += "?";
    }
    write_out(stderr, bar);
  }

  // Erases the bar (before other output on the terminal; the next update draws it again).
  void clear() {
    if (!enabled_ || !shown_) return;
    write_out(stderr, "\r\033[K");
    shown_ = false;
  }

  [[nodiscard]] double seconds() const { return std::chrono::duration<double>(clock::now() - start_).count(); }

 private:
  bool enabled_;
  std::size_t total_;
  clock::time_point start_, last_;
  bool shown_ = false;
};

}  // namespace generate

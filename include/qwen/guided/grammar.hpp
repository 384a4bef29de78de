// What guided decoding lets a request generate: a grammar of a few segments in a row, matched byte
// by byte against the output. Built for the two things the OpenAI API asks of it:
//   - response_format {"type": "json_object"}: the content is one JSON object;
//   - a forced tool call (tool_choice naming a function, or "required"): exactly one call in
//     Qwen3's format, <tool_call>\n{"name": "NAME", "arguments": {...}}\n</tool_call>, whose
//     name is the named function or one of the request's tools, and whose arguments are a JSON
//     object.
// A thinking model first thinks freely: the segments are preceded by its think block (optional
// when the prompt leaves it to the model, see chat::reasoning_start_for), and the grammar takes
// over after "</think>". Generation ends (finish reason stop) the moment the last segment is
// complete.
//
// Segments:
//   literal      exactly these bytes
//   choice       one of these byte strings (none a prefix of another)
//   whitespace   up to max_whitespace_run of ' ', '\t', '\n', '\r', then the next segment
//   json         a JSON object (json_automaton.hpp), or one valid under a schema (json_schema.hpp;
//                several schemas: the one of the alternative the choice segment before it took)
//   until        any bytes, up to and including the first occurrence of the text
//   maybe        the text (then the next segment), or, from the first byte that departs from
//                it, skip the next segment: the bytes read so far go to the one after it
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/core/error.hpp"
#include "qwen/guided/json_automaton.hpp"
#include "qwen/guided/json_schema.hpp"

namespace qwen::guided {

struct Segment {
  enum class Kind : std::uint8_t { literal, choice, whitespace, json, until, maybe };
  Kind kind = Kind::literal;
  std::vector<std::string> texts;  // literal, until, maybe: one; choice: the alternatives
  // json: none (any object), one, or one per alternative of the choice just before (null: any object)
  std::vector<std::shared_ptr<const JsonSchema>> schemas;
};

// Where a request's output starts, as far as the grammar cares (chat::ReasoningStart).
enum class ThinkBlock : std::uint8_t {
  none,      // thinking off, or not a chat: the grammar starts at the first byte
  inside,    // the prompt opened the block: free text up to "</think>" first
  optional,  // the model may open a block with "<think>" first
};

class Grammar {
 public:
  Grammar() = default;
  explicit Grammar(std::vector<Segment> segments) : segments_(std::move(segments)) {
    for (std::size_t i = 0; i < segments_.size(); ++i) check(i);
  }
  [[nodiscard]] const std::vector<Segment>& segments() const noexcept { return segments_; }
  [[nodiscard]] std::size_t size() const noexcept { return segments_.size(); }
  [[nodiscard]] const Segment& operator[](std::size_t i) const noexcept { return segments_[i]; }

 private:
  void check(std::size_t i) const {
    const Segment& s = segments_[i];
    const auto bad = [&](const char* problem) { throw_error<InvalidArgument>("guided decoding: segment ", i, " ", problem); };
    switch (s.kind) {
      case Segment::Kind::literal:
      case Segment::Kind::until:
      case Segment::Kind::maybe:
        if (s.texts.size() != 1 || s.texts[0].empty()) bad("needs exactly one non-empty text");
        if (s.kind == Segment::Kind::maybe && i + 2 >= segments_.size()) bad("(maybe) needs two segments after it");
        break;
      case Segment::Kind::choice:
        if (s.texts.empty()) bad("(choice) has no alternative");
        for (std::size_t a = 0; a < s.texts.size(); ++a) {
          if (s.texts[a].empty()) bad("(choice) has an empty alternative");
          for (std::size_t b = 0; b < s.texts.size(); ++b)
            if (a != b && s.texts[b].starts_with(s.texts[a]))
              throw_error<InvalidArgument>("guided decoding: segment ", i, " (choice): alternative \"", s.texts[a],
                                           "\" is a prefix of \"", s.texts[b], "\"");
        }
        break;
      case Segment::Kind::whitespace:
      case Segment::Kind::json:
        if (!s.texts.empty()) bad("takes no text");
        if (s.schemas.size() > 1 &&
            (i == 0 || segments_[i - 1].kind != Segment::Kind::choice || segments_[i - 1].texts.size() != s.schemas.size()))
          bad("(json) has a schema per alternative but no choice of as many alternatives before it");
        if (s.kind == Segment::Kind::whitespace && !s.schemas.empty()) bad("(whitespace) takes no schema");
        break;
    }
  }
  std::vector<Segment> segments_;
};

// Progress through a grammar. Small and copied freely (the token mask steps copies).
struct GuideState {
  std::uint32_t segment = 0;  // == grammar.size(): complete
  std::uint32_t pos = 0;      // bytes of the segment's text matched (whitespace: bytes read)
  std::uint32_t alternative = 0;  // choice: the first alternative that agrees with the bytes so far
  std::uint32_t chosen = 0;       // the alternative the last complete choice took
  JsonState json;                 // json without a schema
  SchemaState schema;             // json with one
};

// The schema a json segment follows from this state (null: any object).
[[nodiscard]] inline const JsonSchema* schema_of(const Segment& segment, const GuideState& s) noexcept {
  if (segment.schemas.empty()) return nullptr;
  return segment.schemas.size() == 1 ? segment.schemas[0].get() : segment.schemas[s.chosen].get();
}

namespace grammar_detail {

inline void enter(const Grammar& g, GuideState& s, std::uint32_t segment) noexcept {
  s.segment = segment;
  s.pos = 0;
  s.alternative = 0;
  if (segment < g.size() && g[segment].kind == Segment::Kind::json) {
    if (const JsonSchema* schema = schema_of(g[segment], s)) s.schema = schema_start(*schema);
    else s.json = json_start(true);
  }
}

// Length of the longest prefix of `text` that ends the bytes text[0, matched) + b.
[[nodiscard]] inline std::uint32_t until_progress(std::string_view text, std::uint32_t matched, std::uint8_t b) noexcept {
  for (std::uint32_t n = matched + 1; n > 0; --n) {
    // candidate: text[0, n) must equal the last n bytes of text[0, matched) + b
    if (static_cast<std::uint8_t>(text[n - 1]) != b) continue;
    if (text.substr(0, n - 1) == text.substr(matched - (n - 1), n - 1)) return n;
  }
  return 0;
}

}  // namespace grammar_detail

[[nodiscard]] inline GuideState guide_start(const Grammar& g) noexcept {
  GuideState s;
  grammar_detail::enter(g, s, 0);
  return s;
}

[[nodiscard]] inline bool guide_complete(const Grammar& g, const GuideState& s) noexcept { return s.segment >= g.size(); }

// Consumes one byte; false: no output of the grammar starts with the bytes so far plus this one
// (the state is then unspecified: callers step a copy).
[[nodiscard]] inline bool guide_step(const Grammar& g, GuideState& s, std::uint8_t b) noexcept {
  using grammar_detail::enter;
  while (s.segment < g.size()) {
    const Segment& seg = g[s.segment];
    switch (seg.kind) {
      case Segment::Kind::literal: {
        const std::string& text = seg.texts[0];
        if (static_cast<std::uint8_t>(text[s.pos]) != b) return false;
        if (++s.pos == text.size()) enter(g, s, s.segment + 1);
        return true;
      }
      case Segment::Kind::choice: {
        const auto text_of = [&](std::uint32_t a) -> const std::string& { return seg.texts[a]; };
        const auto count = static_cast<std::uint32_t>(seg.texts.size());
        if (!match_alternative(text_of, std::uint32_t{0}, count, s.alternative, s.pos, b)) return false;
        if (++s.pos == seg.texts[s.alternative].size()) {
          s.chosen = s.alternative;
          enter(g, s, s.segment + 1);
        }
        return true;
      }
      case Segment::Kind::whitespace:
        if ((b == ' ' || b == '\t' || b == '\n' || b == '\r') && s.pos < max_whitespace_run) {
          ++s.pos;
          return true;
        }
        enter(g, s, s.segment + 1);
        continue;  // the byte belongs to the next segment
      case Segment::Kind::json:
        if (const JsonSchema* schema = schema_of(seg, s)) {
          if (!schema_step(*schema, s.schema, b)) return false;
          if (schema_complete(s.schema)) enter(g, s, s.segment + 1);
          return true;
        }
        if (!json_step(s.json, b)) return false;
        if (json_complete(s.json)) enter(g, s, s.segment + 1);
        return true;
      case Segment::Kind::until:
        s.pos = grammar_detail::until_progress(seg.texts[0], s.pos, b);
        if (s.pos == seg.texts[0].size()) enter(g, s, s.segment + 1);
        return true;
      case Segment::Kind::maybe: {
        const std::string& text = seg.texts[0];
        if (static_cast<std::uint8_t>(text[s.pos]) == b) {
          if (++s.pos == text.size()) enter(g, s, s.segment + 1);
          return true;
        }
        // Not the text after all: what was read, then this byte, go to the segment after next.
        const std::uint32_t read = s.pos;
        enter(g, s, s.segment + 2);
        for (std::uint32_t i = 0; i < read; ++i)
          if (!guide_step(g, s, static_cast<std::uint8_t>(text[i]))) return false;
        continue;
      }
    }
  }
  return false;  // complete: nothing may follow
}

// Inside a JSON string with nothing pending, where any whole UTF-8 characters other than '"', '\'
// and controls are accepted and leave the state as it is (token_mask's shortcut).
[[nodiscard]] inline bool guide_in_plain_string(const Grammar& g, const GuideState& s) noexcept {
  if (s.segment >= g.size() || g[s.segment].kind != Segment::Kind::json) return false;
  return schema_of(g[s.segment], s) ? schema_in_plain_string(s.schema) : json_in_plain_string(s.json);
}

[[nodiscard]] inline bool guide_step(const Grammar& g, GuideState& s, std::string_view bytes) noexcept {
  for (const char c : bytes)
    if (!guide_step(g, s, static_cast<std::uint8_t>(c))) return false;
  return true;
}

// ---- the grammars of the OpenAI API ----

namespace grammar_detail {
inline void think_segments(std::vector<Segment>& out, ThinkBlock think) {
  if (think == ThinkBlock::optional) out.push_back({Segment::Kind::maybe, {"<think>"}, {}});
  if (think != ThinkBlock::none) out.push_back({Segment::Kind::until, {"</think>"}, {}});
}
}  // namespace grammar_detail

// The output (after any think block) is one JSON object, valid under `schema` when given.
[[nodiscard]] inline Grammar json_object_grammar(ThinkBlock think, std::shared_ptr<const JsonSchema> schema = nullptr) {
  std::vector<Segment> s;
  grammar_detail::think_segments(s, think);
  Segment json{Segment::Kind::json, {}, {}};
  if (schema) json.schemas.push_back(std::move(schema));
  s.push_back(std::move(json));
  return Grammar(std::move(s));
}

// The output (after any think block) is one tool call to one of `names`, in Qwen3's format.
// schemas: empty, or one per name (null: any object), which that function's arguments follow.
[[nodiscard]] inline Grammar tool_call_grammar(const std::vector<std::string>& names, ThinkBlock think,
                                               const std::vector<std::shared_ptr<const JsonSchema>>& schemas = {}) {
  if (names.empty()) throw_error<InvalidArgument>("guided decoding: a forced tool call needs at least one function name");
  if (!schemas.empty() && schemas.size() != names.size())
    throw_error<InvalidArgument>("guided decoding: ", schemas.size(), " argument schemas for ", names.size(), " functions");
  std::vector<std::shared_ptr<const JsonSchema>> kept_schemas;
  std::vector<Segment> s;
  grammar_detail::think_segments(s, think);
  s.push_back({Segment::Kind::whitespace, {}, {}});
  std::vector<std::string> alternatives;
  for (const std::string& name : names) {
    if (name.empty()) throw_error<InvalidArgument>("guided decoding: a function name is empty");
    // The name as a JSON string without its opening quote: the closing quote ends each
    // alternative, so no escaped name is a prefix of another.
    std::string alternative = nlohmann::json(name).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).substr(1) +
                              ", \"arguments\": ";
    bool repeated = false;
    for (const std::string& a : alternatives) repeated = repeated || a == alternative;
    if (repeated) continue;
    alternatives.push_back(std::move(alternative));
    if (!schemas.empty()) kept_schemas.push_back(schemas[static_cast<std::size_t>(&name - names.data())]);
  }
  const bool any_schema = std::any_of(kept_schemas.begin(), kept_schemas.end(), [](const auto& p) { return p != nullptr; });
  s.push_back({Segment::Kind::literal, {"<tool_call>\n{\"name\": \""}, {}});
  if (alternatives.size() == 1) s.push_back({Segment::Kind::literal, {std::move(alternatives[0])}, {}});
  else s.push_back({Segment::Kind::choice, std::move(alternatives), {}});
  Segment arguments{Segment::Kind::json, {}, {}};
  if (any_schema) arguments.schemas = std::move(kept_schemas);
  s.push_back(std::move(arguments));
  s.push_back({Segment::Kind::literal, {"}\n</tool_call>"}, {}});
  return Grammar(std::move(s));
}

}  // namespace qwen::guided

// One choice's text pipeline (include/qwen/engine/text_stream.hpp) with the real Qwen3 tokenizer:
// stop strings found across token boundaries, included or excluded, nothing after them ever
// emitted, only a possible partial match held back; chat splitting equal to the parsers on the
// whole text.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include <qwen/engine/text_stream.hpp>

using namespace qwen;
using namespace qwen::engine;

namespace {

const tokenizer::Tokenizer& qwen3() {
  static const tokenizer::Tokenizer t = tokenizer::Tokenizer::from_file(QWEN_SHARED_DIR "/models/qwen3-tokenizer/tokenizer.json");
  return t;
}

const std::vector<std::string> kTexts = {
    "The answer is 42. END of story, and nothing after it.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # five\n",
    "北京是中国的首都，上海是最大的城市。STOP 然后呢？",
    "Emoji 🎉🎉 party 👩‍👩‍👧 family; tabs\tand   spaces\n\n\nnewlines",
    "<think>\nLet me add 47 and 38: 85.\n</think>\n\n47 + 38 = 85.",
    "I'll check. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lisbon\"}}\n</tool_call>",
};

struct Streamed {
  std::string text;
  std::vector<std::string> deltas;
  std::optional<std::string> matched;
};

// Feeds the ids one by one; checks at every step that what was emitted is a prefix of `full`
// that holds back at most (longest stop - 1) bytes of the decoded text.
Streamed stream(const std::vector<std::int32_t>& ids, const GenerationParams& params, const ChatParsing& chat = {}) {
  OutputText out(qwen3(), params, chat);
  Streamed s;
  std::size_t longest = 0;
  for (const auto& stop : params.stop) longest = std::max(longest, stop.size());
  std::vector<std::int32_t> so_far;
  for (const std::int32_t id : ids) {
    ChoiceDelta d;
    so_far.push_back(id);
    s.matched = out.push(id, false, true, d);
    s.text += d.text;
    s.deltas.push_back(d.text);
    if (s.matched) break;
    // Only a possible partial match (and an incomplete character) is held back.
    const std::string decoded = qwen3().decode(so_far, true);
    REQUIRE(decoded.starts_with(s.text));
    REQUIRE(decoded.size() - s.text.size() <= std::max<std::size_t>(longest, 4) - 1 + 3);
  }
  ChoiceDelta d;
  out.finish(d);
  s.text += d.text;
  return s;
}

}  // namespace

TEST_CASE("text stream: stop strings across token boundaries, excluded and included", "[engine][text]") {
  std::mt19937 rng(1);
  int across = 0;
  for (const std::string& text : kTexts) {
    const auto ids = qwen3().encode(text);
    // Token boundaries in the text.
    std::vector<std::size_t> bounds{0};
    for (std::size_t i = 1; i <= ids.size(); ++i)
      bounds.push_back(qwen3().decode(std::span(ids).first(i), true).size());
    for (int trial = 0; trial < 40; ++trial) {
      // A stop string: a random substring of the text (at UTF-8 character boundaries).
      std::size_t a = rng() % text.size(), len = 1 + rng() % 8;
      while (a > 0 && (static_cast<unsigned char>(text[a]) & 0xC0) == 0x80) --a;
      std::size_t b = std::min(text.size(), a + len);
      while (b < text.size() && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) ++b;
      const std::string stop = text.substr(a, b - a);
      const std::size_t first = text.find(stop);
      const bool crosses = std::none_of(bounds.begin(), bounds.end(), [&](std::size_t x) { return x > first && x < first + stop.size(); }) == false;
      across += crosses;
      for (const bool include : {false, true}) {
        INFO("text '" << text << "' stop '" << stop << "' include " << include);
        GenerationParams p;
        p.stop = {"never-in-text", stop};
        p.include_stop_str_in_output = include;
        const Streamed s = stream(ids, p);
        REQUIRE(s.matched == stop);
        REQUIRE(s.text == text.substr(0, first + (include ? stop.size() : 0)));
      }
    }
    // No stop string in the text: everything comes out, held-back parts at the end.
    GenerationParams none;
    none.stop = {"zzzz-not-here", std::string(text.begin(), text.begin() + 1) + "\x01"};
    REQUIRE(stream(ids, none).text == text);
  }
  CHECK(across > 50);  // most stops straddle token boundaries
}

TEST_CASE("text stream: of two stop strings the earliest match wins", "[engine][text]") {
  const auto ids = qwen3().encode("one two three four");
  GenerationParams p;
  p.stop = {"four", "two", "three"};
  const Streamed s = stream(ids, p);
  CHECK(s.matched == "two");
  CHECK(s.text == "one ");
}

TEST_CASE("text stream: a stop token's text is left out unless asked for; skip_special_tokens", "[engine][text]") {
  const std::int32_t im_end = *qwen3().token_to_id("<|im_end|>");
  auto ids = qwen3().encode("Hello there");
  GenerationParams p;
  p.skip_special_tokens = false;
  for (const bool include : {false, true}) {
    p.include_stop_str_in_output = include;
    OutputText out(qwen3(), p, {});
    ChoiceDelta d;
    for (const auto id : ids) (void)out.push(id, false, true, d);
    (void)out.push(im_end, true, true, d);
    out.finish(d);
    CHECK(d.text == (include ? "Hello there<|im_end|>" : "Hello there"));
  }
  GenerationParams skip;  // skip_special_tokens defaults to true
  skip.include_stop_str_in_output = true;
  OutputText out(qwen3(), skip, {});
  ChoiceDelta d;
  for (const auto id : ids) (void)out.push(id, false, true, d);
  (void)out.push(im_end, true, true, d);
  out.finish(d);
  CHECK(d.text == "Hello there");
}

TEST_CASE("text stream: before min_tokens stop strings are not searched", "[engine][text]") {
  const auto ids = qwen3().encode("stop here, stop there");
  GenerationParams p;
  p.stop = {"stop"};
  OutputText out(qwen3(), p, {});
  ChoiceDelta d;
  std::optional<std::string> matched;
  for (std::size_t i = 0; i < ids.size() && !matched; ++i) matched = out.push(ids[i], false, /*search=*/i >= 2, d);
  out.finish(d);
  CHECK(matched == "stop");
  CHECK(d.text == "stop here, ");
}

TEST_CASE("text stream: chat splitting through the pipeline equals the parsers on the whole text", "[engine][text]") {
  for (const auto start : {chat::ReasoningStart::Detect, chat::ReasoningStart::InsideThink, chat::ReasoningStart::ThinkingOff}) {
    for (const bool tools : {false, true}) {
      const std::string text = std::string(start == chat::ReasoningStart::InsideThink ? "" : "<think>\n") +
                               "Weather? Use the tool.\n</think>\n\nSure. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                               "{\"city\": \"Lisbon\"}}\n</tool_call>";
      const auto ids = qwen3().encode(text);
      ChatParsing chat{true, start, tools, "call_x_"};
      GenerationParams p;
      OutputText out(qwen3(), p, chat);
      ChoiceDelta d;
      for (const auto id : ids) (void)out.push(id, false, true, d);
      out.finish(d);
      chat::ReasoningParser reasoning(start);
      (void)reasoning.feed(text);
      (void)reasoning.finish();
      CHECK(d.text == text);
      CHECK(d.reasoning == reasoning.reasoning_content().value_or(""));
      CHECK(out.reasoning_content() == reasoning.reasoning_content());
      if (tools) {
        chat::ToolCallParser parser("call_x_");
        (void)parser.feed(reasoning.content());
        (void)parser.finish();
        CHECK(d.content == parser.content());
        std::vector<chat::ParsedToolCall> calls;
        for (const auto& piece : d.tool_calls) chat::append_fragment(calls, piece);
        CHECK(calls == parser.tool_calls());
        if (start != chat::ReasoningStart::ThinkingOff) CHECK(calls.size() == 1);
      } else {
        CHECK(d.content == reasoning.content());
        CHECK(d.tool_calls.empty());
      }
      if (start == chat::ReasoningStart::ThinkingOff) CHECK(d.reasoning.empty());
      else CHECK(d.reasoning == "Weather? Use the tool.");
    }
  }
}

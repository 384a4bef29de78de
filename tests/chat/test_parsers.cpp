// The reasoning parser and the tool-call parser: expected results written by hand from the rules
// in their headers; every text is also fed cut at every split point and byte by byte, and must
// give the same result as when fed whole.
#include <algorithm>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "qwen/chat/chat_template.hpp"
#include "qwen/chat/reasoning_parser.hpp"
#include "qwen/chat/tool_call_parser.hpp"
#include "../sanitized.hpp"

using namespace qwen::chat;

namespace {

// The text cut into pieces at `cuts` (ascending offsets).
std::vector<std::string> split_at(const std::string& text, const std::vector<std::size_t>& cuts) {
  std::vector<std::string> pieces;
  std::size_t from = 0;
  for (const std::size_t cut : cuts) {
    pieces.push_back(text.substr(from, cut - from));
    from = cut;
  }
  pieces.push_back(text.substr(from));
  return pieces;
}

// Every way of feeding `text` the tests try: whole, cut once at each offset, byte by byte.
std::vector<std::vector<std::string>> chunkings(const std::string& text) {
  std::vector<std::vector<std::string>> all{{text}};
  for (std::size_t i = 0; i <= text.size(); ++i) all.push_back(split_at(text, {i}));
  std::vector<std::size_t> every;
  for (std::size_t i = 1; i < text.size(); ++i) every.push_back(i);
  all.push_back(split_at(text, every));
  return all;
}

std::string describe(const std::vector<std::string>& pieces) {
  std::string d;
  for (const auto& p : pieces) d += "[" + p + "]";
  return d;
}

struct ReasoningCase {
  ReasoningStart start;
  std::string text;
  std::optional<std::string> reasoning;
  std::string content;
};

struct ToolCase {
  std::string text;
  std::string content;
  std::vector<ParsedToolCall> calls;
};

ParsedToolCall call(std::string id, std::string name, std::string arguments) { return {std::move(id), std::move(name), std::move(arguments)}; }

}  // namespace

TEST_CASE("reasoning: every split point gives the documented split") {
  using enum ReasoningStart;
  const ReasoningCase cases[] = {
      {Detect, "<think>\nLet me think.\n</think>\n\nThe answer is 4.", "Let me think.", "The answer is 4."},
      {Detect, "The answer is 4.", std::nullopt, "The answer is 4."},
      {Detect, "<think>\nCut off by max_tok", "Cut off by max_tok", ""},
      {Detect, "<think>\nCut off with newlines\n\n", "Cut off with newlines", ""},
      {Detect, "<think>a</th", "a</th", ""},
      {Detect, "<think>\n\n</think>\n\nHi", std::nullopt, "Hi"},
      {Detect, "<think></think>", std::nullopt, ""},
      {Detect, "<thin", std::nullopt, "<thin"},
      {Detect, "", std::nullopt, ""},
      {Detect, " <think>x</think>y", std::nullopt, " <think>x</think>y"},
      {Detect, "\n<think>x</think>y", std::nullopt, "\n<think>x</think>y"},
      {Detect, "<think>\nline1\n\nline2\n</think>\n\n  indented\n\ncontent\n</think>more\n",
       "line1\n\nline2", "  indented\n\ncontent\n</think>more\n"},
      {Detect, "<think> spaces kept \n</think> \nx", " spaces kept ", " \nx"},
      {Detect, "<think>\n思考 😀\n</think>\n\n答案", "思考 😀", "答案"},
      {Detect, "<think>\n<think> inner </thin k>\n</think>\n\nok", "<think> inner </thin k>", "ok"},
      {InsideThink, "reasoning here\n</think>\n\nanswer", "reasoning here", "answer"},
      {InsideThink, "<think>\nr\n</think>\n\nc", "r", "c"},
      {InsideThink, "no close, cut\n\n", "no close, cut", ""},
      {InsideThink, "<thin", "<thin", ""},
      {InsideThink, "</think>\n\nonly content", std::nullopt, "only content"},
      {ThinkingOff, "<think>\nfake\n</think>\n\nanswer", std::nullopt, "<think>\nfake\n</think>\n\nanswer"},
      {ThinkingOff, "plain answer\n", std::nullopt, "plain answer\n"},
      {ThinkingOff, "</think>", std::nullopt, "</think>"},
  };
  for (const ReasoningCase& c : cases) {
    for (const auto& pieces : chunkings(c.text)) {
      INFO("start " << static_cast<int>(c.start) << ", chunks " << describe(pieces));
      ReasoningParser parser(c.start);
      std::string reasoning, content;
      for (const std::string& piece : pieces) {
        const ReasoningDelta d = parser.feed(piece);
        reasoning += d.reasoning;
        content += d.content;
      }
      const ReasoningDelta d = parser.finish();
      reasoning += d.reasoning;
      content += d.content;
      CHECK(parser.reasoning_content() == c.reasoning);
      CHECK(parser.content() == c.content);
      CHECK(reasoning == c.reasoning.value_or(""));  // the deltas add up to the result
      CHECK(content == c.content);
      if (c.start == ThinkingOff) CHECK(reasoning.empty());
    }
  }
}

TEST_CASE("reasoning: the start is read off the rendered prompt and thinking off never gives reasoning") {
  const ChatTemplate qwen3 = ChatTemplate::variant("qwen3");
  const auto prompt = [&](const char* kwargs) {
    return qwen3.render(parse_chat_request(nlohmann::ordered_json::parse(
        std::string(R"({"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": )") + kwargs + "}")));
  };
  CHECK(reasoning_start_for(prompt("{}")) == ReasoningStart::Detect);
  CHECK(reasoning_start_for(prompt(R"({"enable_thinking": true})")) == ReasoningStart::Detect);
  CHECK(reasoning_start_for(prompt(R"({"enable_thinking": false})")) == ReasoningStart::ThinkingOff);
  CHECK(reasoning_start_for("<|im_start|>assistant\n<think>\n") == ReasoningStart::InsideThink);

  // Whatever a model writes after a thinking-off prompt, and however it is cut, it is content.
  const std::string outputs[] = {"<think>\nx\n</think>\n\ny", "</think>", "<think>", "a</think>b", "\n\n<think></think>"};
  for (const std::string& out : outputs) {
    for (const auto& pieces : chunkings(out)) {
      ReasoningParser parser(reasoning_start_for(prompt(R"({"enable_thinking": false})")));
      std::string reasoning;
      for (const std::string& piece : pieces) reasoning += parser.feed(piece).reasoning;
      reasoning += parser.finish().reasoning;
      CHECK(reasoning.empty());
      CHECK_FALSE(parser.reasoning_content());
      CHECK(parser.content() == out);
    }
  }
}

// Feeds `pieces` and finish(); checks that every piece's fragments continue the calls so far and
// that the fragments rebuild the parser's own calls. Returns the content and calls the deltas gave.
std::pair<std::string, std::vector<ParsedToolCall>> feed_all(ToolCallParser& parser, const std::vector<std::string>& pieces,
                                                             std::size_t* fragment_count = nullptr) {
  std::string content;
  std::vector<ParsedToolCall> calls;
  const auto take = [&](const ToolCallDelta& d) {
    content += d.content;
    for (std::size_t i = 0; i < d.tool_calls.size(); ++i) {
      const ToolCallFragment& f = d.tool_calls[i];
      // A call's first piece, and only it, names the call; pieces of one call are merged.
      CHECK(f.starts_call() == (f.index == calls.size()));
      if (f.starts_call()) CHECK(f.name == parser.tool_calls().at(f.index).name);
      if (i > 0) CHECK(d.tool_calls[i - 1].index < f.index);
      append_fragment(calls, f);
    }
    if (fragment_count) *fragment_count += d.tool_calls.size();
  };
  for (const std::string& piece : pieces) take(parser.feed(piece));
  take(parser.finish());
  CHECK(content == parser.content());
  CHECK(calls == parser.tool_calls());
  return {content, calls};
}

TEST_CASE("tool calls: every split point gives the documented calls and content") {
  const std::string weather = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}";
  const std::string search = "{\"name\":\"search\",\"arguments\":{\"query\":\"x\",\"top_k\":3}}";
  // Invalid JSON after the arguments began: a started call, cut where its text stopped being
  // JSON (after "{\"x\": " and the space), the rest content.
  const std::string bad_json = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": }\n</tool_call>";
  const std::string bad_tail = "}\n</tool_call>";
  const ToolCase cases[] = {
      {"<tool_call>\n" + weather + "\n</tool_call>", "", {call("call_0", "get_weather", "{\"city\": \"Paris\"}")}},
      {"Let me check.\n<tool_call>\n" + weather + "\n</tool_call>\n<tool_call>\n" + search + "\n</tool_call>",
       "Let me check.",
       {call("call_0", "get_weather", "{\"city\": \"Paris\"}"), call("call_1", "search", "{\"query\": \"x\", \"top_k\": 3}")}},
      {"Before " + bad_json + " after", "Before" + bad_tail + " after", {call("call_0", "f", "{\"x\": ")}},
      // Never started (no arguments, an empty name, arguments not an object, not an object): content.
      {"<tool_call>\n{\"name\": \"f\"}\n</tool_call>", "<tool_call>\n{\"name\": \"f\"}\n</tool_call>", {}},
      {"<tool_call>{\"name\": \"\", \"arguments\": {}}</tool_call>", "<tool_call>{\"name\": \"\", \"arguments\": {}}</tool_call>", {}},
      {"<tool_call>{\"arguments\": {\"a\": 1}, \"name\": \"\"}</tool_call>", "<tool_call>{\"arguments\": {\"a\": 1}, \"name\": \"\"}</tool_call>", {}},
      {"<tool_call>{\"name\": \"f\", \"arguments\": \"{}\"}</tool_call>", "<tool_call>{\"name\": \"f\", \"arguments\": \"{}\"}</tool_call>", {}},
      {"<tool_call>{\"name\": 7, \"arguments\": {}}</tool_call>", "<tool_call>{\"name\": 7, \"arguments\": {}}</tool_call>", {}},
      {"<tool_call>[1]</tool_call>", "<tool_call>[1]</tool_call>", {}},
      {"<tool_call>\n\n</tool_call>", "<tool_call>\n\n</tool_call>", {}},
      {"text\n<tool_call>\n{\"name\": \"f\"", "text\n<tool_call>\n{\"name\": \"f\"", {}},
      {"<tool_call>{\"name\": \"f\", \"name\": \"g\", \"arguments\": {}}</tool_call>",
       "<tool_call>{\"name\": \"f\", \"name\": \"g\", \"arguments\": {}}</tool_call>", {}},
      // A number ended by a byte that cannot follow it: the number is in the arguments, the byte on is content.
      {"<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 12x}}</tool_call>", "x}}</tool_call>", {call("call_0", "f", "{\"a\": 12")}},
      {"<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": [1}}</tool_call>", "}}</tool_call>", {call("call_0", "f", "{\"a\": [1")}},
      // Junk after a complete object: the call stands, the junk is content.
      {"<tool_call>{\"name\": \"f\", \"arguments\": {}} extra</tool_call>", "extra</tool_call>", {call("call_0", "f", "{}")}},
      // Cut short by the end of the reply or by the closing tag: the arguments so far; held-back
      // text (a number not yet ended, a key not yet closed) is content.
      {"<tool_call>\n{\"name\": \"f\", \"arguments\": {\"n\": 12", "12", {call("call_0", "f", "{\"n\": ")}},
      {"<tool_call>\n{\"name\": \"f\", \"arguments\": {\"text\": \"ab", "", {call("call_0", "f", "{\"text\": \"ab")}},
      {"<tool_call>{\"name\": \"f\", \"arguments\": {\"ke", "\"ke", {call("call_0", "f", "{")}},
      {"<tool_call>{\"name\": \"f\", \"arguments\": {\"s\": \"a</tool_call>b\"}}</tool_call>", "</tool_call>b\"}}</tool_call>",
       {call("call_0", "f", "{\"s\": \"a")}},
      {"<tool_call>{\"name\": \"f\", \"arguments\": {}}", "", {call("call_0", "f", "{}")}},
      // "arguments" before "name": the call starts, whole, when the name is read.
      {"<tool_call>{\"arguments\": {\"a\": [true, null]}, \"name\": \"f\"}</tool_call>", "", {call("call_0", "f", "{\"a\": [true, null]}")}},
      {"<tool_call>{\"arguments\": {\"a\": 1}, \"name\": \"f\", \"id\": 5, \"x\": [1, {\"y\": false}]}\n</tool_call>", "",
       {call("call_0", "f", "{\"a\": 1}")}},
      {"text <tool_ca", "text <tool_ca", {}},
      {"Just < text, <tool and </tool_call> stray\n", "Just < text, <tool and </tool_call> stray\n", {}},
      {"<tool_call>\n{\"name\": \"f\", \"arguments\": {\"z\":1,\"a\":[1.0,2e-7,1E16],\"u\":\"\\u00fc\\n\\t\\ud83d\\ude00\\/\"}}\n</tool_call>",
       "",
       {call("call_0", "f", "{\"z\": 1, \"a\": [1.0, 2e-07, 1e+16], \"u\": \"ü\\n\\t😀/\"}")}},
      {"<tool_call>\n" + weather + "\n</tool_call>\n\nDone.\n", "Done.\n", {call("call_0", "get_weather", "{\"city\": \"Paris\"}")}},
      {"<tool_call>" + weather + "</tool_call>\n" + bad_json + "\n<tool_call>" + search + "</tool_call>", bad_tail,
       {call("call_0", "get_weather", "{\"city\": \"Paris\"}"), call("call_1", "f", "{\"x\": "),
        call("call_2", "search", "{\"query\": \"x\", \"top_k\": 3}")}},
      {"  \n", "  \n", {}},
  };
  for (const ToolCase& c : cases) {
    for (const auto& pieces : chunkings(c.text)) {
      INFO("chunks " << describe(pieces));
      ToolCallParser parser;
      const auto [content, calls] = feed_all(parser, pieces);
      CHECK(content == c.content);
      CHECK(calls == c.calls);
    }
  }
}

TEST_CASE("tool calls: a call streams its id and name when its arguments begin, then each piece as it is certain") {
  const std::string text = "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lis\\u0062on\", \"days\": 12, \"x\": true}}\n</tool_call>";
  // (prefix of the text fed, the arguments streamed by then)
  const std::pair<std::string_view, std::string_view> points[] = {
      {"Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": ", ""},
      {"Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {", "{"},
      {"Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"ci", "{"},
      {"Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\"", "{\"city\""},
      {"Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lis", "{\"city\": \"Lis"},
      {"Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lis\\u006", "{\"city\": \"Lis"},
      {"Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lis\\u0062", "{\"city\": \"Lisb"},
      {"Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lis\\u0062on\", \"days\": 12",
       "{\"city\": \"Lisbon\", \"days\": "},
      {"Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lis\\u0062on\", \"days\": 12,",
       "{\"city\": \"Lisbon\", \"days\": 12, "},
      {"Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lis\\u0062on\", \"days\": 12, \"x\": tru",
       "{\"city\": \"Lisbon\", \"days\": 12, \"x\": "},
      {"Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lis\\u0062on\", \"days\": 12, \"x\": true}",
       "{\"city\": \"Lisbon\", \"days\": 12, \"x\": true}"},
  };
  for (const auto& [prefix, streamed] : points) {
    INFO(prefix);
    ToolCallParser parser;
    std::vector<ParsedToolCall> calls;
    std::string content;
    for (const char ch : prefix) {  // byte by byte: what each byte settles goes out at once
      const ToolCallDelta d = parser.feed(std::string_view(&ch, 1));
      content += d.content;
      for (const auto& f : d.tool_calls) append_fragment(calls, f);
    }
    CHECK(content == "Sure.");
    if (streamed.empty()) {
      CHECK(calls.empty());
    } else {
      REQUIRE(calls.size() == 1);
      CHECK(calls[0] == call("call_0", "get_weather", std::string(streamed)));
    }
  }
  std::size_t fragments = 0;
  std::vector<std::string> bytes;
  for (const char ch : text) bytes.emplace_back(1, ch);
  ToolCallParser parser;
  const auto [content, calls] = feed_all(parser, bytes, &fragments);
  CHECK(content == "Sure.");
  CHECK(calls == std::vector{call("call_0", "get_weather", "{\"city\": \"Lisbon\", \"days\": 12, \"x\": true}")});
  CHECK(fragments > 10);
}

namespace {

// A random JSON value written with random (valid) spacing and spellings: escapes, surrogate
// pairs, raw UTF-8, numbers in every form parse_json_strict takes.
struct JsonWriter {
  std::mt19937_64& rng;
  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); }
  std::string space() {
    static const char* const spaces[] = {"", "", "", " ", "\n", "  ", "\t", "\r\n"};
    return spaces[pick(8)];
  }
  std::string string_value() {
    static const char* const parts[] = {"a", "Lisbon", " ", "\\n", "\\\"", "\\\\", "\\/", "\\u00e9", "\\u00E9", "\\ud83d\\ude00",
                                        "é", "😀", "東京", "\\t", "\\u0000", "\\u001f", "<", "</tool", "{", "\\b"};
    std::string s = "\"";
    for (int i = pick(5); i > 0; --i) s += parts[pick(20)];
    return s + "\"";
  }
  std::string number() {
    static const char* const numbers[] = {"0", "-0", "12", "-7", "3.25", "1e5", "1E-7", "-2.5e+3", "12345678901234567890123",
                                          "1.0", "0.1", "18446744073709551615", "9223372036854775807", "1e300", "4.9e-324"};
    return numbers[pick(15)];
  }
  std::string value(int depth) {
    switch (depth > 3 ? pick(4) : pick(6)) {
      case 0: return string_value();
      case 1: return number();
      case 2: {
        static const char* const literals[] = {"true", "false", "null"};
        return literals[pick(3)];
      }
      case 3: return string_value();
      case 4: return object(depth + 1);
      default: {
        std::string a = "[" + space();
        for (int i = pick(4), first = 1; i > 0; --i, first = 0) a += (first ? "" : "," + space()) + value(depth + 1) + space();
        return a + "]";
      }
    }
  }
  std::string object(int depth) {
    std::string o = "{" + space();
    static const char* const keys[] = {"\"city\"", "\"n\"", "\"q\\u0075ery\"", "\"é\"", "\"\"", "\"a b\"", "\"x\"", "\"y\""};
    std::vector<int> order = {0, 1, 2, 3, 4, 5, 6, 7};
    std::shuffle(order.begin(), order.end(), rng);
    for (int i = pick(4), k = 0; k < i; ++k) o += (k ? "," + space() : "") + keys[order[static_cast<std::size_t>(k)]] + space() + ":" + space() + value(depth) + space();
    return o + "}";
  }
  // A call body: name and arguments in either order, perhaps an ignored key.
  std::string body() {
    std::vector<std::string> members = {"\"name\"" + space() + ":" + space() + "\"get_" + std::string(1, static_cast<char>('a' + pick(26))) + "\"",
                                        "\"arguments\"" + space() + ":" + space() + object(1)};
    if (pick(3) == 0) members.push_back("\"id\"" + space() + ":" + space() + value(1));
    std::shuffle(members.begin(), members.end(), rng);
    std::string b = space() + "{" + space();
    for (std::size_t i = 0; i < members.size(); ++i) b += (i ? "," + space() : "") + members[i] + space();
    return b + "}" + space();
  }
};

std::vector<std::string> random_split(const std::string& text, std::mt19937_64& rng) {
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < text.size(); ++i)
    if (rng() % 4 == 0) cuts.push_back(i);
  return split_at(text, cuts);
}

}  // namespace

TEST_CASE("tool calls: random bodies agree with the whole-text definition (parse_body) however they are cut") {
  std::mt19937_64 rng(20261208);
  JsonWriter writer{rng};
  static const char edits[] = {'{', '}', '[', ']', '"', ':', ',', '\\', ' ', 'a', '1', '-', '.', 'e', 'u',
                               '\x01', '\xff', '\x80', '\xa0', '\xc0', '\xe0', '\xed'};
  int valid = 0, started_broken = 0, never_started = 0;
  const int cases = qwen_test::sanitized ? 300 : 2000;
  for (int n = 0; n < cases; ++n) {
    std::string body = writer.body();
    ParsedToolCall original;
    REQUIRE(ToolCallParser::parse_body(body, original));  // the writer writes only valid bodies
    if (n % 2 == 1) {  // one random edit: most break the body, some keep it valid
      const std::size_t at = rng() % body.size();
      switch (rng() % 3) {
        case 0: body.erase(at, 1); break;
        case 1: body.insert(at, 1, edits[rng() % sizeof edits]); break;
        default: body[at] = edits[rng() % sizeof edits]; break;
      }
    }
    const std::string text = "<tool_call>" + body + "</tool_call>";
    ParsedToolCall expected;
    const bool well_formed = ToolCallParser::parse_body(body, expected);
    std::optional<std::pair<std::string, std::vector<ParsedToolCall>>> first;
    for (const auto& pieces : {std::vector<std::string>{text}, random_split(text, rng), random_split(text, rng)}) {
      INFO("text " << text << "\nchunks " << describe(pieces));
      ToolCallParser parser;
      auto result = feed_all(parser, pieces);
      const auto& [content, calls] = result;
      if (well_formed) {
        CHECK(content.empty());
        REQUIRE(calls.size() == 1);
        CHECK(calls[0].name == expected.name);
        CHECK(calls[0].arguments == expected.arguments);
      } else if (calls.empty()) {
        CHECK(content == text);  // never started: all of it is content
      } else {
        // Started, then broken: one call, and content that is the end of the text, from the
        // first byte not settled into the arguments: the text before it and that byte alone
        // stream the same arguments (nothing of the content went into them too). When the
        // content is only the closing tag (the body cut short with nothing held back), the text
        // before it alone.
        REQUIRE(calls.size() == 1);
        REQUIRE(text.ends_with(content));
        CHECK(content.ends_with("</tool_call>"));
        const std::size_t settled = text.size() - content.size() + (content == kToolCallClose ? 0 : 1);
        ToolCallParser prefix;
        const auto [prefix_content, prefix_calls] = feed_all(prefix, {text.substr(0, settled)});
        REQUIRE(prefix_calls.size() == 1);
        CHECK(prefix_calls[0] == calls[0]);
      }
      if (first) CHECK(result == *first);  // the same whatever the cuts
      else first = result;
    }
    (well_formed ? valid : first->second.empty() ? never_started : started_broken) += 1;
  }
  // The edits reach all three outcomes.
  CHECK(valid > cases / 2);
  CHECK(started_broken > cases / 20);
  CHECK(never_started > cases / 20);
}

TEST_CASE("tool calls: the edges of the JSON language agree with the whole-text definition") {
  // Arguments objects at the edges of parse_json_strict's language, each valid or not as that
  // parser says (the test asks it, and checks that the case list holds both kinds).
  const std::string deep_ok = std::string(254, '[') + std::string(254, ']');    // 256 containers with the call's and the arguments' objects
  const std::string deep_bad = std::string(255, '[') + std::string(255, ']');   // 257
  const std::string args[] = {
      R"({"s": "\u0000\u001f\u007f"})", "{\"s\": \"\x7f\"}", "{\"s\": \"\xf4\x8f\xbf\xbf\"}", "{\"s\": \"\xef\xbf\xbf\"}",
      R"({"s": "\ud800\udc00\udbff\udfff"})", R"({"s": "\uDBFF\uDFFF"})", "{\"a\": " + deep_ok + "}",
      R"({"n": -0, "m": 1E400})", R"({"n": 1e-400})", R"({"n": 123456789012345678901234567890})", R"({"n": -9223372036854775809})",
      R"({"x": 1, "\u0078": 2})", R"({"x": {"x": 1}, "y": {"x": 2}})", R"({"s": "\udc00"})", R"({"s": "\ud800"})",
      R"({"s": "\ud800\u0041"})", R"({"s": "\ud800x"})", "{\"s\": \"\xe0\x80\x80\"}", "{\"s\": \"\xed\xa0\x80\"}",
      "{\"s\": \"\xf4\x90\x80\x80\"}", "{\"s\": \"\xc0\xaf\"}", "{\"s\": \"\xc3\"}", "{\"s\": \"a\x01\"}", "{\"s\": \"a\tb\"}",
      R"({"s": "\x"})", R"({"s": "\u12g4"})", "{\"a\": " + deep_bad + "}", R"({"n": 01})", R"({"n": 1.})", R"({"n": .5})",
      R"({"n": -})", R"({"n": 1e})", R"({"n": +1})", R"({"n": 0x10})", R"({"n": NaN})", R"({"a": [1,]})", R"({"a": tru})",
      R"({"a": nulll})", R"({"a": [1 2]})", R"({,})", R"({"a" 1})", R"({"a": 1,})", std::string("{\"a\": 1}\0", 9),
  };
  int valid = 0, invalid = 0;
  for (const std::string& a : args) {
    for (const std::string& body : {"{\"name\": \"f\", \"arguments\": " + a + "}", "{\"arguments\": " + a + ", \"name\": \"f\"}"}) {
      const std::string text = "<tool_call>" + body + "</tool_call>";
      ParsedToolCall expected;
      const bool well_formed = ToolCallParser::parse_body(body, expected);
      (well_formed ? valid : invalid) += 1;
      std::vector<std::string> bytes;
      for (const char ch : text) bytes.emplace_back(1, ch);
      for (const auto& pieces : {std::vector<std::string>{text}, bytes}) {
        INFO(text);
        ToolCallParser parser;
        const auto [content, calls] = feed_all(parser, pieces);
        if (well_formed) {
          CHECK(content.empty());
          CHECK(calls == std::vector{call("call_0", "f", expected.arguments)});
        } else {
          // Started (name first) or never (arguments first): never a well-formed call.
          CHECK(calls.size() == (body.starts_with("{\"name\"") ? 1u : 0u));
          CHECK(content != "");
        }
      }
    }
  }
  CHECK(valid >= 16);
  CHECK(invalid >= 60);
}

TEST_CASE("tool calls: a body cut at any byte streams a prefix of the whole call's arguments") {
  std::mt19937_64 rng(7);
  JsonWriter writer{rng};
  for (int n = 0; n < (qwen_test::sanitized ? 30 : 200); ++n) {
    const std::string body = writer.body();
    ParsedToolCall expected;
    REQUIRE(ToolCallParser::parse_body(body, expected));
    std::string previous;
    for (std::size_t cut = 0; cut <= body.size(); ++cut) {
      INFO("body " << body << "\ncut at " << cut);
      ToolCallParser parser;
      const auto [content, calls] = feed_all(parser, {"<tool_call>" + body.substr(0, cut)});
      if (calls.empty()) {
        CHECK(content == "<tool_call>" + body.substr(0, cut));
        CHECK(previous.empty());
        continue;
      }
      REQUIRE(calls.size() == 1);
      CHECK(calls[0].name == expected.name);
      CHECK(expected.arguments.starts_with(calls[0].arguments));
      CHECK(calls[0].arguments.starts_with(previous));  // each byte only adds
      CHECK(body.substr(0, cut).ends_with(content));    // what is held back is the end of the text
      previous = calls[0].arguments;
    }
    CHECK(previous == expected.arguments);  // the whole body, unclosed, is the whole call
  }
}

TEST_CASE("tool calls: the OpenAI form and the id prefix") {
  ToolCallParser parser("chatcmpl-7-");
  (void)parser.feed("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": \"b\"}}\n</tool_call>");
  (void)parser.finish();
  REQUIRE(parser.tool_calls().size() == 1);
  CHECK(parser.tool_calls()[0].to_openai().dump() ==
        R"({"id":"chatcmpl-7-0","type":"function","function":{"name":"f","arguments":"{\"a\": \"b\"}"}})");
}

TEST_CASE("reasoning and tool calls: a thinking reply with a call parses alike at every split point and renders back to the model's text") {
  const std::string reply =
      "<think>\nThe user wants the weather.\n</think>\n\nLet me check.\n<tool_call>\n"
      "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
  std::vector<ParsedToolCall> parsed;
  std::optional<std::string> parsed_reasoning;
  std::string parsed_content;
  for (const auto& pieces : chunkings(reply)) {
    INFO("chunks " << describe(pieces));
    ReasoningParser reasoning(ReasoningStart::Detect);
    ToolCallParser tools;
    for (const std::string& piece : pieces) (void)tools.feed(reasoning.feed(piece).content);
    (void)tools.feed(reasoning.finish().content);
    (void)tools.finish();
    CHECK(reasoning.reasoning_content() == "The user wants the weather.");
    CHECK(tools.content() == "Let me check.");
    REQUIRE(tools.tool_calls().size() == 1);
    CHECK(tools.tool_calls()[0] == call("call_0", "get_weather", "{\"city\": \"Paris\"}"));
    parsed = tools.tool_calls();
    parsed_reasoning = reasoning.reasoning_content();
    parsed_content = tools.content();
  }
  // The parsed turn, rendered as the last message of a conversation, is the model's text again.
  auto request = nlohmann::ordered_json::parse(R"({"messages": [{"role": "user", "content": "Weather?"}], "add_generation_prompt": false})");
  request["messages"].push_back({{"role", "assistant"},
                                 {"content", parsed_content},
                                 {"reasoning_content", *parsed_reasoning},
                                 {"tool_calls", nlohmann::ordered_json::array({parsed[0].to_openai()})}});
  CHECK(render(request, ChatTemplate::variant("qwen3")) ==
        "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n" + reply + "<|im_end|>\n");
}

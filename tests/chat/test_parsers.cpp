// The reasoning parser and the tool-call parser: expected results written by hand from the rules
// in their headers; every text is also fed cut at every split point and byte by byte, and must
// give the same result as when fed whole.
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "qwen/chat/chat_template.hpp"
#include "qwen/chat/reasoning_parser.hpp"
#include "qwen/chat/tool_call_parser.hpp"

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

TEST_CASE("tool calls: every split point gives the documented calls and content") {
  const std::string weather = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}";
  const std::string search = "{\"name\":\"search\",\"arguments\":{\"query\":\"x\",\"top_k\":3}}";
  const std::string bad_json = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": }\n</tool_call>";
  const ToolCase cases[] = {
      {"<tool_call>\n" + weather + "\n</tool_call>", "", {call("call_0", "get_weather", "{\"city\": \"Paris\"}")}},
      {"Let me check.\n<tool_call>\n" + weather + "\n</tool_call>\n<tool_call>\n" + search + "\n</tool_call>",
       "Let me check.",
       {call("call_0", "get_weather", "{\"city\": \"Paris\"}"), call("call_1", "search", "{\"query\": \"x\", \"top_k\": 3}")}},
      {"Before " + bad_json + " after", "Before " + bad_json + " after", {}},
      {"<tool_call>\n{\"name\": \"f\"}\n</tool_call>", "<tool_call>\n{\"name\": \"f\"}\n</tool_call>", {}},
      {"<tool_call>{\"name\": \"\", \"arguments\": {}}</tool_call>", "<tool_call>{\"name\": \"\", \"arguments\": {}}</tool_call>", {}},
      {"<tool_call>{\"name\": \"f\", \"arguments\": \"{}\"}</tool_call>", "<tool_call>{\"name\": \"f\", \"arguments\": \"{}\"}</tool_call>", {}},
      {"<tool_call>{\"name\": \"f\", \"arguments\": {}} extra</tool_call>", "<tool_call>{\"name\": \"f\", \"arguments\": {}} extra</tool_call>", {}},
      {"<tool_call>[1]</tool_call>", "<tool_call>[1]</tool_call>", {}},
      {"<tool_call>\n\n</tool_call>", "<tool_call>\n\n</tool_call>", {}},
      {"text\n<tool_call>\n{\"name\": \"f\"", "text\n<tool_call>\n{\"name\": \"f\"", {}},
      {"text <tool_ca", "text <tool_ca", {}},
      {"Just < text, <tool and </tool_call> stray\n", "Just < text, <tool and </tool_call> stray\n", {}},
      {"<tool_call>\n{\"name\": \"f\", \"arguments\": {\"z\":1,\"a\":[1.0,2e-7,1E16],\"u\":\"\\u00fc\\n\\t\"}}\n</tool_call>",
       "",
       {call("call_0", "f", "{\"z\": 1, \"a\": [1.0, 2e-07, 1e+16], \"u\": \"ü\\n\\t\"}")}},
      {"<tool_call>\n" + weather + "\n</tool_call>\n\nDone.\n", "Done.\n", {call("call_0", "get_weather", "{\"city\": \"Paris\"}")}},
      {"<tool_call>" + weather + "</tool_call>\n" + bad_json + "\n<tool_call>" + search + "</tool_call>", bad_json,
       {call("call_0", "get_weather", "{\"city\": \"Paris\"}"), call("call_1", "search", "{\"query\": \"x\", \"top_k\": 3}")}},
      {"  \n", "  \n", {}},
  };
  for (const ToolCase& c : cases) {
    for (const auto& pieces : chunkings(c.text)) {
      INFO("chunks " << describe(pieces));
      ToolCallParser parser;
      std::string content;
      std::vector<ParsedToolCall> calls;
      const auto take = [&](ToolCallDelta d) {
        content += d.content;
        calls.insert(calls.end(), d.tool_calls.begin(), d.tool_calls.end());
      };
      for (const std::string& piece : pieces) take(parser.feed(piece));
      take(parser.finish());
      CHECK(content == c.content);
      CHECK(calls == c.calls);
      CHECK(parser.content() == c.content);
      CHECK(parser.tool_calls() == c.calls);
    }
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

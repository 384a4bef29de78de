// Guided decoding through the engine, on the dense tied golden checkpoint: random weights, so the
// model on its own writes no JSON and no tool call; under a grammar every choice must.
#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <vector>

#include <qwen/engine/llm.hpp>
#include <qwen/guided/json_automaton.hpp>
#include <qwen/model/qwen3.hpp>

#include "engine_test_model.hpp"

using namespace qwen;
using namespace qwen::engine;
using json = nlohmann::ordered_json;

namespace {

using Model = qwen_test::EngineTestModel;
const std::filesystem::path kCheckpoint = qwen_test::engine_test_checkpoint;

LLMOptions guided_options() {
  LLMOptions o;
  o.threads = 2;
  o.engine.max_num_seqs = 16;
  o.engine.max_num_batched_tokens = 256;
  return o;
}

json weather_request(bool thinking) {
  const auto tool = [](const char* name) { return json{{"type", "function"}, {"function", {{"name", name}}}}; };
  return {{"messages", {{{"role", "user"}, {"content", "Weather and time in Lisbon?"}}}},
          {"tools", {tool("get_weather"), tool("get_time")}},
          {"chat_template_kwargs", {{"enable_thinking", thinking}}}};
}

// Whether `text` is a prefix of some JSON object (the recognizer accepts every byte).
bool json_object_prefix(const std::string& text) {
  guided::JsonState s = guided::json_start(true);
  for (const char c : text)
    if (!guided::json_step(s, static_cast<std::uint8_t>(c))) return false;
  return true;
}

// n choices sampled at temperature 1 from `seed`, at most max_tokens each, under a grammar of `kind`.
GenerationParams sampled(GuidedOutput::Kind kind, int n, int max_tokens, std::uint64_t seed) {
  GenerationParams p;
  p.n = n;
  p.max_tokens = max_tokens;
  p.sampling.temperature = 1.0;
  p.sampling.seed = seed;
  p.guided.kind = kind;
  return p;
}

// Steers the random model at the tags a thinking model writes, so that think blocks open and close.
void push_towards_think_tags(GenerationParams& p) { p.sampling.logit_bias = {{502, 6.0f}, {503, 4.0f}}; }

}  // namespace

TEST_CASE("engine: response json_object makes every choice one JSON object, thinking on or off", "[engine][guided]") {
  LLM<Model> llm(kCheckpoint, guided_options());
  // The random model is steered towards "}" (which the grammar allows only where an object can
  // close), so that completing an object does not hang on the luck of the draws, which differ
  // between vector widths (8 lanes: 3 of 16 choices completed without it).
  const std::vector<std::int32_t> close_brace = llm.tokenizer()->encode("}");
  REQUIRE(close_brace.size() == 1);
  int stopped = 0, cut = 0, thought = 0;
  for (const bool thinking : {false, true}) {
    GenerationParams p = sampled(GuidedOutput::Kind::json_object, 8, 300, 7);
    if (thinking) push_towards_think_tags(p);
    p.sampling.logit_bias.emplace_back(close_brace[0], 2.0f);
    json request = weather_request(thinking);
    request.erase("tools");
    const std::vector<RequestResult> results = llm.engine().generate({chat_request(request, p)});
    for (const Choice& c : results[0].choices) {
      INFO("thinking " << thinking << ", choice " << c.index << ": " << c.text);
      REQUIRE(c.error.empty());
      if (!thinking) CHECK_FALSE(c.reasoning_content);
      thought += c.reasoning_content ? 1 : 0;
      if (c.finish_reason == FinishReason::stop) {
        ++stopped;
        const json parsed = json::parse(c.content);  // throws (fails the test) unless it is JSON
        CHECK(parsed.is_object());
        CHECK_FALSE(c.stop_token);  // ended by the grammar, not by an end-of-sequence token
      } else {
        ++cut;
        CHECK(c.finish_reason == FinishReason::length);
        CHECK(json_object_prefix(c.content));
      }
    }
  }
  INFO(stopped << " choices complete, " << cut << " cut by max_tokens");
  CHECK(stopped >= 4);  // both outcomes are allowed per choice, but the grammar must finish some
  CHECK(thought > 0);
}

TEST_CASE("engine: a forced tool call is exactly one call to the named function, or to one of the tools", "[engine][guided]") {
  LLM<Model> llm(kCheckpoint, guided_options());
  std::set<std::string> names_seen;
  int complete = 0;
  for (const bool named : {true, false}) {
    for (const bool thinking : {false, true}) {
      GenerationParams p = sampled(GuidedOutput::Kind::tool_call, 6, 160, 11);
      if (named) p.guided.tool_names = {"get_time"};
      if (thinking) push_towards_think_tags(p);
      const std::vector<RequestResult> results = llm.engine().generate({chat_request(weather_request(thinking), p)});
      for (const Choice& c : results[0].choices) {
        INFO("named " << named << ", thinking " << thinking << ", choice " << c.index << ": " << c.text);
        REQUIRE(c.error.empty());
        if (c.finish_reason != FinishReason::stop) {
          // Cut by max_tokens: before the call started, or inside it (the arguments so far).
          CHECK(c.finish_reason == FinishReason::length);
          CHECK(c.tool_calls.size() <= 1);
          if (!c.tool_calls.empty()) CHECK(c.tool_calls[0].arguments.starts_with("{"));
          continue;
        }
        ++complete;
        REQUIRE(c.tool_calls.size() == 1);
        const chat::ParsedToolCall& call = c.tool_calls[0];
        if (named) CHECK(call.name == "get_time");
        else CHECK((call.name == "get_time" || call.name == "get_weather"));
        names_seen.insert(call.name);
        CHECK(json::parse(call.arguments).is_object());
        CHECK(c.content.find_first_not_of(" \n") == std::string::npos);  // nothing but the call (and newlines)
      }
    }
  }
  CHECK(complete >= 4);
  CHECK(names_seen.count("get_time") == 1);
}

TEST_CASE("engine: guided requests that cannot be met are refused at submit", "[engine][guided]") {
  LLM<Model> llm(kCheckpoint, guided_options());
  auto& engine = llm.engine();
  GenerationParams p;
  p.guided.kind = GuidedOutput::Kind::tool_call;
  p.guided.tool_names = {"get_news"};
  CHECK_THROWS_WITH(engine.submit(chat_request(weather_request(false), p)),
                    Catch::Contains("\"get_news\", which is not among the request's tools"));
  p.guided.tool_names.clear();
  json no_tools = weather_request(false);
  no_tools.erase("tools");
  CHECK_THROWS_WITH(engine.submit(chat_request(no_tools, p)), Catch::Contains("needs a chat request with tools"));
  CHECK_THROWS_WITH(engine.submit(text_request("hello", p)), Catch::Contains("no chat messages"));
  p.guided.kind = GuidedOutput::Kind::json_object;
  p.guided.tool_names = {"get_time"};
  CHECK_THROWS_WITH(engine.submit(chat_request(weather_request(false), p)), Catch::Contains("only for a tool call"));
  CHECK_FALSE(engine.has_work());
  // A text prompt may be guided too: the whole output is the object.
  p.guided.tool_names.clear();
  p.max_tokens = 300;
  p.sampling.seed = 3;
  p.n = 4;
  const std::vector<RequestResult> results = engine.generate({text_request("Reply in JSON:", p)});
  for (const Choice& c : results[0].choices) {
    INFO(c.text);
    if (c.finish_reason == FinishReason::stop) CHECK(json::parse(c.text).is_object());
    else CHECK(json_object_prefix(c.text));
  }
}

TEST_CASE("engine: json_schema and a tool's parameters are followed by every completed choice", "[engine][guided]") {
  LLM<Model> llm(kCheckpoint, guided_options());
  const json schema = json::parse(R"({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
      "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"], "additionalProperties": false})");
  const auto check_object = [](const json& v) {
    REQUIRE(v.is_object());
    CHECK(v.contains("city"));
    CHECK(v["city"].is_string());
    CHECK((v["unit"] == "celsius" || v["unit"] == "fahrenheit"));
    if (v.contains("days")) CHECK(v["days"].is_number_integer());
    for (const auto& [key, value] : v.items()) CHECK((key == "city" || key == "days" || key == "unit"));
  };
  int complete = 0;
  {
    GenerationParams p = sampled(GuidedOutput::Kind::json_schema, 8, 200, 5);
    p.guided.schema = schema;
    json request = weather_request(false);
    request.erase("tools");
    const std::vector<RequestResult> results = llm.engine().generate({chat_request(request, p)});
    for (const Choice& c : results[0].choices) {
      INFO(c.text);
      if (c.finish_reason != FinishReason::stop) continue;
      ++complete;
      check_object(json::parse(c.content));
    }
  }
  {
    GenerationParams p = sampled(GuidedOutput::Kind::tool_call, 8, 120, 6);
    p.guided.tool_names = {"get_weather"};
    json request = weather_request(false);
    // One tool with a short schema: the prompt must leave room in the tiny model's 512 positions.
    request["tools"] = json::array({request["tools"][0]});
    request["tools"][0]["function"]["parameters"] =
        json::parse(R"({"type": "object", "properties": {"n": {"type": "integer"}, "u": {"enum": ["c", "f"]}}, "required": ["u"]})");
    const std::vector<RequestResult> results = llm.engine().generate({chat_request(request, p)});
    for (const Choice& c : results[0].choices) {
      INFO(c.text);
      if (c.finish_reason != FinishReason::stop) continue;
      ++complete;
      REQUIRE(c.tool_calls.size() == 1);
      CHECK(c.tool_calls[0].name == "get_weather");
      const json args = json::parse(c.tool_calls[0].arguments);
      CHECK((args["u"] == "c" || args["u"] == "f"));
      CHECK(args.size() == (args.contains("n") ? 2u : 1u));
      if (args.contains("n")) CHECK(args["n"].is_number_integer());
    }
    // A schema beyond the subset is refused at submit, naming where it is.
    request["tools"][0]["function"]["parameters"]["properties"]["n"]["minimum"] = 1;
    p.max_tokens = 50;
    CHECK_THROWS_WITH(llm.engine().submit(chat_request(request, p)),
                      Catch::Contains("chat request: tools[0].function.parameters.properties.n: keyword 'minimum' is not supported"));
  }
  CHECK(complete >= 4);
}

// qwen-serve's translation layers without HTTP or a model (examples/openai_server/): request
// bodies to engine requests, and engine results to OpenAI bodies and stream chunks. The parts the
// end-to-end test (test_openai_server.py) cannot reach with random weights are here: a choice
// that ends with parsed tool calls (finish_reason "tool_calls", content null, the calls' shape,
// their stream deltas).
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <qwen/tokenizer/tokenizer.hpp>

#include "api_error.hpp"
#include "request_translation.hpp"
#include "responses.hpp"

using namespace qwen_serve;
using qwen::engine::FinishReason;

namespace {

const qwen::tokenizer::Tokenizer& golden_tokenizer() {
  static const auto t = qwen::tokenizer::Tokenizer::from_file(QWEN_GOLDEN_DIR "/checkpoints/dense_tied/tokenizer.json");
  return t;
}

// The SSE events of `text` as JSON, checking the framing ("data: {...}\n\n" each).
std::vector<json> events_of(const std::string& text) {
  std::vector<json> out;
  std::size_t at = 0;
  while (at < text.size()) {
    REQUIRE(text.compare(at, 6, "data: ") == 0);
    const std::size_t end = text.find("\n\n", at);
    REQUIRE(end != std::string::npos);
    out.push_back(json::parse(text.substr(at + 6, end - at - 6)));
    at = end + 2;
  }
  return out;
}

qwen::chat::ParsedToolCall call(std::string id, std::string name, std::string arguments) {
  return {std::move(id), std::move(name), std::move(arguments)};
}

template <class F>
ApiError api_error_of(F&& f) {
  try {
    f();
  } catch (const ApiError& e) {
    return e;
  }
  FAIL("no ApiError thrown");
  return ApiError(0, "", "");
}

}  // namespace

TEST_CASE("a chat choice with tool calls", "[server]") {
  qwen::engine::RequestResult r;
  r.usage = {20, 9, 16};
  qwen::engine::Choice c;
  c.index = 0;
  c.reasoning_content = "Need the weather.";
  c.tool_calls = {call("call_1_0_0", "get_weather", R"({"city": "Lisbon"})"), call("call_1_0_1", "get_time", "{}")};
  c.finish_reason = FinishReason::stop;
  c.stop_token = 480;
  c.tokens = {{492, -0.5f, {{492, -0.5f}, {493, -1.5f}}}};
  r.choices = {c};
  const json body = chat_completion_json({"chatcmpl-x", 123, "m"}, r, true, &golden_tokenizer());
  const json& choice = body["choices"][0];
  CHECK(body["object"] == "chat.completion");
  CHECK(choice["finish_reason"] == "tool_calls");
  CHECK(choice["stop_reason"] == 480);
  CHECK(choice["message"]["content"].is_null());
  CHECK(choice["message"]["reasoning_content"] == "Need the weather.");
  CHECK(choice["message"]["tool_calls"] ==
        json::parse(R"([{"id": "call_1_0_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Lisbon\"}"}},
                        {"id": "call_1_0_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}])"));
  CHECK(body["usage"] == json::parse(R"({"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29,
                                         "prompt_tokens_details": {"cached_tokens": 16}})"));
  const json& lp = choice["logprobs"]["content"][0];
  CHECK(lp["token"] == "<tool_call>");
  CHECK(lp["bytes"].size() == 11);
  CHECK(lp["top_logprobs"][1]["token"] == "</tool_call>");

  // Without tool calls: content is a string (even empty), finish_reason as the engine says.
  r.choices[0].tool_calls.clear();
  r.choices[0].finish_reason = FinishReason::length;
  const json plain = chat_completion_json({"chatcmpl-x", 123, "m"}, r, false, nullptr);
  CHECK(plain["choices"][0]["message"]["content"] == "");
  CHECK(plain["choices"][0]["finish_reason"] == "length");
  CHECK(plain["choices"][0]["logprobs"].is_null());
}

TEST_CASE("chat stream chunks", "[server]") {
  ChatStream stream({"chatcmpl-y", 5, "m"}, 2, false, true, &golden_tokenizer());
  qwen::engine::ChoiceDelta d;
  d.index = 1;
  d.reasoning = "think";
  d.content = "Sure.";
  std::vector<json> e = events_of(stream.on_delta(d, nullptr));
  REQUIRE(e.size() == 3);  // role, reasoning, content: each its own chunk
  CHECK(e[0]["choices"][0]["delta"] == json::parse(R"({"role": "assistant", "content": ""})"));
  CHECK(e[1]["choices"][0]["delta"] == json::parse(R"({"reasoning_content": "think"})"));
  CHECK(e[2]["choices"][0]["delta"] == json::parse(R"({"content": "Sure."})"));
  for (const json& chunk : e) {
    CHECK(chunk["object"] == "chat.completion.chunk");
    CHECK(chunk["id"] == "chatcmpl-y");
    CHECK(chunk["choices"][0]["index"] == 1);
    CHECK(chunk.contains("usage"));
    CHECK(chunk["usage"].is_null());
  }

  // Tool calls in pieces: a call's first piece names it, the next ones carry arguments only.
  qwen::engine::ChoiceDelta first;
  first.index = 1;
  first.tool_calls = {{0, "call_a", "f", "{}"}, {1, "call_b", "g", R"({"x": )"}};
  e = events_of(stream.on_delta(first, nullptr));
  REQUIRE(e.size() == 2);  // one chunk per piece
  CHECK(e[0]["choices"][0]["delta"]["tool_calls"] ==
        json::parse(R"([{"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}])"));
  CHECK(e[1]["choices"][0]["delta"]["tool_calls"] ==
        json::parse(R"([{"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{\"x\": "}}])"));
  qwen::engine::ChoiceDelta rest;
  rest.index = 1;
  rest.tool_calls = {{1, "", "", "1}"}};
  rest.finish_reason = FinishReason::stop;
  e = events_of(stream.on_delta(rest, nullptr));
  REQUIRE(e.size() == 2);  // the piece, then the finish reason
  CHECK(e[0]["choices"][0]["delta"]["tool_calls"] == json::parse(R"([{"index": 1, "function": {"arguments": "1}"}}])"));
  CHECK(e[1]["choices"][0]["finish_reason"] == "tool_calls");
  CHECK(e[1]["choices"][0]["delta"] == json::object());

  const json usage = events_of(stream.usage_event({3, 4, 0}))[0];
  CHECK(usage["choices"] == json::array());
  CHECK(usage["usage"]["total_tokens"] == 7);
}

TEST_CASE("completion stream indices, echo and logprob offsets", "[server]") {
  CompletionStream stream({"cmpl-z", 5, "m"}, {"AB", "C"}, 2, true, false, &golden_tokenizer());
  qwen::engine::ChoiceDelta d;
  d.index = 1;
  d.text = "xy";
  d.tokens = {{87, -0.25f, {}}};  // 'x'
  std::vector<json> e = events_of(stream.on_delta(1, d, nullptr));
  REQUIRE(e.size() == 1);
  CHECK(e[0]["choices"][0]["index"] == 3);  // prompt 1, choice 1, n = 2
  CHECK(e[0]["choices"][0]["text"] == "Cxy");  // the echo opens the choice
  CHECK(e[0]["choices"][0]["logprobs"]["text_offset"] == json::array({1}));
  CHECK(!e[0].contains("usage"));
  d.text = "z";
  d.tokens = {{88, -0.5f, {}}};
  d.finish_reason = FinishReason::length;
  e = events_of(stream.on_delta(1, d, nullptr));
  CHECK(e[0]["choices"][0]["text"] == "z");
  CHECK(e[0]["choices"][0]["logprobs"]["text_offset"] == json::array({2}));
  CHECK(e[0]["choices"][0]["finish_reason"] == "length");
}

TEST_CASE("chat request translation", "[server]") {
  qwen::engine::GenerationParams defaults;
  defaults.sampling.temperature = 0.6;
  defaults.sampling.top_k = 20;
  const json tools = json::parse(R"([{"type": "function", "function": {"name": "f"}}])");
  json body = {{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}, {"tools", tools}, {"max_tokens", 5},
               {"max_completion_tokens", 7}, {"stop", "END"}, {"top_p", 0.5}, {"logprobs", true}, {"top_logprobs", 3},
               {"chat_template_kwargs", {{"enable_thinking", false}}}, {"unknown_field", 1}};
  ChatCall call = read_chat_request(body, defaults);
  const auto& p = call.request.params;
  CHECK(p.max_tokens == 7);  // max_completion_tokens wins
  CHECK(p.stop == std::vector<std::string>{"END"});
  CHECK(p.sampling.temperature == 0.6);  // the checkpoint's default where the body is silent
  CHECK(p.sampling.top_k == 20);
  CHECK(p.sampling.top_p == 0.5);
  CHECK(p.sampling.logprobs == 3);
  CHECK(call.logprobs);
  REQUIRE(call.request.chat);
  CHECK((*call.request.chat)["tools"] == tools);
  CHECK((*call.request.chat)["chat_template_kwargs"]["enable_thinking"] == false);
  CHECK(!call.request.chat->contains("unknown_field"));

  body["tool_choice"] = "none";
  CHECK(!read_chat_request(body, defaults).request.chat->contains("tools"));
  body["tool_choice"] = "auto";
  CHECK(read_chat_request(body, defaults).request.chat->contains("tools"));
  using Guided = qwen::engine::GuidedOutput;
  CHECK(read_chat_request(body, defaults).request.params.guided.kind == Guided::Kind::none);
  // A named function: one forced call to it, which must be one of the tools.
  const std::string tool_name = tools[0]["function"]["name"].get<std::string>();
  body["tool_choice"] = {{"type", "function"}, {"function", {{"name", tool_name}}}};
  qwen::engine::GenerationParams forced = read_chat_request(body, defaults).request.params;
  CHECK(forced.guided.kind == Guided::Kind::tool_call);
  CHECK(forced.guided.tool_names == std::vector<std::string>{tool_name});
  body["tool_choice"] = "required";
  forced = read_chat_request(body, defaults).request.params;
  CHECK(forced.guided.kind == Guided::Kind::tool_call);
  CHECK(forced.guided.tool_names.empty());  // any of the tools
  const auto refused = [&](const json& choice, const char* param, const char* words) {
    body["tool_choice"] = choice;
    const ApiError e = api_error_of([&] { (void)read_chat_request(body, defaults); });
    CHECK(e.status() == 400);
    CHECK(e.param() == param);
    CHECK_THAT(e.what(), Catch::Contains(words));
  };
  refused({{"type", "function"}, {"function", {{"name", "not_a_tool"}}}}, "tool_choice.function.name", "not among the request's tools");
  refused({{"type", "function"}, {"function", {{"name", 7}}}}, "tool_choice.function.name", "must be a string");
  refused({{"type", "function"}}, "tool_choice.function", "must be an object");
  refused({{"type", "tool"}, {"function", {{"name", tool_name}}}}, "tool_choice.type", "must be \"function\"");
  refused("sometimes", "tool_choice", "must be \"none\", \"auto\", \"required\"");
  // Malformed tools are named as such (the translation runs before the chat request parser).
  const json saved_tools = body["tools"];
  body["tools"] = json::object();
  refused("required", "tools", "must be a list of tools");
  body["tools"] = json::parse(R"([{"type": "function", "function": {"name": 3}}])");
  refused({{"type", "function"}, {"function", {{"name", "f"}}}}, "tools[0].function.name", "must be a string");
  body["tools"] = json::parse(R"([5])");
  refused("required", "tools[0].function", "must be an object");
  // The field is named apart from the message, whatever the client wrote inside it.
  body["tools"] = saved_tools;
  refused({{"type", "function"}, {"function", {{"name", "chat request: evil: x"}}}}, "tool_choice.function.name", "not among");
  body.erase("tools");
  refused("required", "tool_choice", "no 'tools'");
  refused({{"type", "function"}, {"function", {{"name", tool_name}}}}, "tool_choice", "no 'tools'");
  body["tools"] = saved_tools;
  body.erase("tool_choice");

  body["response_format"] = {{"type", "json_schema"}};
  CHECK(api_error_of([&] { (void)read_chat_request(body, defaults); }).param() == "response_format.json_schema");
  body["response_format"] = {{"type", "json_schema"}, {"json_schema", {{"name", "w"}}}};
  CHECK(api_error_of([&] { (void)read_chat_request(body, defaults); }).param() == "response_format.json_schema.schema");
  body["response_format"]["json_schema"]["schema"] = json::parse(R"({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}})");
  const ApiError unsupported = api_error_of([&] { (void)read_chat_request(body, defaults); });
  CHECK(unsupported.param() == "response_format.json_schema.schema.properties.n");
  CHECK_THAT(unsupported.what(), Catch::Contains("keyword 'minimum' is not supported"));
  // Property names of any spelling are named whole (one with ": " in it too).
  body["response_format"]["json_schema"]["schema"] = json::parse(R"({"type": "object", "properties": {"user Name: x": {"type": "integer", "minimum": 1}}})");
  CHECK(api_error_of([&] { (void)read_chat_request(body, defaults); }).param() == "response_format.json_schema.schema.properties.user Name: x");
  body["response_format"]["json_schema"]["schema"] = json::parse(R"({"type": "object", "properties": {"n": {"type": "integer"}}})");
  const qwen::engine::GenerationParams schema_params = read_chat_request(body, defaults).request.params;
  CHECK(schema_params.guided.kind == Guided::Kind::json_schema);
  CHECK(schema_params.guided.schema == body["response_format"]["json_schema"]["schema"]);
  body["response_format"] = {{"type", "json_object"}};
  CHECK(read_chat_request(body, defaults).request.params.guided.kind == Guided::Kind::json_object);
  body["tool_choice"] = "required";
  CHECK(api_error_of([&] { (void)read_chat_request(body, defaults); }).param() == "response_format");
  body.erase("tool_choice");
  body["response_format"] = {{"type", "text"}};
  CHECK(read_chat_request(body, defaults).request.params.guided.kind == Guided::Kind::none);

  body.erase("logprobs");
  CHECK(api_error_of([&] { (void)read_chat_request(body, defaults); }).param() == "top_logprobs");
  body["top_logprobs"] = nullptr;  // null is "not given"
  CHECK_NOTHROW(read_chat_request(body, defaults));
  body["temperature"] = true;
  CHECK(api_error_of([&] { (void)read_chat_request(body, defaults); }).param() == "temperature");
  body["temperature"] = 1;
  body["max_tokens"] = 2.5;
  CHECK(api_error_of([&] { (void)read_chat_request(body, defaults); }).param() == "max_tokens");
}

TEST_CASE("completion request translation", "[server]") {
  const qwen::engine::GenerationParams defaults;
  CompletionCall one = read_completion_request({{"prompt", "hello"}}, defaults);
  REQUIRE(one.requests.size() == 1);
  CHECK(one.requests[0].prompt == "hello");
  CHECK(one.requests[0].params.max_tokens == default_completion_max_tokens);
  CompletionCall many = read_completion_request({{"prompt", json::array({"a", json::array({1, 2}), "b"})}, {"n", 2}}, defaults);
  REQUIRE(many.requests.size() == 3);
  CHECK(many.requests[1].prompt_ids == std::vector<std::int32_t>{1, 2});
  CHECK(many.requests[2].params.n == 2);
  CompletionCall ids = read_completion_request({{"prompt", json::array({5, 6, 7})}, {"logprobs", 2}}, defaults);
  REQUIRE(ids.requests.size() == 1);
  CHECK(ids.requests[0].prompt_ids.size() == 3);
  CHECK(ids.requests[0].params.sampling.logprobs == 2);
  CHECK(api_error_of([] { (void)read_completion_request({{"prompt", "x"}, {"echo", true}, {"logprobs", 1}}, {}); }).param() == "echo");
  CHECK(api_error_of([] { (void)read_completion_request({{"prompt", json::array({1, "x"})}}, {}); }).param() == "prompt[1]");
  CHECK(api_error_of([] { (void)read_completion_request(json::array(), {}); }).status() == 400);
  CHECK(api_error_of([] { (void)read_completion_request({{"prompt", json(std::vector<std::string>(1025, "a"))}}, {}); }).param() == "prompt");
  CHECK(read_completion_request({{"prompt", json(std::vector<int>(2000, 1))}}, {}).requests.size() == 1);  // token ids are one prompt
}

TEST_CASE("the field a library message names", "[server]") {
  CHECK(param_of_library_message("request: 'max_tokens' is 0, must be >= 1") == "max_tokens");
  CHECK(param_of_library_message("request: sampling parameter 'top_p' is 1.5, must be in (0, 1]") == "top_p");
  CHECK(param_of_library_message("chat request: messages[3].role: unknown role \"x\"") == "messages[3].role");
  CHECK(param_of_library_message("request: the prompt is empty") == std::nullopt);
  CHECK(param_of_library_message("it's 'not an identifier'") == std::nullopt);
}

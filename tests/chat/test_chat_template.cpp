// ChatTemplate against transformers' apply_chat_template (expected_renders.json, written by
// make_expected_renders.py in the reference venv), request validation, template identification.
#include <filesystem>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "qwen/chat/chat_template.hpp"
#include "qwen/io/json_file.hpp"
#include "../scratch_dir.hpp"

namespace fs = std::filesystem;
using qwen::chat::ChatTemplate;
using qwen::chat::ordered_json;

namespace {

const fs::path kChatDir = QWEN_CHAT_TEST_DIR;

const ordered_json& expected_file() {
  static const ordered_json file = qwen::io::parse_json_strict<ordered_json>(
      qwen::io::read_small_file(kChatDir / "expected_renders.json", 16u << 20), (kChatDir / "expected_renders.json").string());
  return file;
}

ordered_json request_of(const char* text) { return qwen::io::parse_json_strict<ordered_json>(text, "test request"); }

// A request as nlohmann::json (keys sorted) must not compile: it would render tools unlike transformers.
template <class Json>
constexpr bool renderable = requires(const Json& request, const ChatTemplate& chat_template) {
  qwen::chat::render(request, chat_template);
  qwen::chat::parse_chat_request(request);
};
static_assert(renderable<ordered_json>);
static_assert(!renderable<nlohmann::json>);

}  // namespace

TEST_CASE("every reference conversation renders byte-identically to transformers") {
  const ChatTemplate qwen3 = ChatTemplate::from_directory(kChatDir / "qwen3-tokenizer");
  REQUIRE(qwen3.variant_name() == "qwen3");
  const ordered_json& renders = expected_file().at("renders");
  REQUIRE(renders.size() >= 60);
  std::size_t identical = 0;
  for (const ordered_json& c : renders) {
    INFO("case " << c.at("name").get<std::string>());
    const std::string got = qwen::chat::render(c.at("request"), qwen3);
    CHECK(got == c.at("expected").get<std::string>());
    identical += got == c.at("expected").get<std::string>();
  }
  CHECK(identical == renders.size());
}

TEST_CASE("a tool schema nested 255 levels deep parses and renders; deeper than the bound is refused") {
  const ChatTemplate qwen3 = ChatTemplate::from_directory(kChatDir / "qwen3-tokenizer");
  // Request object (1) > tools array (2) > tool (3) > function (4) > parameters (5) > nested.
  const auto request_text = [](int nested) {
    std::string schema = R"({"type": "string"})";
    for (int i = 0; i < nested; ++i) schema = R"({"type": "object", "properties": {"x": )" + schema + "}}";
    return R"({"messages": [{"role": "user", "content": "a"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": )" +
           schema + "}}]}";
  };
  // Each level of `properties` nesting adds two objects: 5 + 2 * 125 = 255 <= 256.
  const std::string rendered = qwen::chat::render(request_of(request_text(125).c_str()), qwen3);
  CHECK(rendered.find(R"("properties": {"x": {"type": "object")") != std::string::npos);
  CHECK_THROWS_WITH(request_of(request_text(126).c_str()), Catch::Contains("JSON nests deeper than 256 levels"));
}

TEST_CASE("tojson formats values as Python's json.dumps(ensure_ascii=False)") {
  const ordered_json& values = expected_file().at("tojson");
  REQUIRE(values.size() >= 30);
  for (const ordered_json& v : values) {
    INFO("expected " << v.at("expected").get<std::string>());
    CHECK(qwen::chat::python_json(v.at("value")) == v.at("expected").get<std::string>());
  }
}

TEST_CASE("the checkpoint's template is identified and an unknown one refused unless a variant is forced") {
  const fs::path official = kChatDir / "qwen3-tokenizer" / "tokenizer_config.json";
  const std::string config_text = qwen::testing::read_file(official);
  const std::string text = qwen::io::parse_json_strict(config_text, "config").at("chat_template").get<std::string>();
  REQUIRE(ChatTemplate::identify(text) != nullptr);
  CHECK(ChatTemplate::identify(text + "\n") == nullptr);
  std::string changed = text;
  changed[changed.find("tool_response")] = 'T';
  CHECK(ChatTemplate::identify(changed) == nullptr);

  qwen::testing::ScratchDir dir("chat-template");
  qwen::testing::write_file(dir / "tokenizer_config.json", config_text);
  // transformers 5 reads chat_template.jinja in preference to tokenizer_config.json.
  qwen::testing::write_file(dir / "chat_template.jinja", changed);
  const std::string jinja = (dir / "chat_template.jinja").string();
  CHECK_THROWS_AS(ChatTemplate::from_directory(dir.path()), qwen::ConfigError);
  CHECK_THROWS_WITH(ChatTemplate::from_directory(dir.path()),
                    Catch::Contains(jinja) && Catch::Contains("is not one qwen implements (known: qwen3)") &&
                        Catch::Contains("4116 bytes"));
  CHECK(ChatTemplate::from_directory(dir.path(), "qwen3").variant_name() == "qwen3");
  CHECK_THROWS_WITH(ChatTemplate::from_directory(dir.path(), "qwen3-2507"),
                    Catch::Contains("variant 'qwen3-2507' is unknown (known: qwen3)"));
  qwen::testing::write_file(dir / "chat_template.jinja", "");
  CHECK_THROWS_WITH(ChatTemplate::from_directory(dir.path()), Catch::Contains(jinja + ": no chat template"));
  fs::remove(dir / "chat_template.jinja");
  CHECK(ChatTemplate::from_directory(dir.path()).variant_name() == "qwen3");
  fs::remove(dir / "tokenizer_config.json");
  CHECK_THROWS_WITH(ChatTemplate::from_directory(dir.path()), Catch::Contains("tokenizer_config.json: file not found"));
}

TEST_CASE("a bad request is a ChatRequestError naming the message index and the field") {
  const ChatTemplate qwen3 = ChatTemplate::variant("qwen3");
  const struct {
    const char* request;
    const char* message;
  } cases[] = {
      {R"([1])", "chat request: request: must be a JSON object, got [1]"},
      {R"({})", "chat request: messages: missing"},
      {R"({"messages": {"role": "user"}})", "chat request: messages: must be a list of messages"},
      {R"({"messages": "hi"})", "chat request: messages: must be a list of messages, got \"hi\""},
      {R"({"messages": []})", "chat request: messages: the list is empty"},
      {R"({"messages": [7]})", "chat request: messages[0]: must be an object"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "developer", "content": "b"}]})",
       "chat request: messages[1].role: unknown role \"developer\" (expected system, user, assistant or tool)"},
      {R"({"messages": [{"content": "a"}]})", "chat request: messages[0].role: missing"},
      {R"({"messages": [{"role": 1, "content": "a"}]})", "chat request: messages[0].role: must be a string, got 1"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "user"}]})",
       "chat request: messages[1].content: missing (required for a user message)"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": null}]})",
       "chat request: messages[1].content: missing (required for a tool message)"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant"}]})",
       "chat request: messages[1].content: missing (required for an assistant message without tool_calls)"},
      {R"({"messages": [{"role": "user", "content": 5}]})",
       "chat request: messages[0].content: must be a string or a list of text parts, got 5"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})",
       "chat request: messages[0].content[0].type: only text parts are supported, got \"image_url\""},
      {R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})", "chat request: messages[0].content[0].text: missing"},
      {R"({"messages": [{"role": "user", "content": ["a"]}]})", "chat request: messages[0].content[0]: must be a text part"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "", "tool_calls": [1]}]})",
       "chat request: messages[1].tool_calls[0]: must be an object, got 1"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "", "tool_calls": {"name": "f"}}]})",
       "chat request: messages[1].tool_calls: must be a list"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]})",
       "chat request: messages[1].tool_calls[0].function.name: missing"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]})",
       "chat request: messages[1].tool_calls[0].function.arguments: missing"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": [1]}}]}]})",
       "chat request: messages[1].tool_calls[0].function.arguments: must be a JSON string or an object, got [1]"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"type": "code", "function": {"name": "f", "arguments": "{}"}}]}]})",
       "chat request: messages[1].tool_calls[0].type: must be \"function\", got \"code\""},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "reasoning_content": 3}]})",
       "chat request: messages[1].reasoning_content: must be a string or null, got 3"},
      {R"({"messages": [{"role": "user", "content": "a"}], "tools": {}})", "chat request: tools: must be a list of tools"},
      {R"({"messages": [{"role": "user", "content": "a"}], "tools": ["f"]})", "chat request: tools[0]: must be an object"},
      {R"({"messages": [{"role": "user", "content": "a"}], "tools": [{"type": "function"}]})", "chat request: tools[0].function: missing"},
      {R"({"messages": [{"role": "user", "content": "a"}], "tools": [{"function": {"name": "f"}}]})", "chat request: tools[0].type: missing"},
      {R"({"messages": [{"role": "user", "content": "a"}], "tools": [{"type": "function", "function": {"description": "d"}}]})",
       "chat request: tools[0].function.name: missing"},
      {R"({"messages": [{"role": "user", "content": "a"}], "add_generation_prompt": "yes"})",
       "chat request: add_generation_prompt: must be true or false, got \"yes\""},
      {R"({"messages": [{"role": "user", "content": "a"}], "chat_template_kwargs": []})", "chat request: chat_template_kwargs: must be an object"},
      {R"({"messages": [{"role": "user", "content": "a"}], "chat_template_kwargs": {"enable_thinking": 0}})",
       "chat request: chat_template_kwargs.enable_thinking: must be true or false, got 0"},
  };
  for (const auto& c : cases) {
    INFO(c.request);
    const ordered_json request = request_of(c.request);
    CHECK_THROWS_AS(qwen::chat::render(request, qwen3), qwen::chat::ChatRequestError);
    CHECK_THROWS_WITH(qwen::chat::render(request, qwen3), Catch::Contains(c.message));
  }
}

TEST_CASE("null fields count as absent and an assistant with tool_calls needs no content") {
  const ChatTemplate qwen3 = ChatTemplate::variant("qwen3");
  const ordered_json request = request_of(
      R"({"messages": [{"role": "user", "content": "a", "name": null},
                       {"role": "assistant", "content": null, "reasoning_content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]}],
          "tools": null, "add_generation_prompt": null, "chat_template_kwargs": {"enable_thinking": null, "other": 1}})");
  CHECK(qwen::chat::render(request, qwen3) ==
        "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call><|im_end|>\n<|im_start|>assistant\n");
}

// qwen-chat-render end to end: requests on stdin, prompts as JSON strings on stdout, compared with
// transformers' renders (expected_renders.json); bad input gives exit status 1 and a message.
#include <filesystem>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "qwen/io/json_file.hpp"
#include "../run_process.hpp"
#include "../scratch_dir.hpp"

namespace fs = std::filesystem;
using nlohmann::ordered_json;
using qwen::testing::run_process;
using qwen::testing::shell_quote;

namespace {

const fs::path kChatDir = QWEN_CHAT_TEST_DIR;
const std::string kTool = QWEN_CHAT_RENDER_EXE;

const ordered_json& renders() {
  static const ordered_json file = qwen::io::parse_json_strict<ordered_json>(
      qwen::io::read_small_file(kChatDir / "expected_renders.json", 16u << 20), "expected_renders.json");
  return file.at("renders");
}

qwen::testing::ProcessResult run_with_input(const std::string& args, const std::string& input) {
  qwen::testing::ScratchDir dir("chat-render");
  qwen::testing::write_file(dir / "input", input);
  return run_process(shell_quote(kTool) + " " + args + " < " + shell_quote((dir / "input").string()));
}

std::string tokenizer_arg() { return "--tokenizer " + shell_quote((kChatDir / "qwen3-tokenizer").string()); }

}  // namespace

TEST_CASE("one request on stdin gives the prompt as a JSON string as transformers renders it") {
  for (const std::size_t i : {0u, 40u, 120u}) {
    const ordered_json& c = renders().at(i);
    INFO(c.at("name").get<std::string>());
    const auto r = run_with_input(tokenizer_arg(), c.at("request").dump(2));  // pretty-printed: several lines
    REQUIRE(r.exited);
    CHECK(r.status == 0);
    CHECK(r.err.empty());
    CHECK(r.out == nlohmann::json(c.at("expected").get<std::string>()).dump() + "\n");
  }
}

TEST_CASE("jsonl mode gives one result line per request line for every reference conversation") {
  std::string input, expected;
  for (const ordered_json& c : renders()) {
    input += c.at("request").dump() + "\n";
    expected += nlohmann::json(c.at("expected").get<std::string>()).dump() + "\n";
  }
  const auto r = run_with_input(tokenizer_arg() + " --jsonl", input);
  REQUIRE(r.exited);
  CHECK(r.status == 0);
  CHECK(r.err.empty());
  CHECK(r.out == expected);
  // Without the final newline the last line is still a request.
  input.pop_back();
  CHECK(run_with_input(tokenizer_arg() + " --jsonl", input).out == expected);
}

TEST_CASE("bad input gives exit status 1 and names the line and message index and field with nothing on stdout") {
  const std::string good = R"({"messages": [{"role": "user", "content": "hi"}]})";
  const struct {
    std::string args, input, message;
  } cases[] = {
      {" --jsonl", good + "\n" + R"({"messages": [{"role": "robot", "content": "x"}]})" + "\n",
       "line 2: chat request: messages[0].role: unknown role \"robot\""},
      {" --jsonl", good + "\n\n" + good + "\n", "line 2: <stdin>: the line is empty"},
      {" --jsonl", good + "\n{\"messages\": [\n", "line 2: <stdin>: not valid JSON"},
      {"", R"({"messages": [{"role": "assistant", "tool_calls": ["f"]}]})", "chat request: messages[0].tool_calls[0]: must be an object"},
      {"", R"({"messages": {"role": "user", "content": "hi"}})", "chat request: messages: must be a list of messages"},
      {"", R"({"messages": [{"role": "user"}]})", "chat request: messages[0].content: missing"},
      {"", good + good, "<stdin>: not valid JSON"},
      {"", "", "<stdin>: not valid JSON"},
      {" --variant qwen9", good, "chat template variant 'qwen9' is unknown (known: qwen3)"},
  };
  for (const auto& c : cases) {
    INFO(c.input);
    const auto r = run_with_input(tokenizer_arg() + c.args, c.input);
    REQUIRE(r.exited);
    CHECK(r.status == 1);
    CHECK(r.out.empty());
    CHECK(r.err.find(c.message) != std::string::npos);
  }
}

TEST_CASE("an unknown template is refused unless a variant is forced and a missing directory is an error") {
  qwen::testing::ScratchDir dir("chat-render-template");
  qwen::testing::write_file(dir / "tokenizer_config.json", R"({"chat_template": "{{ messages }}"})");
  const std::string request = R"({"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"enable_thinking": false}})";
  const std::string args = "--tokenizer " + shell_quote(dir.path().string());
  auto r = run_with_input(args, request);
  REQUIRE(r.exited);
  CHECK(r.status == 1);
  CHECK(r.err.find("tokenizer_config.json: the chat template (14 bytes") != std::string::npos);
  r = run_with_input(args + " --variant qwen3", request);
  CHECK(r.status == 0);
  CHECK(r.out == R"("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")" "\n");
  r = run_with_input("--tokenizer " + shell_quote((dir / "absent").string()), request);
  CHECK(r.status == 1);
  CHECK(r.err.find("tokenizer_config.json: file not found") != std::string::npos);
  r = run_with_input("", request);
  CHECK(r.status == 1);
  CHECK(r.err.find("--tokenizer is required") != std::string::npos);
}

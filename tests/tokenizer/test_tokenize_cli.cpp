// qwen-tokenize on the test corpus (expected ids from Hugging Face, made by make_expected.py) and
// on bad input: exit status 1 with the reason on stderr, never a crash.
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "../run_process.hpp"
#include "../scratch_dir.hpp"

namespace {

using nlohmann::json;
using qwen::testing::run_process;
using qwen::testing::shell_quote;

const std::string kFixtures = QWEN_TOKENIZER_FIXTURES;
const std::string kTokenizer = QWEN_SHARED_DIR "/models/qwen3-tokenizer";
// A 504-token tokenizer with Qwen3's pre-tokenizer, added tokens and chat template (the golden
// fixtures'): the refusals that do not depend on the vocabulary use it, since loading Qwen3's
// 151,669 tokens is most of a refused run's time (seconds each under the sanitizers).
const std::string kTinyTokenizer = QWEN_TINY_TOKENIZER;

std::string tool(const std::string& flags, const std::string& tokenizer = kTokenizer) {
  return shell_quote(QWEN_TOKENIZE_EXE) + " --tokenizer " + shell_quote(tokenizer) + flags;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

TEST_CASE("qwen-tokenize --jsonl gives Hugging Face's ids for every corpus line", "[tokenize-cli]") {
  const auto r = run_process(tool(" --jsonl < " + shell_quote(kFixtures + "/corpus.jsonl")));
  REQUIRE(r.exited);
  INFO(r.err);
  REQUIRE(r.status == 0);
  const auto got = lines_of(r.out);
  const auto want = lines_of(qwen::testing::read_file(kFixtures + "/expected_lines.jsonl"));
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("line " << i);
    REQUIRE(json::parse(got[i]) == json::parse(want[i])["ids"]);
  }
}

TEST_CASE("qwen-tokenize encodes stdin as one text and --decode gives the text back", "[tokenize-cli]") {
  qwen::testing::ScratchDir dir("tokenize-cli");
  std::string text;
  for (const std::string& line : lines_of(qwen::testing::read_file(kFixtures + "/corpus.jsonl")))
    text += json::parse(line).get<std::string>() + "\n";
  text.pop_back();
  qwen::testing::write_file(dir / "text.txt", text);
  const json expected = json::parse(qwen::testing::read_file(kFixtures + "/expected_text.json"));

  const auto encoded = run_process(tool(" < " + shell_quote((dir / "text.txt").string())));
  REQUIRE(encoded.exited);
  INFO(encoded.err);
  REQUIRE(encoded.status == 0);
  CHECK(json::parse(encoded.out) == expected["ids"]);

  qwen::testing::write_file(dir / "ids.json", expected["ids"].dump());
  const auto decoded = run_process(tool(" --decode < " + shell_quote((dir / "ids.json").string())));
  REQUIRE(decoded.exited);
  REQUIRE(decoded.status == 0);
  CHECK(decoded.out == expected["decoded"].get<std::string>());
}

TEST_CASE("qwen-tokenize refuses bad input with a message and exit status 1", "[tokenize-cli]") {
  qwen::testing::ScratchDir dir("tokenize-cli");
  struct Case {
    const char* what;
    std::string input;
    std::string flags;
    std::string message;
    std::string tokenizer = kTinyTokenizer;
  };
  const Case cases[] = {
      {"invalid UTF-8", "ok \xE4\xBD", "", "text is not valid UTF-8: byte 0xE4 at offset 3"},
      {"id out of range", "[9707, 151669]", " --decode", "token id 151669 at index 1 is not in the vocabulary", kTokenizer},
      {"not a JSON string", "\"fine\"\n42\n", " --jsonl", "stdin line 2: expected a JSON string, got 42"},
      {"not JSON", "[1, 2", " --decode", "stdin: not valid JSON"},
      {"not an id", "[1, \"2\"]", " --decode", "stdin: element 1 is \"2\", not a token id"},
      {"missing tokenizer", "x", "", "none: file not found", (dir / "none").string()},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    qwen::testing::write_file(dir / "input", c.input);
    const auto r = run_process(tool(c.flags + " < " + shell_quote((dir / "input").string()), c.tokenizer));
    REQUIRE(r.exited);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains(c.message));
    // Nothing is printed, also not --jsonl's good first line (all or nothing, as --chat --jsonl).
    CHECK(r.out.empty());
  }
  // stdin that is a directory, or endless: a read error, or the size limit, named.
  const std::pair<std::string, std::string> sources[] = {
      {" < /", "qwen-tokenize: error: stdin: read failed: Is a directory"},
      {" --jsonl < /", "qwen-tokenize: error: stdin: read failed: Is a directory"},
      {" < /dev/zero", "qwen-tokenize: error: stdin: more than the limit of 268435456 bytes (256 MiB)"},
      {" --bogus < /dev/null", "qwen-tokenize: error: "},  // a usage error, in the same form
  };
  for (const auto& [redirect, message] : sources) {
    INFO(redirect);
    const auto r = run_process(tool(redirect, kTinyTokenizer));
    REQUIRE(r.exited);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains(message));
    CHECK(r.out.empty());
  }
  // --lenient: invalid bytes become U+FFFD; the ids are Hugging Face's for the repaired text.
  qwen::testing::write_file(dir / "input", "abc\xFF" "def");
  const auto lenient = run_process(tool(" --lenient < " + shell_quote((dir / "input").string())));
  REQUIRE(lenient.exited);
  CHECK(lenient.status == 0);
  const json invalid = json::parse(qwen::testing::read_file(kFixtures + "/expected_invalid.json"));
  REQUIRE(invalid[0]["hex"] == "616263ff646566");
  CHECK(json::parse(lenient.out) == invalid[0]["lenient_ids"]);
}

// --chat: the requests of tests/chat/expected_renders.json (160 renders by transformers'
// apply_chat_template) give transformers' ids (expected_chat_ids.jsonl, made by
// tests/chat/make_expected_chat_ids.py) and, with --text, transformers' rendered text.
TEST_CASE("qwen-tokenize --chat gives transformers' apply_chat_template ids and text", "[tokenize-cli]") {
  qwen::testing::ScratchDir dir("tokenize-chat");
  // ordered_json: the requests' key order is part of what the template renders (tools via tojson).
  const auto renders = nlohmann::ordered_json::parse(qwen::testing::read_file(QWEN_CHAT_TEST_DIR "/expected_renders.json"))["renders"];
  const auto expected_ids = lines_of(qwen::testing::read_file(QWEN_CHAT_TEST_DIR "/expected_chat_ids.jsonl"));
  REQUIRE(renders.size() == expected_ids.size());
  REQUIRE(renders.size() >= 60);
  std::string requests;
  for (const auto& c : renders) requests += c["request"].dump() + "\n";
  qwen::testing::write_file(dir / "requests.jsonl", requests);

  const auto ids = run_process(tool(" --chat --jsonl < " + shell_quote((dir / "requests.jsonl").string())));
  REQUIRE(ids.exited);
  INFO(ids.err);
  REQUIRE(ids.status == 0);
  const auto got = lines_of(ids.out);
  REQUIRE(got.size() == renders.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    const json want = json::parse(expected_ids[i]);
    INFO("request " << i << ": " << want["name"]);
    REQUIRE(want["name"].get<std::string>() == renders[i]["name"].get<std::string>());
    CHECK(json::parse(got[i]) == want["ids"]);
  }

  const auto text = run_process(tool(" --chat --text --jsonl < " + shell_quote((dir / "requests.jsonl").string())));
  REQUIRE(text.exited);
  REQUIRE(text.status == 0);
  const auto rendered = lines_of(text.out);
  REQUIRE(rendered.size() == renders.size());
  for (std::size_t i = 0; i < rendered.size(); ++i) {
    INFO("request " << i << ": " << renders[i]["name"]);
    CHECK(json::parse(rendered[i]).get<std::string>() == renders[i]["expected"].get<std::string>());
  }

  // One request on stdin (not --jsonl): a pretty-printed object over several lines.
  qwen::testing::write_file(dir / "one.json", renders[5]["request"].dump(2));
  const auto one = run_process(tool(" --chat < " + shell_quote((dir / "one.json").string())));
  REQUIRE(one.exited);
  REQUIRE(one.status == 0);
  CHECK(json::parse(one.out) == json::parse(expected_ids[5])["ids"]);
}

TEST_CASE("qwen-tokenize --chat refuses bad requests naming the message and field", "[tokenize-cli]") {
  qwen::testing::ScratchDir dir("tokenize-chat");
  struct Case {
    std::string input, flags, message;
  };
  const Case cases[] = {
      {R"({"messages": [{"role": "bogus", "content": "x"}]})", " --chat", "messages[0].role"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "user"}]})", " --chat", "messages[1]"},
      {R"({"messages": {"role": "user"}})", " --chat", "messages"},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n[1]\n", " --chat --jsonl", "stdin line 2"},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n\n", " --chat --jsonl", "stdin line 2: empty line"},
      {"{}", " --chat --decode", "--chat and --decode cannot be combined"},
      {"x", " --text", "--text applies to --chat only"},
  };
  for (const Case& c : cases) {
    INFO(c.flags << " " << c.input);
    qwen::testing::write_file(dir / "input", c.input);
    const auto r = run_process(tool(c.flags + " < " + shell_quote((dir / "input").string()), kTinyTokenizer));
    REQUIRE(r.exited);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains(c.message));
    CHECK(r.out.empty());  // all or nothing
  }
}

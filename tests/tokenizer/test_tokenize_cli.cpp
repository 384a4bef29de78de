// qwen-tokenize on the test corpus (expected ids from Hugging Face, made by make_expected.py) and
// on bad input: exit status 1 with the reason on stderr, never a crash.
#include <fstream>
#include <sstream>
#include <string>
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
    std::string tokenizer = kTokenizer;
  };
  const Case cases[] = {
      {"invalid UTF-8", "ok \xE4\xBD", "", "text is not valid UTF-8: byte 0xE4 at offset 3"},
      {"id out of range", "[9707, 151669]", " --decode", "token id 151669 at index 1 is not in the vocabulary"},
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
    // --jsonl answers line by line: the good first line is printed before the bad second one.
    CHECK(r.out == (c.flags == " --jsonl" ? "[62057]\n" : ""));
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

// tokenizer.json files the tokenizer must refuse, by name: components qwen does not implement,
// and malformed content. Built from a tiny valid tokenizer.json (256 byte symbols, three merges,
// one added token) so that each case loads in microseconds; the valid one is checked against a
// hand-worked BPE result.
#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <qwen/tokenizer/tokenizer.hpp>

#include "../scratch_dir.hpp"

namespace {

using qwen::tokenizer::TokenId;
using qwen::tokenizer::Tokenizer;
using nlohmann::json;
namespace byte_level = qwen::tokenizer::byte_level;

std::string symbol(unsigned char b) { return byte_level::utf8_of_small(byte_level::char_of_byte(b)); }

// vocab: byte b -> id b; "ab" 256, "abc" 257, "Ġa" 258; added "<|x|>" 259 (special).
json tiny_tokenizer_json() {
  json vocab = json::object();
  for (unsigned b = 0; b < 256; ++b) vocab[symbol(static_cast<unsigned char>(b))] = b;
  vocab["ab"] = 256;
  vocab["abc"] = 257;
  vocab["\xC4\xA0" "a"] = 258;
  const json byte_level_component = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", json::array({{{"id", 259}, {"content", "<|x|>"}, {"single_word", false}, {"lstrip", false},
                                     {"rstrip", false}, {"normalized", false}, {"special", true}}})},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers", json::array({{{"type", "Split"},
                                        {"pattern", {{"Regex", std::string(qwen::tokenizer::kQwenSplitPattern)}}},
                                        {"behavior", "Isolated"},
                                        {"invert", false}},
                                       byte_level_component})}}},
      {"post_processor", byte_level_component},
      {"decoder", byte_level_component},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", json::array({json::array({"a", "b"}), json::array({"ab", "c"}), json::array({"\xC4\xA0", "a"})})}}},
  };
}

Tokenizer load(const json& j) { return Tokenizer(qwen::tokenizer::parse_tokenizer_json(j, "tiny/tokenizer.json")); }

}  // namespace

TEST_CASE("a tiny tokenizer.json loads and applies merges by rank", "[tokenizer][errors]") {
  const Tokenizer tok = load(tiny_tokenizer_json());
  // "abc" -> a b c -> (a,b) rank 0 -> ab c -> (ab,c) rank 1 -> abc.
  // " ab" -> Ġ a b: (a,b) rank 0 beats (Ġ,a) rank 2 -> Ġ ab, and (Ġ,ab) has no merge.
  CHECK(tok.encode("abc ab<|x|>") == std::vector<TokenId>{257, 32, 256, 259});
  CHECK(tok.decode(std::vector<TokenId>{257, 32, 256, 259}) == "abc ab<|x|>");
  CHECK(tok.decode(std::vector<TokenId>{257, 32, 256, 259}, true) == "abc ab");

  json with_ignore = tiny_tokenizer_json();
  with_ignore["model"]["ignore_merges"] = true;
  // ignore_merges: a word that is itself in the vocabulary is one token, merges or not.
  with_ignore["model"]["merges"] = json::array({json::array({"a", "b"})});
  with_ignore["model"]["vocab"].erase("abc");
  with_ignore["model"]["vocab"]["abc"] = 300;
  CHECK(load(with_ignore).encode("abc") == std::vector<TokenId>{300});
  with_ignore["model"]["ignore_merges"] = false;
  CHECK(load(with_ignore).encode("abc") == std::vector<TokenId>{256, 'c'});
}

TEST_CASE("components qwen does not implement are refused by name", "[tokenizer][errors]") {
  struct Case {
    const char* what;
    void (*edit)(json&);
    const char* message;
  };
  const Case cases[] = {
      {"NFKC normalizer", [](json& j) { j["normalizer"] = {{"type", "NFKC"}}; }, "normalizer: type \"NFKC\""},
      {"Whitespace pre-tokenizer", [](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }, "pre_tokenizer: type \"Whitespace\""},
      {"no pre-tokenizer", [](json& j) { j["pre_tokenizer"] = nullptr; }, "pre_tokenizer: no pre_tokenizer"},
      {"another regex", [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+"; }, "Split pattern \"\\s+\""},
      {"String pattern", [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"String", " "}}; }, "String pattern"},
      {"Removed behaviour", [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; }, "Split behavior \"Removed\""},
      {"inverted split", [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["invert"] = true; }, "invert = true"},
      {"ByteLevel prefix space", [](json& j) { j["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true; }, "add_prefix_space = true"},
      {"ByteLevel regex", [](json& j) { j["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = true; }, "use_regex = true"},
      {"three pre-tokenizers", [](json& j) { j["pre_tokenizer"]["pretokenizers"].push_back({{"type", "Digits"}}); }, "a Sequence of 3"},
      {"WordPiece model", [](json& j) { j["model"]["type"] = "WordPiece"; }, "model: type \"WordPiece\""},
      {"BPE dropout", [](json& j) { j["model"]["dropout"] = 0.1; }, "model: dropout 0.1"},
      {"unk token", [](json& j) { j["model"]["unk_token"] = "<unk>"; }, "unk_token \"<unk>\""},
      {"subword prefix", [](json& j) { j["model"]["continuing_subword_prefix"] = "##"; }, "continuing_subword_prefix \"##\""},
      {"word suffix", [](json& j) { j["model"]["end_of_word_suffix"] = "</w>"; }, "end_of_word_suffix \"</w>\""},
      {"byte fallback", [](json& j) { j["model"]["byte_fallback"] = true; }, "byte_fallback = true"},
      {"template post-processor", [](json& j) { j["post_processor"] = {{"type", "TemplateProcessing"}}; }, "post_processor: type \"TemplateProcessing\""},
      {"WordPiece decoder", [](json& j) { j["decoder"] = {{"type", "WordPiece"}}; }, "decoder: type \"WordPiece\""},
      {"no decoder", [](json& j) { j["decoder"] = nullptr; }, "decoder: no decoder"},
      {"truncation", [](json& j) { j["truncation"] = {{"max_length", 8}}; }, "truncation: {\"max_length\":8}"},
      {"padding", [](json& j) { j["padding"] = {{"pad_id", 0}}; }, "padding:"},
      {"lstrip", [](json& j) { j["added_tokens"][0]["lstrip"] = true; }, "added_tokens[0] (\"<|x|>\"): lstrip = true"},
      {"rstrip", [](json& j) { j["added_tokens"][0]["rstrip"] = true; }, "rstrip = true"},
      {"single_word", [](json& j) { j["added_tokens"][0]["single_word"] = true; }, "single_word = true"},
      {"normalized added token", [](json& j) { j["added_tokens"][0]["normalized"] = true; }, "normalized = true"},
  };
  for (const Case& c : cases) {
    json j = tiny_tokenizer_json();
    c.edit(j);
    INFO(c.what);
    CHECK_THROWS_AS(load(j), qwen::ConfigError);
    CHECK_THROWS_WITH(load(j), Catch::StartsWith("tiny/tokenizer.json") && Catch::Contains(c.message));
  }
}

TEST_CASE("malformed tokenizer.json content is refused with the field and value", "[tokenizer][errors]") {
  struct Case {
    const char* what;
    void (*edit)(json&);
    const char* message;
  };
  const Case cases[] = {
      {"no model", [](json& j) { j.erase("model"); }, "required field 'model' is missing"},
      {"vocab not an object", [](json& j) { j["model"]["vocab"] = json::array(); }, "field 'vocab' must be an object"},
      {"negative id", [](json& j) { j["model"]["vocab"]["ab"] = -3; }, "model.vocab: token \"ab\" has id -3"},
      {"huge id", [](json& j) { j["model"]["vocab"]["ab"] = 1 << 24; }, "model.vocab: token \"ab\" has id 16777216, expected an integer in [0, 16777215]"},
      {"huge added id", [](json& j) { j["added_tokens"][0]["id"] = 1u << 31; }, "added_tokens[0]: field 'id' must be an integer in [0, 16777215]"},
      {"token not UTF-8", [](json& j) { j["model"]["vocab"]["\xE4\xBD"] = 300; }, "model.vocab: the token with id 300 is not valid UTF-8"},
      {"added token not UTF-8", [](json& j) { j["added_tokens"][0]["content"] = "<\xFF>"; }, "added_tokens[0]: content is not valid UTF-8"},
      {"id as text", [](json& j) { j["model"]["vocab"]["ab"] = "256"; }, "model.vocab: token \"ab\" has id \"256\""},
      {"duplicate id", [](json& j) { j["model"]["vocab"]["abc"] = 256; }, "id 256 is used by"},
      {"missing byte", [](json& j) { j["model"]["vocab"].erase("a"); }, "no token for byte 0x61"},
      {"merge of an unknown token", [](json& j) { j["model"]["merges"].push_back(json::array({"zz", "a"})); }, "model.merges[3]: \"zz\" is not in the vocabulary"},
      {"merge result unknown", [](json& j) { j["model"]["merges"].push_back(json::array({"b", "c"})); }, "model.merges[3]: the merge \"bc\""},
      {"merge not a pair", [](json& j) { j["model"]["merges"][1] = 5; }, "model.merges[1] is 5"},
      {"merge string without space", [](json& j) { j["model"]["merges"][1] = "abc"; }, "model.merges[1] is \"abc\", expected \"left right\""},
      {"merges not a list", [](json& j) { j["model"]["merges"] = "a b"; }, "field 'merges' must be a list"},
      {"added token without id", [](json& j) { j["added_tokens"][0].erase("id"); }, "added_tokens[0]: required field 'id' is missing"},
      {"added token id clash", [](json& j) { j["added_tokens"][0]["id"] = 256; }, "added token \"<|x|>\" has id 256, which is \"ab\""},
      {"empty added token", [](json& j) { j["added_tokens"][0]["content"] = ""; }, "added_tokens[0]: content is empty"},
      {"added_tokens not a list", [](json& j) { j["added_tokens"] = 1; }, "field 'added_tokens' must be a list"},
      {"root not an object", [](json& j) { j = json::array(); }, "expected a JSON object"},
  };
  for (const Case& c : cases) {
    json j = tiny_tokenizer_json();
    c.edit(j);
    INFO(c.what);
    CHECK_THROWS_AS(load(j), qwen::Error);
    CHECK_THROWS_WITH(load(j), Catch::StartsWith("tiny/tokenizer.json") && Catch::Contains(c.message));
  }
}

TEST_CASE("unreadable tokenizer.json files are refused with the path", "[tokenizer][errors]") {
  qwen::testing::ScratchDir dir("tokenizer");
  CHECK_THROWS_AS(Tokenizer::from_file(dir.path()), qwen::IoError);  // directory without tokenizer.json
  CHECK_THROWS_WITH(Tokenizer::from_file(dir.path()), Catch::Contains("tokenizer.json: file not found"));
  const std::string text = tiny_tokenizer_json().dump();
  qwen::testing::write_file(dir / "tokenizer.json", text.substr(0, text.size() / 2));
  CHECK_THROWS_AS(Tokenizer::from_file(dir.path()), qwen::FormatError);
  CHECK_THROWS_WITH(Tokenizer::from_file(dir.path()), Catch::Contains("tokenizer.json: not valid JSON"));
  qwen::testing::write_file(dir / "tokenizer.json", "{\"model\": \"\xff\"}");
  CHECK_THROWS_WITH(Tokenizer::from_file(dir.path()), Catch::Contains("not valid UTF-8 (byte 11"));
  qwen::testing::write_file(dir / "tokenizer.json", text);
  CHECK(Tokenizer::from_file(dir / "tokenizer.json").encode("ab") == std::vector<TokenId>{256});
}

// The tokenizer against Hugging Face tokenizers: the expected ids and texts in this directory were
// written by make_expected.py with the reference library (see its header); nothing here is
// produced by the code under test. The real Qwen3 tokenizer.json is parsed once per executable.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <qwen/tokenizer/stream_decoder.hpp>
#include <qwen/tokenizer/tokenizer.hpp>

#include "../scratch_dir.hpp"

namespace {

using qwen::tokenizer::StreamDecoder;
using qwen::tokenizer::TokenId;
using qwen::tokenizer::Tokenizer;
using qwen::tokenizer::Utf8Mode;
using nlohmann::json;

const std::string kFixtures = QWEN_TOKENIZER_FIXTURES;
const std::string kQwenTokenizerDir = QWEN_SHARED_DIR "/models/qwen3-tokenizer";

using qwen::testing::read_file;

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> out;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

const Tokenizer& qwen3() {
  static const Tokenizer* tokenizer = [] {
    const auto start = std::chrono::steady_clock::now();
    auto* t = new Tokenizer(qwen::tokenizer::read_tokenizer_json(kQwenTokenizerDir));
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "tokenizer: loaded %s/tokenizer.json in %.0f ms\n", kQwenTokenizerDir.c_str(), ms);
    return t;
  }();
  return *tokenizer;
}

const std::vector<std::string>& corpus_lines() {
  static const std::vector<std::string> lines = [] {
    std::vector<std::string> out;
    for (const json& j : read_jsonl(kFixtures + "/corpus.jsonl")) out.push_back(j.get<std::string>());
    return out;
  }();
  return lines;
}

std::vector<TokenId> ids_of(const json& j) { return j.get<std::vector<TokenId>>(); }

// Streams `ids` through a StreamDecoder and checks, at every prefix, that the text emitted so far
// is a prefix of `expected` (the one-shot decode of all ids) and that at most one unfinished
// character is held back; at the end, that emitted + finish() == expected. O(total length).
void check_stream_prefixes(const Tokenizer& tok, const std::vector<TokenId>& ids, const std::string& expected, bool skip_special) {
  StreamDecoder stream(tok, skip_special);
  std::size_t emitted = 0;
  for (std::size_t k = 0; k < ids.size(); ++k) {
    const std::string piece = stream.push(ids[k]);
    if (expected.compare(emitted, piece.size(), piece) != 0) {
      INFO("after id #" << k << " (" << ids[k] << ") the stream emitted '" << piece << "' at byte " << emitted);
      FAIL("stream output is not a prefix of the one-shot decode");
    }
    emitted += piece.size();
    REQUIRE(stream.pending_bytes() <= 3);
  }
  const std::string rest = stream.finish();
  CHECK(expected.compare(emitted, std::string::npos, rest) == 0);
  CHECK(emitted + rest.size() == expected.size());
}

}  // namespace

// One test case, so that ctest (one process per test case) parses the 11 MB tokenizer.json once.
TEST_CASE("the Qwen3 tokenizer against Hugging Face tokenizers", "[tokenizer]") {
  SECTION("every corpus line encodes to Hugging Face's ids and decodes to its text") {
    const Tokenizer& tok = qwen3();
    const auto& lines = corpus_lines();
    const auto expected = read_jsonl(kFixtures + "/expected_lines.jsonl");
    REQUIRE(lines.size() >= 2000);
    REQUIRE(expected.size() == lines.size());
    std::size_t mismatched = 0;
    for (std::size_t i = 0; i < lines.size(); ++i) {
      const std::vector<TokenId> want = ids_of(expected[i]["ids"]);
      const std::vector<TokenId> got = tok.encode(lines[i]);
      if (got != want && ++mismatched <= 5) {
        INFO("line " << i << ": " << json(lines[i]).dump() << "\n  got  " << json(got).dump() << "\n  want " << json(want).dump());
        CHECK(got == want);
      }
      if (tok.decode(want) != expected[i]["decoded"].get<std::string>() && ++mismatched <= 5) {
        INFO("line " << i << ": decode(ids) differs");
        CHECK(tok.decode(want) == expected[i]["decoded"].get<std::string>());
      }
      if (tok.decode(want, true) != expected[i]["decoded_skip_special"].get<std::string>() && ++mismatched <= 5) {
        INFO("line " << i << ": decode(ids, skip_special_tokens) differs");
        CHECK(tok.decode(want, true) == expected[i]["decoded_skip_special"].get<std::string>());
      }
    }
    CHECK(mismatched == 0);
  }

  SECTION("random strings of regex- and NFC-sensitive characters encode as Hugging Face does") {
    std::size_t mismatched = 0, count = 0;
    for (const json& e : read_jsonl(kFixtures + "/expected_fuzz.jsonl")) {
      ++count;
      const std::vector<TokenId> got = qwen3().encode(e["text"].get<std::string>());
      if (got != ids_of(e["ids"]) && ++mismatched <= 5) {
        INFO(e["text"].dump() << "\n  got  " << json(got).dump() << "\n  want " << e["ids"].dump());
        CHECK(got == ids_of(e["ids"]));
      }
    }
    CHECK(count == 4000);
    CHECK(mismatched == 0);
  }
  SECTION("the whole corpus as one text encodes and decodes as Hugging Face does") {
    const Tokenizer& tok = qwen3();
    std::string text;
    for (const std::string& line : corpus_lines()) text += line + "\n";
    text.pop_back();
    const json expected = json::parse(read_file(kFixtures + "/expected_text.json"));
    const std::vector<TokenId> want = ids_of(expected["ids"]);
    const std::vector<TokenId> got = tok.encode(text);
    REQUIRE(got.size() == want.size());
    std::size_t first_difference = got.size();
    for (std::size_t i = 0; i < got.size() && first_difference == got.size(); ++i)
      if (got[i] != want[i]) first_difference = i;
    CHECK(first_difference == got.size());
    CHECK(tok.decode(want) == expected["decoded"].get<std::string>());
    CHECK(tok.decode(want, true) == expected["decoded_skip_special"].get<std::string>());
  }

  SECTION("the streaming detokenizer equals the one-shot decode at every prefix") {
    const Tokenizer& tok = qwen3();
    SECTION("the whole corpus' token stream, with and without special tokens") {
      const json expected = json::parse(read_file(kFixtures + "/expected_text.json"));
      check_stream_prefixes(tok, ids_of(expected["ids"]), expected["decoded"].get<std::string>(), false);
      check_stream_prefixes(tok, ids_of(expected["ids"]), expected["decoded_skip_special"].get<std::string>(), true);
    }
    SECTION("each line: emitted text plus finish() is the decode of every prefix") {
      const auto expected = read_jsonl(kFixtures + "/expected_lines.jsonl");
      for (const json& e : expected) {
        const std::vector<TokenId> ids = ids_of(e["ids"]);
        StreamDecoder stream(tok);
        std::string emitted;
        for (std::size_t k = 0; k < ids.size(); ++k) {
          emitted += stream.push(ids[k]);
          StreamDecoder copy = stream;
          const std::vector<TokenId> prefix(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k) + 1);
          REQUIRE(emitted + copy.finish() == tok.decode(prefix));
        }
      }
    }
    SECTION("byte tokens that are not UTF-8, as Hugging Face decodes them") {
      for (const json& c : json::parse(read_file(kFixtures + "/expected_decode.json"))) {
        const std::vector<TokenId> ids = ids_of(c["ids"]);
        INFO("ids " << c["ids"].dump());
        CHECK(tok.decode(ids) == c["decoded"].get<std::string>());
        CHECK(tok.decode(ids, true) == c["decoded_skip_special"].get<std::string>());
        check_stream_prefixes(tok, ids, c["decoded"].get<std::string>(), false);
        check_stream_prefixes(tok, ids, c["decoded_skip_special"].get<std::string>(), true);
      }
    }
  }

  SECTION("invalid UTF-8: strict mode names the byte offset, lenient mode replaces with U+FFFD") {
    const Tokenizer& tok = qwen3();
    const json cases = json::parse(read_file(kFixtures + "/expected_invalid.json"));
    REQUIRE(cases.size() >= 10);
    for (const json& c : cases) {
      std::string raw;
      const std::string hex = c["hex"].get<std::string>();
      for (std::size_t i = 0; i < hex.size(); i += 2) raw.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
      INFO("input " << hex);
      const std::size_t offset = c["offset"].get<std::size_t>();
      try {
        (void)tok.encode(raw);
        FAIL("strict encode accepted invalid UTF-8");
      } catch (const qwen::tokenizer::InvalidUtf8& e) {
        CHECK(e.byte_offset() == offset);
        CHECK_THAT(e.what(), Catch::Contains("offset " + std::to_string(offset)));
      }
      CHECK(tok.encode(raw, Utf8Mode::Lenient) == ids_of(c["lenient_ids"]));
      CHECK(tok.encode(c["lenient_text"].get<std::string>()) == ids_of(c["lenient_ids"]));
    }
  }

  SECTION("random bytes: lenient encode then decode gives back the repaired, NFC-normalised text") {
    // Byte-level BPE loses nothing after normalisation: decode(encode(x)) == NFC(x) for valid x.
    // The reference for NFC is utf8proc on the whole string; the repaired text must be valid.
    const unsigned char pool[] = {'a', 'Z', ' ', '\n', '\r', '\t', '\'', 's', '1', '<', '|', '>', 0x80, 0xBF, 0xC3, 0xA9,
                                  0xCC, 0x81, 0xE4, 0xBD, 0xA0, 0xF0, 0x9F, 0x98, 0xFF, 0xED, 0xE1, 0x84};
    std::uint32_t state = 12345;
    const auto next = [&] { return state = state * 1664525u + 1013904223u, state >> 8; };
    for (int n = 0; n < 3000; ++n) {
      std::string raw;
      for (std::uint32_t k = next() % 24; k > 0; --k) raw += static_cast<char>(pool[next() % sizeof pool]);
      if (next() % 4 == 0) raw.insert(next() % (raw.size() + 1), "<|im_end|>");
      const std::vector<TokenId> ids = qwen3().encode(raw, Utf8Mode::Lenient);
      std::string repaired;
      qwen::tokenizer::unicode::append_lossy(repaired, raw);
      REQUIRE(qwen::tokenizer::unicode::first_invalid(repaired) == std::string::npos);
      utf8proc_uint8_t* nfc = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(repaired.c_str()));
      REQUIRE(nfc != nullptr);
      const std::string expected(reinterpret_cast<const char*>(nfc));
      std::free(nfc);
      INFO(json(repaired).dump());
      REQUIRE(qwen3().decode(ids) == expected);
    }
  }

  SECTION("decode refuses ids that name no token") {
    const Tokenizer& tok = qwen3();
    REQUIRE(tok.id_count() == 151669);
    for (const TokenId bad : {-1, 151669, 1 << 30}) {
      const std::vector<TokenId> ids{9707, bad};
      INFO("id " << bad);
      CHECK_THROWS_WITH(tok.decode(ids), Catch::Contains("token id " + std::to_string(bad) + " at index 1"));
      StreamDecoder stream(tok);
      CHECK(stream.push(9707) == "Hello");
      CHECK_THROWS_AS(stream.push(bad), qwen::InvalidArgument);
      CHECK(stream.push(9707) == "Hello");  // still usable
    }
  }

  SECTION("special tokens and Qwen3's flags") {
    const Tokenizer& tok = qwen3();
    CHECK(tok.token_to_id("<|im_end|>") == 151645);
    CHECK(tok.token_to_id("<think>") == 151667);
    CHECK(tok.is_special(151645));
    CHECK_FALSE(tok.is_special(151667));  // <think> is an added token, not a special one
    CHECK(tok.encode("<|im_start|>user\nhi<|im_end|>") == std::vector<TokenId>{151644, 872, 198, 6023, 151645});
  }
}

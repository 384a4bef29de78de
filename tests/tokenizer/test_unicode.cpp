// The tokenizer's Unicode pieces against independent references: NFC of whole strings by utf8proc
// (the tokenizer normalises only the stretches around characters NFC can change), a naive
// U+FFFD substitution written here, and the streaming detokenizer against one-shot decode on
// random byte tokens.
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <qwen/tokenizer/stream_decoder.hpp>
#include <qwen/tokenizer/tokenizer.hpp>

namespace {

namespace unicode = qwen::tokenizer::unicode;
namespace byte_level = qwen::tokenizer::byte_level;
using qwen::tokenizer::TokenId;

std::string utf8(char32_t cp) {
  std::string s;
  if (cp < 0x80) s += static_cast<char>(cp);
  else if (cp < 0x800) s += static_cast<char>(0xC0 | (cp >> 6)), s += static_cast<char>(0x80 | (cp & 0x3F));
  else if (cp < 0x10000)
    s += static_cast<char>(0xE0 | (cp >> 12)), s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), s += static_cast<char>(0x80 | (cp & 0x3F));
  else
    s += static_cast<char>(0xF0 | (cp >> 18)), s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
        s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), s += static_cast<char>(0x80 | (cp & 0x3F));
  return s;
}

std::string whole_nfc(const std::string& s) {
  utf8proc_uint8_t* out = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(s.c_str()));
  REQUIRE(out != nullptr);
  std::string r(reinterpret_cast<const char*>(out));
  std::free(out);
  return r;
}

// Naive U+FFFD substitution of maximal subparts: try the longest prefix (4..1 bytes) that is a
// valid sequence or a prefix of one, straight from the table of well-formed sequences (Unicode
// Table 3-7).
bool could_start_valid(const std::string& bytes) {
  static const std::vector<std::vector<std::pair<int, int>>> forms = {
      {{0x00, 0x7F}},
      {{0xC2, 0xDF}, {0x80, 0xBF}},
      {{0xE0, 0xE0}, {0xA0, 0xBF}, {0x80, 0xBF}},
      {{0xE1, 0xEC}, {0x80, 0xBF}, {0x80, 0xBF}},
      {{0xED, 0xED}, {0x80, 0x9F}, {0x80, 0xBF}},
      {{0xEE, 0xEF}, {0x80, 0xBF}, {0x80, 0xBF}},
      {{0xF0, 0xF0}, {0x90, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
      {{0xF1, 0xF3}, {0x80, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
      {{0xF4, 0xF4}, {0x80, 0x8F}, {0x80, 0xBF}, {0x80, 0xBF}}};
  for (const auto& form : forms) {
    if (bytes.size() > form.size()) continue;
    bool ok = true;
    for (std::size_t i = 0; i < bytes.size() && ok; ++i) {
      const int b = static_cast<unsigned char>(bytes[i]);
      ok = b >= form[i].first && b <= form[i].second;
    }
    if (ok) return true;
  }
  return false;
}
std::string naive_lossy(const std::string& s) {
  std::string out;
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t len = 0;  // longest prefix that could start a valid sequence
    for (std::size_t k = 1; k <= 4 && i + k <= s.size(); ++k)
      if (could_start_valid(s.substr(i, k))) len = k;
    const std::string piece = s.substr(i, len);
    const bool complete = len > 0 && [&] {
      const auto c = static_cast<unsigned char>(piece[0]);
      return len == (c < 0x80 ? 1u : c < 0xE0 ? 2u : c < 0xF0 ? 3u : 4u);
    }();
    if (complete) out += piece;
    else out += "\xEF\xBF\xBD";
    i += len == 0 ? 1 : len;
  }
  return out;
}

}  // namespace

TEST_CASE("NFC by stretches equals utf8proc's NFC of the whole string", "[tokenizer][unicode]") {
  // Starters, combining marks (including ones that reorder), Hangul jamo and syllables,
  // singletons (U+212B ANGSTROM SIGN), composition exclusions (U+0958), ASCII.
  const std::vector<char32_t> pool = {'a', 'e', 'o', 'A', ' ', 'n', 0xE9, 0x0301, 0x0308, 0x0323, 0x0327, 0x0304, 0x031B,
                                      0x0345, 0x1100, 0x1161, 0x11A8, 0xAC00, 0xAC01, 0x212B, 0x0958, 0x093C, 0x0915,
                                      0x4E2D, 0x1F600, 0x0F73, 0x0F71, 0x0F72, 0x05B8, 0x05B7, 0x3099, 0x304B, 0xFF76};
  std::mt19937 rng(7);
  for (int n = 0; n < 20000; ++n) {
    std::string s;
    const int len = 1 + static_cast<int>(rng() % 10);
    for (int k = 0; k < len; ++k) s += utf8(pool[rng() % pool.size()]);
    std::string got;
    unicode::append_nfc(got, s);
    INFO(nlohmann::json(s).dump());
    REQUIRE(got == whole_nfc(s));
  }
}

TEST_CASE("U+FFFD substitution matches a naive maximal-subpart implementation", "[tokenizer][unicode]") {
  std::mt19937 rng(11);
  const unsigned char interesting[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF,
                                       0xE0, 0xE1, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF};
  for (int n = 0; n < 50000; ++n) {
    std::string s;
    const int len = static_cast<int>(rng() % 9);
    for (int k = 0; k < len; ++k) s += static_cast<char>(interesting[rng() % sizeof interesting]);
    std::string got;
    unicode::append_lossy(got, s);
    INFO(nlohmann::json::binary_t(std::vector<std::uint8_t>(s.begin(), s.end())).size() << " bytes");
    REQUIRE(got == naive_lossy(s));
    REQUIRE(unicode::first_invalid(got) == std::string::npos);
    REQUIRE((unicode::first_invalid(s) == std::string::npos) == (got == s));
  }
}

TEST_CASE("the streaming detokenizer equals decode on random byte tokens", "[tokenizer][stream]") {
  // A tokenizer whose ids 0..255 are the single bytes, and 256.. a few multi-byte tokens.
  nlohmann::json vocab = nlohmann::json::object();
  for (unsigned b = 0; b < 256; ++b) vocab[byte_level::utf8_of_small(byte_level::char_of_byte(static_cast<std::uint8_t>(b)))] = b;
  const nlohmann::json byte_level_component = {{"type", "ByteLevel"}};
  const nlohmann::json j = {
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", nlohmann::json::array({{{"type", "Split"}, {"pattern", {{"Regex", std::string(qwen::tokenizer::kQwenSplitPattern)}}}, {"behavior", "Isolated"}}, byte_level_component})}}},
      {"decoder", byte_level_component},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
      {"added_tokens", nlohmann::json::array({{{"id", 256}, {"content", "<s>"}, {"special", true}}, {{"id", 257}, {"content", "é"}}})},
  };
  const qwen::tokenizer::Tokenizer tok(qwen::tokenizer::parse_tokenizer_json(j, "bytes"));
  std::mt19937 rng(3);
  const TokenId interesting[] = {0x41, 0x80, 0x9F, 0xA0, 0xBF, 0xC3, 0xE4, 0xED, 0xF0, 0xF4, 0xFF, 256, 257};
  for (int n = 0; n < 20000; ++n) {
    std::vector<TokenId> ids;
    for (int k = static_cast<int>(rng() % 10); k > 0; --k) ids.push_back(interesting[rng() % std::size(interesting)]);
    for (const bool skip : {false, true}) {
      qwen::tokenizer::StreamDecoder stream(tok, skip);
      std::string streamed;
      for (const TokenId id : ids) streamed += stream.push(id);
      streamed += stream.finish();
      INFO(nlohmann::json(ids).dump());
      REQUIRE(streamed == tok.decode(ids, skip));
    }
  }
}

// Guided decoding (include/qwen/guided/): the JSON recognizer against nlohmann's parser, the
// grammars of the OpenAI API on hand-written outputs, and the token mask against stepping every
// token of the real Qwen3 vocabulary one by one.
#include <qwen/guided/grammar.hpp>
#include <qwen/guided/json_automaton.hpp>
#include <qwen/guided/token_mask.hpp>
#include <qwen/tokenizer/tokenizer.hpp>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../sanitized.hpp"

using namespace qwen::guided;

namespace {

// ---- random JSON text, written here byte by byte (not by nlohmann, the judge) ----

struct DocWriter {
  std::mt19937_64 rng;
  std::string out;

  int pick(int n) { return static_cast<int>(rng() % static_cast<std::uint64_t>(n)); }
  void ws() {
    static const char* runs[] = {"", "", "", " ", "\n", "  ", "\t", "\r\n", "\n    "};
    out += runs[pick(9)];
  }
  void utf8(char32_t c) {
    if (c < 0x80) out += static_cast<char>(c);
    else if (c < 0x800) out += static_cast<char>(0xC0 | (c >> 6)), out += static_cast<char>(0x80 | (c & 0x3F));
    else if (c < 0x10000)
      out += static_cast<char>(0xE0 | (c >> 12)), out += static_cast<char>(0x80 | ((c >> 6) & 0x3F)),
          out += static_cast<char>(0x80 | (c & 0x3F));
    else
      out += static_cast<char>(0xF0 | (c >> 18)), out += static_cast<char>(0x80 | ((c >> 12) & 0x3F)),
          out += static_cast<char>(0x80 | ((c >> 6) & 0x3F)), out += static_cast<char>(0x80 | (c & 0x3F));
  }
  void string() {
    out += '"';
    const int n = pick(8);
    for (int i = 0; i < n; ++i) {
      switch (pick(10)) {
        case 0: out += "\\n"; break;
        case 1: out += "\\\""; break;
        case 2: out += "\\\\"; break;
        case 3: out += "\\u00e9"; break;
        case 4: out += "\\uD83D\\uDE00"; break;  // a surrogate pair
        case 5: utf8(0xE9); break;                // é
        case 6: utf8(0x20AC); break;              // €
        case 7: utf8(0x1F600); break;             // 😀
        case 8: out += "\\/\\b\\f\\r\\t"; break;
        default: out += static_cast<char>('a' + pick(26)); break;
      }
    }
    out += '"';
  }
  void number() {
    static const char* numbers[] = {"0", "-0", "7", "-12", "3.25", "1e5", "-2.5E-3", "10e+2", "0.0", "123456789", "1234567890123456789.5e9"};
    out += numbers[pick(11)];
  }
  void value(int depth) {
    const int kind = depth >= 4 ? 2 + pick(4) : pick(6);
    switch (kind) {
      case 0: object(depth); break;
      case 1: array(depth); break;
      case 2: string(); break;
      case 3: number(); break;
      case 4: out += pick(2) ? "true" : "false"; break;
      default: out += "null"; break;
    }
  }
  void object(int depth) {
    out += '{';
    const int n = pick(4);
    for (int i = 0; i < n; ++i) {
      if (i) out += ',';
      ws(), string(), ws(), out += ':', ws(), value(depth + 1), ws();
    }
    if (n == 0) ws();
    out += '}';
  }
  void array(int depth) {
    out += '[';
    const int n = pick(4);
    for (int i = 0; i < n; ++i) {
      if (i) out += ',';
      ws(), value(depth + 1), ws();
    }
    if (n == 0) ws();
    out += ']';
  }
};

// nlohmann's verdict, with the recognizer's documented bounds on numbers (json_automaton.hpp):
// at most max_integer_digits before the point and max_exponent_digits in the exponent. nlohmann
// hands a SAX handler each number's text whenever it is not a plain 64-bit integer.
struct Judge : nlohmann::json_sax<nlohmann::json> {
  bool within_bounds = true;
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }   // at most 19 digits
  bool number_unsigned(number_unsigned_t) override { return true; } // at most 20 digits
  bool number_float(number_float_t, const string_t& text) override {
    const std::size_t mark = text.find_first_of("eE");
    const std::string mantissa = text.substr(0, mark);
    const std::size_t integer_digits = mantissa.substr(0, mantissa.find('.')).find_first_of("0123456789") == std::string::npos
                                           ? 0
                                           : mantissa.substr(0, mantissa.find('.')).size() - (mantissa[0] == '-' ? 1 : 0);
    std::size_t exponent_digits = 0;
    if (mark != std::string::npos)
      for (std::size_t i = mark + 1; i < text.size(); ++i) exponent_digits += text[i] >= '0' && text[i] <= '9';
    within_bounds = within_bounds && integer_digits <= max_integer_digits && exponent_digits <= max_exponent_digits;
    return true;
  }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }
};
bool valid_json(const std::string& text) {
  Judge judge;
  return nlohmann::json::sax_parse(text, &judge) && judge.within_bounds;
}

// How far the recognizer gets: the number of bytes accepted, and whether they are a whole document.
struct Run {
  std::size_t accepted = 0;
  bool complete = false;
  JsonState state;
};
Run run_json(std::string_view text, bool object_root) {
  Run r;
  r.state = json_start(object_root);
  for (const char c : text) {
    JsonState next = r.state;
    if (!json_step(next, static_cast<std::uint8_t>(c))) return r;
    r.state = next;
    ++r.accepted;
  }
  r.complete = json_complete(r.state);
  return r;
}

// Completes an accepted prefix by trying bytes in a fixed order and keeping the first the
// recognizer takes; nlohmann then judges the result. If the recognizer ever accepted a byte that
// leads nowhere, this finds no completion.
std::string complete_greedily(JsonState s) {
  static const std::uint8_t order[] = {'"', '}', ']', '0', ':', 'u', 'e', 'l', 'r', 's', 'a', 'D', 'C', '\\', 0x80, 0x90, 0xA0};
  std::string added;
  for (int step = 0; step < 200 && !json_complete(s); ++step) {
    bool moved = false;
    for (const std::uint8_t b : order) {
      JsonState next = s;
      if (json_step(next, b)) {
        s = next;
        added += static_cast<char>(b);
        moved = true;
        break;
      }
    }
    if (!moved) return added + "<stuck>";
  }
  return added;
}

}  // namespace

TEST_CASE("guided: the JSON recognizer agrees with nlohmann on random documents and on every one-byte mutation of them", "[guided]") {
  DocWriter w{std::mt19937_64(20261203), {}};
  const int documents = qwen_test::sanitized ? 300 : 2000;
  int mutations = 0, mutated_valid = 0;
  for (int d = 0; d < documents; ++d) {
    w.out.clear();
    w.ws();
    w.value(0);
    w.ws();
    const std::string doc = w.out;
    INFO("document: " << doc);
    REQUIRE(valid_json(doc));
    const Run whole = run_json(doc, false);
    CHECK(whole.accepted == doc.size());
    CHECK(whole.complete);
    // No proper prefix is complete unless nlohmann accepts it too (a root number cut short).
    for (std::size_t n = 0; n < doc.size(); ++n) {
      const Run prefix = run_json(std::string_view(doc).substr(0, n), false);
      if (prefix.complete != valid_json(doc.substr(0, n))) FAIL("prefix of " << n << " bytes: recognizer "
                                                                                   << prefix.complete << ", nlohmann differs");
    }
    // Mutations: replace, insert or delete one byte; the recognizer accepts the whole exactly when
    // nlohmann does, and whatever prefix it accepts still completes to a document nlohmann accepts.
    static const char alphabet[] = "{}[]\":,0123456789-+.eEtrufalsn \n\\/bu\xC3\xA9\x80\xED\xA0\xF4\x90\xC0\x01";
    for (int m = 0; m < 6; ++m, ++mutations) {
      std::string mutated = doc;
      const std::size_t at = static_cast<std::size_t>(w.pick(static_cast<int>(doc.size())));
      const char c = alphabet[w.pick(static_cast<int>(sizeof alphabet - 1))];
      switch (w.pick(3)) {
        case 0: mutated[at] = c; break;
        case 1: mutated.insert(mutated.begin() + static_cast<std::ptrdiff_t>(at), c); break;
        default: mutated.erase(at, 1); break;
      }
      INFO("mutated: " << mutated);
      const bool valid = valid_json(mutated);
      mutated_valid += valid ? 1 : 0;
      const Run r = run_json(mutated, false);
      CHECK((r.accepted == mutated.size() && r.complete) == valid);
      const std::string rest = complete_greedily(r.state);
      INFO("completed with: " << rest);
      CHECK(valid_json(mutated.substr(0, r.accepted) + rest));
    }
  }
  // The mutations must exercise both answers.
  INFO(mutated_valid << " of " << mutations << " mutations are valid JSON");
  CHECK(mutated_valid > mutations / 20);
  CHECK(mutated_valid < mutations * 19 / 20);
}

TEST_CASE("guided: the JSON recognizer refuses what nlohmann refuses, at the first byte that cannot lead anywhere", "[guided]") {
  struct Case {
    std::string text;
    std::size_t accepted;  // bytes before the one refused
  };
  const std::vector<Case> cases = {
      {"{\"a\": 01}", 7},                      // a leading zero
      {"[1,]", 3},                             // a trailing comma
      {"{\"a\" 1}", 5},                        // no colon
      {"\"\\uDC00\"", 4},                      // a lone low surrogate: refused at its second digit
      {"\"\\uD800x\"", 7},                     // a high surrogate not followed by a low one
      {"\"\\uD800\\u0041\"", 9},               // ... nor by another escape
      {"\"\xC0\x80\"", 1},                     // an overlong encoding
      {"\"\xED\xA0\x80\"", 2},                 // a UTF-8 surrogate
      {"\"\xF4\x90\x80\x80\"", 2},             // above U+10FFFF
      {"\"a\x01\"", 2},                        // a control character
      {"tru", 3},                              // cut short: accepted, not complete
      {"nul1", 3},
      {"-", 1},
      {"1.", 2},
      {"1.e5", 2},
  };
  for (const Case& c : cases) {
    INFO(c.text);
    const Run r = run_json(c.text, false);
    CHECK(r.accepted == c.accepted);
    CHECK(!r.complete);
    CHECK(!nlohmann::json::accept(c.text));
  }
  // Numbers that would not fit a double are cut short (valid JSON, but nlohmann refuses them).
  CHECK(run_json("1e100", false).accepted == 4);
  CHECK(run_json("-123456789012345678901", false).accepted == 21);
  CHECK(run_json("12345678901234567890.5e-99", false).complete);
  // An object root: nothing but an object, and nothing after it.
  CHECK(run_json("[1]", true).accepted == 0);
  CHECK(run_json("  {\"a\": [1, {}]}", true).complete);
  CHECK(run_json("{} ", true).accepted == 2);
  // Depth and whitespace are bounded.
  CHECK(run_json(std::string(max_json_depth, '['), false).accepted == static_cast<std::size_t>(max_json_depth));
  CHECK(run_json(std::string(max_json_depth + 1, '['), false).accepted == static_cast<std::size_t>(max_json_depth));
  CHECK(run_json("[" + std::string(max_whitespace_run + 1, ' ') + "1]", false).accepted ==
        static_cast<std::size_t>(max_whitespace_run) + 1);
}

namespace {
// How many bytes of `text` the grammar accepts, and whether it is complete after them.
std::pair<std::size_t, bool> run_grammar(const Grammar& g, std::string_view text) {
  GuideState s = guide_start(g);
  std::size_t n = 0;
  for (const char c : text) {
    GuideState next = s;
    if (!guide_step(g, next, static_cast<std::uint8_t>(c))) break;
    s = next;
    ++n;
  }
  return {n, guide_complete(g, s)};
}
bool accepts(const Grammar& g, std::string_view text) {
  const auto [n, complete] = run_grammar(g, text);
  return n == text.size() && complete;
}
}  // namespace

TEST_CASE("guided: the tool-call grammar takes exactly one call in Qwen3's format to a named function", "[guided]") {
  const std::string call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lisbon\"}}\n</tool_call>";
  const Grammar named = tool_call_grammar({"get_weather"}, ThinkBlock::none);
  CHECK(accepts(named, call));
  CHECK(accepts(named, "\n\n" + call));
  CHECK(!accepts(named, call + "\n"));  // complete at the end of the call: nothing after it
  CHECK(run_grammar(named, "<tool_call>\n{\"name\": \"get_time\"").first == std::string("<tool_call>\n{\"name\": \"get_").size());
  CHECK(!accepts(named, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": [1]}\n</tool_call>"));  // arguments must be an object
  CHECK(!accepts(named, "The weather is fine."));
  CHECK(run_grammar(named, "The").first == 0);

  const Grammar any = tool_call_grammar({"get_weather", "get_time", "get"}, ThinkBlock::none);
  CHECK(accepts(any, call));
  CHECK(accepts(any, "<tool_call>\n{\"name\": \"get\", \"arguments\": {}}\n</tool_call>"));
  CHECK(accepts(any, "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}\n</tool_call>"));
  CHECK(!accepts(any, "<tool_call>\n{\"name\": \"get_date\", \"arguments\": {}}\n</tool_call>"));
  // A name with a quote and a backslash is matched in its escaped form.
  const Grammar odd = tool_call_grammar({"say \"hi\"\\"}, ThinkBlock::none);
  CHECK(accepts(odd, "<tool_call>\n{\"name\": \"say \\\"hi\\\"\\\\\", \"arguments\": {}}\n</tool_call>"));
  CHECK(nlohmann::json::parse("{\"name\": \"say \\\"hi\\\"\\\\\"}")["name"] == "say \"hi\"\\");
  CHECK_THROWS(tool_call_grammar({}, ThinkBlock::none));
}

TEST_CASE("guided: a think block comes first when the prompt leaves thinking on", "[guided]") {
  const std::string call = "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>";
  const Grammar optional = tool_call_grammar({"f"}, ThinkBlock::optional);
  CHECK(accepts(optional, "<think>\nI should call f. <tool_call> is how.\n</think>\n\n" + call));
  CHECK(accepts(optional, call));  // no think block at all
  CHECK(accepts(optional, "<think></think>" + call));
  CHECK(!accepts(optional, "<think>\nno end" + call));  // the block must close before the call
  CHECK(run_grammar(optional, "<thin").first == 5);
  CHECK(run_grammar(optional, "<thx").first == 3);  // "<th" may start <think>; "<thx" starts neither it nor <tool_call>
  CHECK(run_grammar(optional, "<tx").first == 2);
  const Grammar inside = json_object_grammar(ThinkBlock::inside);
  CHECK(accepts(inside, "let me think {not json}</think>\n\n{\"a\": 1}"));
  CHECK(!accepts(inside, "{\"a\": 1}"));  // still thinking: the object is reasoning text
  CHECK(run_grammar(inside, "</thin</think>{}").second);
  const Grammar off = json_object_grammar(ThinkBlock::none);
  CHECK(accepts(off, "{\"a\": [true, null]}"));
  CHECK(!accepts(off, "<think>"));
}

namespace {
std::filesystem::path qwen3_tokenizer() { return std::filesystem::path(QWEN_SHARED_DIR) / "models/qwen3-tokenizer/tokenizer.json"; }
}  // namespace

TEST_CASE("guided: the token mask equals stepping every token of the Qwen3 vocabulary through the grammar", "[guided]") {
  const auto tok = qwen::tokenizer::Tokenizer::from_file(qwen3_tokenizer());
  const std::int64_t vocab = 151936;  // the model's padded vocabulary
  const TokenBytes bytes(tok, vocab);
  CHECK(bytes.bytes(151645).empty());  // <|im_end|>: special, never allowed
  CHECK(bytes.bytes(151657) == "<tool_call>");
  CHECK(bytes.bytes(151700).empty());  // padding

  const Grammar tool = tool_call_grammar({"get_weather", "get_time"}, ThinkBlock::optional);
  const Grammar object = json_object_grammar(ThinkBlock::none);
  const std::string tool_text =
      "<think>\nThe user wants the weather in Zürich.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
      "{\"city\": \"Z\xC3\xBCrich \\u00e9\\uD83D\\uDE00\", \"days\": [1, 2.5e-3, true, null], \"x\": {}}}\n</tool_call>";
  const std::string object_text = "{\n  \"a\": \"b\\\"c\xE2\x82\xAC\", \"n\": -0.5E+2, \"l\": [false, {\"k\": null}]\n}";
  const auto schema = std::make_shared<const JsonSchema>(nlohmann::ordered_json::parse(R"({"type": "object", "properties": {
      "city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"enum": ["celsius", "fahrenheit"]},
      "when": {"type": ["string", "null"]}, "extra": {}}, "required": ["city", "unit"]})"),
                                                        "schema");
  const Grammar schema_tool = tool_call_grammar({"get_weather", "get_time"}, ThinkBlock::none, {schema, nullptr});
  const std::string schema_text =
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"S\u00e3o \\\"Paulo\\\"\", \"days\": -12, "
      "\"unit\": \"celsius\", \"when\": null, \"extra\": [1, {\"k\": \"v\"}]}}\n</tool_call>";
  REQUIRE(accepts(tool, tool_text));
  REQUIRE(accepts(object, object_text));
  REQUIRE(accepts(schema_tool, schema_text));

  std::vector<float> row(static_cast<std::size_t>(vocab));
  int checked = 0;
  for (const auto* pair : {&tool, &object, &schema_tool}) {
    const Grammar& g = *pair;
    const std::string& text = pair == &tool ? tool_text : pair == &object ? object_text : schema_text;
    // Every third prefix (every one would take minutes under the sanitizers), and the last.
    const std::size_t stride = qwen_test::sanitized ? 9 : 3;
    std::vector<std::size_t> prefixes;
    for (std::size_t n = 0; n + 1 < text.size(); n += stride) prefixes.push_back(n);
    prefixes.push_back(text.size() - 1);
    for (const std::size_t n : prefixes) {
      GuideState s = guide_start(g);
      REQUIRE(guide_step(g, s, std::string_view(text).substr(0, n)));
      std::fill(row.begin(), row.end(), 0.5f);
      const std::int64_t count = mask_logits(g, s, bytes, row);
      std::int64_t naive_count = 0;
      for (std::int64_t t = 0; t < vocab; ++t) {
        const bool naive = token_allowed(g, s, bytes, static_cast<std::int32_t>(t));
        naive_count += naive ? 1 : 0;
        if (naive != (row[static_cast<std::size_t>(t)] == 0.5f))
          FAIL("prefix of " << n << " bytes: token " << t << " \"" << bytes.bytes(static_cast<std::int32_t>(t)) << "\": mask "
                            << (row[static_cast<std::size_t>(t)] == 0.5f) << ", stepping " << naive);
      }
      CHECK(count == naive_count);
      CHECK(count > 0);  // the next byte of the text itself is always a token
      ++checked;
    }
  }
  CHECK(checked > 50);
}

// The JSON Schema recognizer (include/qwen/guided/json_schema.hpp) against a validator written
// here for the same subset and against nlohmann's parser: random walks through the recognizer
// never get stuck and end in documents the validator accepts; instances the test writes from the
// schema itself are accepted whole; unsupported schemas are refused naming the place.
#include <qwen/guided/grammar.hpp>
#include <qwen/guided/json_schema.hpp>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "../sanitized.hpp"

using namespace qwen::guided;
using json = nlohmann::ordered_json;

namespace {

// ---- an independent validator for the subset ----
bool valid(const json& v, const json& s);

bool has_type(const json& v, const std::string& t) {
  if (t == "object") return v.is_object();
  if (t == "array") return v.is_array();
  if (t == "string") return v.is_string();
  if (t == "number") return v.is_number();
  if (t == "integer") return v.is_number_integer() || v.is_number_unsigned() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
  if (t == "boolean") return v.is_boolean();
  if (t == "null") return v.is_null();
  return false;
}

bool valid(const json& v, const json& s) {
  if (s.is_boolean()) return s.get<bool>();
  if (s.contains("const") && v != s["const"]) return false;
  if (s.contains("enum") && std::find(s["enum"].begin(), s["enum"].end(), v) == s["enum"].end()) return false;
  if (s.contains("type")) {
    const json& t = s["type"];
    bool any = false;
    if (t.is_string()) any = has_type(v, t.get<std::string>());
    else
      for (const json& x : t) any = any || has_type(v, x.get<std::string>());
    if (!any) return false;
  }
  if (s.contains("anyOf")) {
    bool any = false;
    for (const json& o : s["anyOf"]) any = any || valid(v, o);
    if (!any) return false;
  }
  if (s.contains("oneOf")) {
    int count = 0;
    for (const json& o : s["oneOf"]) count += valid(v, o) ? 1 : 0;
    if (count != 1) return false;
  }
  if (v.is_object()) {
    if (s.contains("required"))
      for (const json& r : s["required"])
        if (!v.contains(r.get<std::string>())) return false;
    const json props = s.value("properties", json::object());
    for (const auto& [k, x] : v.items()) {
      if (props.contains(k)) {
        if (!valid(x, props[k])) return false;
      } else if (s.contains("additionalProperties") && s["additionalProperties"] == false) {
        return false;
      }
    }
  }
  if (v.is_array() && s.contains("items"))
    for (const json& x : v)
      if (!valid(x, s["items"])) return false;
  return true;
}

// ---- the schemas the tests use ----
const std::vector<json>& schemas() {
  static const std::vector<json> all = {
      json::parse(R"({"type": "object", "properties": {"city": {"type": "string", "description": "a city"}},
                      "required": ["city"], "additionalProperties": false})"),
      json::parse(R"({"type": "object", "properties": {
          "name": {"type": "string"},
          "age": {"type": "integer"},
          "score": {"type": ["number", "null"]},
          "tags": {"type": "array", "items": {"type": "string"}},
          "unit": {"enum": ["celsius", "fahrenheit"]},
          "level": {"enum": [1, 10, 100, "x"]},
          "ok": {"type": "boolean"},
          "nothing": {"type": "null"},
          "pinned": {"const": {"a": [1, 2]}},
          "extra": {},
          "address": {"type": "object", "properties": {"street": {"type": "string"}, "zip": {"type": "string"}},
                      "required": ["zip"]},
          "choice": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "integer"}}, {"type": "null"}]},
          "free": {"type": "object"}
        }, "required": ["name", "unit", "address"]})"),
      json::parse(R"({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object",
          "properties": {"c": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}}}}}}})"),
      json::parse(R"({"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                      "required": ["y"]})"),
      json::parse(R"({"type": "object", "additionalProperties": false})"),
      json::parse(R"({"type": "object", "properties": {"a": {"anyOf": [{"type": ["integer", "null"]},
          {"anyOf": [{"type": "string"}, {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}]}]},
          "b": {"additionalProperties": false}, "c": {"properties": {"y": {"type": "boolean"}}}}, "required": ["a", "b", "c"]})"),
  };
  return all;
}

// ---- instances written from the schema (canonical order, random choices) ----
struct InstanceWriter {
  std::mt19937_64 rng;
  std::string out;
  int pick(int n) { return static_cast<int>(rng() % static_cast<std::uint64_t>(n)); }
  void ws() {
    static const char* runs[] = {"", "", " ", "\n  "};
    out += runs[pick(4)];
  }
  void any(int depth) {
    switch (depth > 2 ? 2 + pick(4) : pick(6)) {
      case 0: out += "{\"k\": [1, \"v\"]}"; break;
      case 1: out += "[true, {}]"; break;
      case 2: out += "\"s\\u00e9\""; break;
      case 3: out += "-1.5e3"; break;
      case 4: out += "false"; break;
      default: out += "null"; break;
    }
  }
  void value(const json& s, int depth) {
    if (s.is_boolean() || s.empty() || (s.size() == 1 && s.contains("description"))) return any(depth);
    if (s.contains("const")) return void(out += s["const"].dump());
    if (s.contains("enum")) return void(out += s["enum"][static_cast<std::size_t>(pick(static_cast<int>(s["enum"].size())))].dump());
    if (s.contains("anyOf")) return value(s["anyOf"][static_cast<std::size_t>(pick(static_cast<int>(s["anyOf"].size())))], depth);
    std::string type = s.contains("type") ? "" : "object";
    if (s.contains("type")) type = s["type"].is_string() ? s["type"].get<std::string>()
                                                         : s["type"][static_cast<std::size_t>(pick(static_cast<int>(s["type"].size())))].get<std::string>();
    if (type == "string") out += pick(2) ? "\"Lisbon\"" : "\"caf\xC3\xA9 \\\"x\\\"\"";
    else if (type == "integer") out += pick(2) ? "42" : "-7";
    else if (type == "number") out += pick(2) ? "3.25" : "1e5";
    else if (type == "boolean") out += pick(2) ? "true" : "false";
    else if (type == "null") out += "null";
    else if (type == "array") {
      out += '[';
      const int n = pick(3);
      for (int i = 0; i < n; ++i) {
        if (i) out += ',', ws();
        value(s.value("items", json::object()), depth + 1);
      }
      out += ']';
    } else if (!s.contains("properties")) {
      out += s.value("additionalProperties", true) == false ? "{}" : "{\"any\": [1, {\"thing\": null}]}";
    } else {
      out += '{';
      ws();
      bool first = true;
      const json required = s.value("required", json::array());
      for (const auto& [k, sub] : s["properties"].items()) {
        const bool req = std::find(required.begin(), required.end(), k) != required.end();
        if (!req && pick(2)) continue;
        if (!first) out += ',', ws();
        first = false;
        out += json(k).dump() + ":";
        ws();
        value(sub, depth + 1);
      }
      ws();
      out += '}';
    }
  }
};

struct Walk {
  std::size_t accepted = 0;
  bool complete = false;
};
Walk run(const JsonSchema& schema, std::string_view text) {
  SchemaState s = schema_start(schema);
  Walk w;
  for (const char c : text) {
    SchemaState next = s;
    if (!schema_step(schema, next, static_cast<std::uint8_t>(c))) return w;
    s = next;
    ++w.accepted;
  }
  w.complete = schema_complete(s);
  return w;
}

}  // namespace

TEST_CASE("guided: instances written from a schema are accepted whole, and the validator agrees", "[guided][schema]") {
  InstanceWriter w{std::mt19937_64(99), {}};
  for (std::size_t k = 0; k < schemas().size(); ++k) {
    const JsonSchema schema(schemas()[k], "schema");
    for (int i = 0; i < 300; ++i) {
      w.out.clear();
      w.value(schemas()[k], 0);
      INFO("schema " << k << ": " << w.out);
      const json parsed = json::parse(w.out);
      REQUIRE(valid(parsed, schemas()[k]));
      const Walk r = run(schema, w.out);
      CHECK(r.accepted == w.out.size());
      CHECK(r.complete);
    }
  }
}

TEST_CASE("guided: random walks through a schema never get stuck and end in instances the validator accepts", "[guided][schema]") {
  std::mt19937_64 rng(2026);
  const int walks = qwen_test::sanitized ? 40 : 400;
  int complete = 0, total = 0;
  for (std::size_t k = 0; k < schemas().size(); ++k) {
    const JsonSchema schema(schemas()[k], "schema");
    for (int i = 0; i < walks; ++i, ++total) {
      SchemaState s = schema_start(schema);
      std::string text;
      // Bytes the walk prefers as the text grows, so that most walks finish.
      static const std::string closing = "}]\",0123456789eltruf";
      while (!schema_complete(s) && text.size() < 600) {
        std::vector<std::uint8_t> accepted;
        for (unsigned b = 0; b < 256; ++b) {
          SchemaState next = s;
          if (schema_step(schema, next, static_cast<std::uint8_t>(b))) accepted.push_back(static_cast<std::uint8_t>(b));
        }
        INFO("schema " << k << ", stuck after: " << text);
        REQUIRE(!accepted.empty());  // no dead end
        std::uint8_t b = accepted[rng() % accepted.size()];
        if (text.size() > 40 && rng() % 3 != 0) {
          std::vector<std::uint8_t> preferred;
          for (const std::uint8_t a : accepted)
            if (closing.find(static_cast<char>(a)) != std::string::npos) preferred.push_back(a);
          if (!preferred.empty()) b = preferred[rng() % preferred.size()];
        }
        REQUIRE(schema_step(schema, s, b));
        text += static_cast<char>(b);
      }
      if (!schema_complete(s)) continue;
      ++complete;
      INFO("schema " << k << ": " << text);
      json parsed;
      REQUIRE_NOTHROW(parsed = json::parse(text));
      CHECK(valid(parsed, schemas()[k]));
      // Only listed properties are written.
      if (schemas()[k].contains("properties"))
        for (const auto& [key, v] : parsed.items()) CHECK(schemas()[k]["properties"].contains(key));
    }
  }
  INFO(complete << " of " << total << " walks completed");
  CHECK(complete > total / 2);
}

TEST_CASE("guided: a schema refuses at the first byte that breaks it", "[guided][schema]") {
  const JsonSchema weather(schemas()[0], "schema");
  CHECK(run(weather, R"({"city": "Lisbon"})").complete);
  CHECK(run(weather, R"({})").accepted == 1);                  // city is required
  CHECK(run(weather, R"({"town": "x"})").accepted == 2);       // not a listed property
  CHECK(run(weather, R"({"city": 5})").accepted == 9);         // not a string
  CHECK(run(weather, R"({"city": "a", "city": "b"})").accepted == 12);  // nothing after the last property
  const JsonSchema rich(schemas()[1], "schema");
  const std::string head = R"({"name": "n", )";
  CHECK(run(rich, head + R"("age": 1.5)").accepted == head.size() + 8);  // an integer has no fraction
  CHECK(run(rich, head + R"("unit": "kelvin")").accepted == head.size() + 9);
  CHECK(run(rich, head + R"("unit": "celsius", "level": 10, "address": {"zip": "1"}})").complete);
  CHECK(run(rich, head + R"("unit": "celsius", "level": 1000)").accepted == head.size() + 31);  // 1, 10, 100 only
  // Schema order: after "name", "address" may not come before the required "unit" ("a" may start "age").
  CHECK(run(rich, head + R"("address": {"zip": "1"}, "unit": "celsius"})").accepted == head.size() + 2);
  const JsonSchema pair(schemas()[3], "schema");
  CHECK(run(pair, R"({"y": -123456789012345678})").complete);  // 18 digits: fits an int64
  CHECK(run(pair, R"({"y": 1234567890123456789})").accepted == 24);
  CHECK(run(pair, R"({"y": 1})").complete);
  CHECK(run(pair, R"({"x": 1})").accepted == 7);  // y is required after x: '}' refused
  CHECK(run(pair, R"({"x": 1, "y": -2})").complete);
  const JsonSchema closed(schemas()[4], "schema");
  CHECK(run(closed, "{}").complete);
  CHECK(run(closed, "{\"a\"").accepted == 1);
}

TEST_CASE("guided: schemas beyond the subset are refused naming the place and the keyword", "[guided][schema]") {
  const auto refused = [](const char* schema, const char* words) {
    INFO(schema);
    CHECK_THROWS_WITH(JsonSchema(json::parse(schema), "tools[0].function.parameters"), Catch::Contains(words));
  };
  refused(R"({"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}})",
          "tools[0].function.parameters.properties.age: keyword 'minimum' is not supported");
  refused(R"({"type": "object", "properties": {"d": {"type": "string", "format": "date"}}})", "keyword 'format'");
  refused(R"({"$ref": "#/$defs/x"})", "keyword '$ref'");
  refused(R"({"type": "string"})", "the root schema must describe an object");
  refused(R"({"type": "object", "properties": {"a": {}}, "required": ["b"]})", "names 'b', which 'properties' does not list");
  refused(R"({"type": "object", "properties": {"a": {"anyOf": [{"type": "integer"}, {"type": "number"}]}}})",
          "can both start with '-'");
  refused(R"({"type": "object", "properties": {"a": {"type": "string", "enum": ["x", 1]}}})", "the value 1 does not have");
  refused(R"({"type": "object", "properties": {"a": {"type": "text"}}})", "\"text\" is not a JSON Schema type");
  refused(R"({"type": "object", "properties": {"a": false}})", "allows no value");
  refused(R"({"type": "object", "additionalProperties": {"type": "string"}})", "additional properties");
  // Keywords beside enum/const or anyOf/oneOf would be ignored: refused instead.
  refused(R"({"type": "object", "properties": {"a": {"enum": ["x", "y"], "anyOf": [{"const": "x"}, {"type": "null"}]}}})",
          "'enum' together with 'anyOf' is not supported");
  refused(R"({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {}}, "const": {"b": 1}}}})",
          "'const' together with 'properties' is not supported");
  refused(R"({"type": "object", "properties": {"p": {"anyOf": [{"type": "object"}, {"type": "null"}], "required": ["x"]}}})",
          "'required' together with 'anyOf' is not supported");
  refused(R"({"type": "object", "properties": {"p": {"required": ["x"]}}})", "names properties that 'properties' does not list");
  // Deeply nested alternatives are an error, not a stack overflow.
  std::string nested = R"({"type": "string"})";
  for (int i = 0; i < 20000; ++i) nested = R"({"anyOf": [)" + nested + "]}";
  refused((R"({"type": "object", "properties": {"a": )" + nested + "}}").c_str(), "schemas nest deeper than 64 levels");
  std::string deep = R"({"type": "string"})";
  for (int i = 0; i < max_schema_depth; ++i) deep = R"({"type": "object", "properties": {"a": )" + deep + "}}";
  CHECK_NOTHROW(JsonSchema(json::parse(deep), "s"));
  deep = R"({"type": "object", "properties": {"a": )" + deep + "}}";
  refused(deep.c_str(), "nest deeper than 16 levels");
}

TEST_CASE("guided: alternatives inside alternatives, and object keywords without a type, are followed", "[guided][schema]") {
  const JsonSchema nested(json::parse(R"({"type": "object", "properties": {"a": {"anyOf": [{"type": ["integer", "null"]},
      {"anyOf": [{"type": "string"}, {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}]}]},
      "b": {"additionalProperties": false}, "c": {"properties": {"y": {"type": "boolean"}}}}, "required": ["a", "b", "c"]})"),
                          "schema");
  CHECK(run(nested, R"({"a": 1, "b": {}, "c": {}})").complete);
  CHECK(run(nested, R"({"a": null, "b": {}, "c": {"y": true}})").complete);
  CHECK(run(nested, R"({"a": "s", "b": {}, "c": {}})").complete);
  CHECK(run(nested, R"({"a": {"x": 3}, "b": {}, "c": {}})").complete);
  CHECK(run(nested, R"({"a": 1.5})").accepted == 7);       // an integer: no fraction
  CHECK(run(nested, R"({"a": {}})").accepted == 7);        // x is required
  CHECK(run(nested, R"({"a": 1, "b": {"z": 1}})").accepted == 15);  // b: no properties at all
  CHECK(run(nested, R"({"a": 1, "b": 2})").accepted == 14);         // b: an object
}

TEST_CASE("guided: a forced call follows the schema of the function it names", "[guided][schema]") {
  const auto weather = std::make_shared<const JsonSchema>(schemas()[0], "weather");
  const auto pair = std::make_shared<const JsonSchema>(schemas()[3], "pair");
  const Grammar g = tool_call_grammar({"get_weather", "add", "free"}, ThinkBlock::none, {weather, pair, nullptr});
  const auto accepts = [&](const std::string& args, const char* name) {
    GuideState s = guide_start(g);
    return guide_step(g, s, std::string("<tool_call>\n{\"name\": \"") + name + "\", \"arguments\": " + args + "}\n</tool_call>") &&
           guide_complete(g, s);
  };
  CHECK(accepts(R"({"city": "Lisbon"})", "get_weather"));
  CHECK_FALSE(accepts(R"({"y": 1})", "get_weather"));
  CHECK(accepts(R"({"y": 1})", "add"));
  CHECK_FALSE(accepts(R"({"city": "Lisbon"})", "add"));
  CHECK(accepts(R"({"anything": [1]})", "free"));
  // An empty schema (a tool with "parameters": {}) is any object.
  const auto empty = std::make_shared<const JsonSchema>(json::object(), "empty");
  const Grammar g2 = tool_call_grammar({"f"}, ThinkBlock::none, {empty});
  GuideState s = guide_start(g2);
  CHECK(guide_step(g2, s, std::string("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"k\": [true]}}\n</tool_call>")));
  CHECK(guide_complete(g2, s));
  s = guide_start(g2);
  CHECK_FALSE(guide_step(g2, s, std::string("<tool_call>\n{\"name\": \"f\", \"arguments\": [")));
}

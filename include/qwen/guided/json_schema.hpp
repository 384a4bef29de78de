// A JSON Schema as a byte-level recognizer: the output is a JSON object valid under the schema.
//
// The subset, compiled once per request (JsonSchema) and refused with an InvalidArgument naming the
// schema path and the keyword when a schema goes beyond it:
//   type           "object", "array", "string", "number", "integer" (at most 18 digits: every
//                  one fits an int64), "boolean", "null", or a list of them
//   properties     an object's properties, written in the schema's order; `required` ones
//                  always, the others may be left out. Only listed properties are written, even
//                  where additionalProperties allows others (a valid subset of the instances).
//                  An object schema without properties is any object (none with
//                  additionalProperties false: only {}).
//   required       names of listed properties
//   items          one schema for every element (absent: any value)
//   enum, const    the values, each written as its compact JSON text (UTF-8 as is, like keys)
//   anyOf, oneOf   alternatives that start with different bytes (different JSON types, e.g. a
//                  string or null), so the first byte decides and oneOf's "exactly one" holds
//   annotations    title, description, default, examples, $schema, $id, $comment, deprecated,
//                  readOnly, writeOnly, additionalProperties (see properties): read, not enforced
// Anything else (minimum, maxLength, pattern, format, $ref, ...) is refused rather than ignored:
// ignoring it could produce output the schema rejects. The root must be an object schema (an
// empty one, {} or true, is any object);
// objects and arrays nest at most max_schema_depth levels (values of schema-free parts, such as
// an object without properties, use json_automaton.hpp and its own bound).
//
// Like json_automaton.hpp, schema_step refuses a byte as soon as no valid output can start with
// the bytes so far, and never accepts one that leads to a dead end (at most
// max_whitespace_run whitespace bytes in a row; numbers within the recognizer's bounds).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/core/error.hpp"
#include "qwen/guided/json_automaton.hpp"

namespace qwen::guided {

inline constexpr int max_schema_depth = 16;
// "integer" values have at most this many digits, so that every one fits an int64.
inline constexpr int max_schema_integer_digits = 18;

struct SchemaProperty {
  std::string key;          // the key as written: JSON-encoded, with its quotes
  std::uint16_t node = 0;
  bool required = false;
};

struct SchemaNode {
  enum class Kind : std::uint8_t { any, any_object, object, array, string, number, integer, boolean, null, literals, alternatives };
  Kind kind = Kind::any;
  std::vector<SchemaProperty> properties;  // object
  std::uint16_t items = 0;                 // array
  std::vector<std::string> literals;       // literals: compact JSON texts
  std::vector<std::uint16_t> options;      // alternatives
  std::array<bool, 256> first{};           // the bytes a value of this node may start with
};

// A schema refused: the message is "<where><path>: <problem>"; path (".properties.age", empty for
// the root) and problem are also kept apart, for a caller that names the field itself.
class SchemaError : public InvalidArgument {
 public:
  SchemaError(const std::string& where, std::string path, std::string problem)
      : InvalidArgument(where + path + ": " + problem), path_(std::move(path)), problem_(std::move(problem)) {}
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] const std::string& problem() const noexcept { return problem_; }

 private:
  std::string path_, problem_;
};

class JsonSchema {
 public:
  // `where` starts every message (e.g. "response_format.json_schema.schema").
  // Properties are written in the order the schema lists them, so an ordered_json keeps it.
  JsonSchema(const nlohmann::ordered_json& schema, const std::string& where) : where_(where) {
    std::uint16_t root = compile(schema, "", 0);
    // An empty root schema ({} or true: any value) is any object: the output is an object anyway.
    if (nodes_[root].kind == SchemaNode::Kind::any) {
      SchemaNode object;
      object.kind = SchemaNode::Kind::any_object;
      root = add(std::move(object), "");
    }
    const SchemaNode::Kind k = nodes_[root].kind;
    if (k != SchemaNode::Kind::object && k != SchemaNode::Kind::any_object)
      bad("", "the root schema must describe an object (\"type\": \"object\")");
    root_ = root;
  }
  [[nodiscard]] const SchemaNode& node(std::uint16_t i) const noexcept { return nodes_[i]; }
  [[nodiscard]] std::uint16_t root() const noexcept { return root_; }

 private:
  using json = nlohmann::ordered_json;

  [[noreturn]] void bad(const std::string& path, const std::string& problem) const { throw SchemaError(where_, path, problem); }

  static bool annotation(const std::string& key) {
    for (const char* a : {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
                          "writeOnly", "additionalProperties"})
      if (key == a) return true;
    return false;
  }

  std::uint16_t add(SchemaNode n, const std::string& path) {
    if (nodes_.size() >= 4096) bad(path, "the schema has more than 4096 parts");
    using K = SchemaNode::Kind;
    auto& f = n.first;
    const auto digits = [&] {
      f['-'] = true;
      for (int c = '0'; c <= '9'; ++c) f[static_cast<std::size_t>(c)] = true;
    };
    switch (n.kind) {
      case K::any:
        for (const char c : std::string_view("{[\"tfn")) f[static_cast<std::uint8_t>(c)] = true;
        digits();
        break;
      case K::any_object: case K::object: f['{'] = true; break;
      case K::array: f['['] = true; break;
      case K::string: f['"'] = true; break;
      case K::number: case K::integer: digits(); break;
      case K::boolean: f['t'] = f['f'] = true; break;
      case K::null: f['n'] = true; break;
      case K::literals:
        for (const std::string& l : n.literals) f[static_cast<std::uint8_t>(l[0])] = true;
        break;
      case K::alternatives:
        for (const std::uint16_t o : n.options)
          for (std::size_t b = 0; b < 256; ++b) f[b] = f[b] || nodes_[o].first[b];
        break;
    }
    nodes_.push_back(std::move(n));
    return static_cast<std::uint16_t>(nodes_.size() - 1);
  }

  // One type name as a node (objects and arrays read their keywords from `s`).
  std::uint16_t typed(const std::string& type, const json& s, const std::string& path, int depth) {
    using K = SchemaNode::Kind;
    SchemaNode n;
    if (type == "string") n.kind = K::string;
    else if (type == "number") n.kind = K::number;
    else if (type == "integer") n.kind = K::integer;
    else if (type == "boolean") n.kind = K::boolean;
    else if (type == "null") n.kind = K::null;
    else if (type == "object") {
      if (depth >= max_schema_depth) bad(path, "objects and arrays nest deeper than " + std::to_string(max_schema_depth) + " levels");
      const auto props = s.find("properties");
      const auto extra = s.find("additionalProperties");
      const bool closed = extra != s.end() && extra->is_boolean() && !extra->get<bool>();
      if (extra != s.end() && !extra->is_boolean() && !(extra->is_object() && extra->empty()) && props == s.end())
        bad(path + ".additionalProperties", "a schema for additional properties is not supported (list them in 'properties')");
      std::vector<std::string> required;
      if (const auto r = s.find("required"); r != s.end()) {
        if (!r->is_array()) bad(path + ".required", "must be a list of property names");
        for (const json& name : *r) {
          if (!name.is_string()) bad(path + ".required", "must be a list of property names");
          required.push_back(name.get<std::string>());
        }
      }
      if (props == s.end()) {
        if (!required.empty()) bad(path + ".required", "names properties that 'properties' does not list");
        n.kind = closed ? K::object : K::any_object;
      } else {
        if (!props->is_object()) bad(path + ".properties", "must be an object");
        n.kind = K::object;
        for (const auto& [key, sub] : props->items()) {
          SchemaProperty p;
          p.key = json(key).dump(-1, ' ', false);
          p.required = std::find(required.begin(), required.end(), key) != required.end();
          p.node = compile(sub, path + ".properties." + key, depth + 1);
          n.properties.push_back(std::move(p));
        }
        for (const std::string& r : required)
          if (!props->contains(r)) bad(path + ".required", "names '" + r + "', which 'properties' does not list");
      }
    } else if (type == "array") {
      if (depth >= max_schema_depth) bad(path, "objects and arrays nest deeper than " + std::to_string(max_schema_depth) + " levels");
      n.kind = K::array;
      if (const auto items = s.find("items"); items != s.end()) {
        if (items->is_array()) bad(path + ".items", "a list of item schemas (a tuple) is not supported");
        n.items = compile(*items, path + ".items", depth + 1);
      } else {
        n.items = add(SchemaNode{}, path + ".items");  // any value
      }
    } else {
      bad(path + ".type", "\"" + type + "\" is not a JSON Schema type");
    }
    return add(std::move(n), path);
  }

  std::uint16_t alternatives(const std::vector<std::uint16_t>& given, const std::string& path) {
    // Alternatives inside alternatives are spliced in, so that one first byte picks a leaf.
    std::vector<std::uint16_t> options;
    for (const std::uint16_t o : given) {
      if (nodes_[o].kind == SchemaNode::Kind::alternatives) options.insert(options.end(), nodes_[o].options.begin(), nodes_[o].options.end());
      else options.push_back(o);
    }
    if (options.size() == 1) return options[0];
    SchemaNode n;
    n.kind = SchemaNode::Kind::alternatives;
    for (std::size_t a = 0; a < options.size(); ++a)
      for (std::size_t b = a + 1; b < options.size(); ++b)
        for (std::size_t c = 0; c < 256; ++c)
          if (nodes_[options[a]].first[c] && nodes_[options[b]].first[c])
            bad(path, qwen::detail::cat("alternatives ", a, " and ", b, " can both start with '", static_cast<char>(c),
                                        "': only alternatives of different JSON types are supported"));
    n.options = std::move(options);
    return add(std::move(n), path);
  }

  static bool literal_fits(const json& v, const std::string& type) {
    if (type == "string") return v.is_string();
    if (type == "number") return v.is_number();
    if (type == "integer") return v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
    if (type == "boolean") return v.is_boolean();
    if (type == "null") return v.is_null();
    if (type == "object") return v.is_object();
    if (type == "array") return v.is_array();
    return false;
  }

  std::uint16_t compile(const json& s, const std::string& path, int depth) {
    // Schemas nest (properties, items, anyOf) at most this deep, whatever they describe.
    if (++nesting_ > max_schema_nesting) bad(path, "schemas nest deeper than " + std::to_string(max_schema_nesting) + " levels");
    struct Leave {
      int& n;
      ~Leave() { --n; }
    } leave{nesting_};
    if (s.is_boolean()) {
      if (!s.get<bool>()) bad(path, "the schema false allows no value");
      return add(SchemaNode{}, path);
    }
    if (!s.is_object()) bad(path, "a schema must be an object or a boolean, got " + s.dump());
    static const char* known[] = {"type", "properties", "required", "items", "enum", "const", "anyOf", "oneOf"};
    for (const auto& item : s.items()) {
      const std::string& key = item.key();
      if (annotation(key)) continue;
      if (std::find_if(std::begin(known), std::end(known), [&](const char* k) { return key == k; }) == std::end(known))
        bad(path, "keyword '" + key + "' is not supported by guided decoding");
    }
    std::vector<std::string> types;
    if (const auto t = s.find("type"); t != s.end()) {
      if (t->is_string()) types.push_back(t->get<std::string>());
      else if (t->is_array() && !t->empty()) {
        for (const json& x : *t) {
          if (!x.is_string()) bad(path + ".type", "must be a type name or a list of them");
          types.push_back(x.get<std::string>());
        }
      } else bad(path + ".type", "must be a type name or a list of them");
    }
    // Keywords that shape a value: only the combinations below are followed, the others refused
    // (ignoring one could produce output the schema rejects).
    const auto has = [&](const char* key) { return s.contains(key); };
    const char* structure[] = {"properties", "required", "items", "additionalProperties"};
    const auto e = s.find("enum"), c = s.find("const");
    if (e != s.end() || c != s.end()) {
      if (e != s.end() && c != s.end()) bad(path, "both 'enum' and 'const'");
      for (const char* other : {"anyOf", "oneOf", "properties", "required", "items"})
        if (has(other)) bad(path, std::string("'") + (e != s.end() ? "enum" : "const") + "' together with '" + other + "' is not supported");
      if (const auto extra = s.find("additionalProperties"); extra != s.end() && *extra != json(true))
        bad(path, std::string("'") + (e != s.end() ? "enum" : "const") + "' together with 'additionalProperties' is not supported");
      std::vector<json> values;
      if (c != s.end()) values.push_back(*c);
      else {
        if (!e->is_array() || e->empty()) bad(path + ".enum", "must be a non-empty list");
        values.assign(e->begin(), e->end());
      }
      SchemaNode n;
      n.kind = SchemaNode::Kind::literals;
      for (const json& v : values) {
        if (!types.empty() && std::none_of(types.begin(), types.end(), [&](const std::string& t) { return literal_fits(v, t); }))
          bad(path, "the value " + v.dump() + " does not have the schema's type");
        std::string text = v.dump(-1, ' ', false);
        if (std::find(n.literals.begin(), n.literals.end(), text) == n.literals.end()) n.literals.push_back(std::move(text));
      }
      return add(std::move(n), path);
    }
    for (const char* key : {"anyOf", "oneOf"}) {
      if (const auto list = s.find(key); list != s.end()) {
        if (!types.empty()) bad(path, std::string("'type' together with '") + key + "' is not supported");
        for (const char* other : structure)
          if (has(other)) bad(path, std::string("'") + other + "' together with '" + key + "' is not supported");
        if (has("anyOf") && has("oneOf")) bad(path, "both 'anyOf' and 'oneOf'");
        if (!list->is_array() || list->empty()) bad(path + "." + key, "must be a non-empty list of schemas");
        std::vector<std::uint16_t> options;
        for (std::size_t i = 0; i < list->size(); ++i)
          options.push_back(compile((*list)[i], qwen::detail::cat(path, ".", key, "[", i, "]"), depth));
        return alternatives(std::move(options), path + "." + key);
      }
    }
    if (types.empty()) {
      // Object keywords without a type: the value must be an object (a valid narrowing: the
      // schema allows other types, on which these keywords say nothing).
      if (has("properties") || has("required") || (has("additionalProperties") && s["additionalProperties"] != json(true)))
        types.push_back("object");
      else if (has("items")) types.push_back("array");
      else return add(SchemaNode{}, path);  // any value
    }
    // "integer" with "number" is "number".
    if (std::find(types.begin(), types.end(), "number") != types.end())
      types.erase(std::remove(types.begin(), types.end(), std::string("integer")), types.end());
    std::vector<std::uint16_t> options;
    for (std::size_t i = 0; i < types.size(); ++i) {
      if (std::find(types.begin(), types.begin() + static_cast<std::ptrdiff_t>(i), types[i]) != types.begin() + static_cast<std::ptrdiff_t>(i))
        continue;
      options.push_back(typed(types[i], s, path, depth));
    }
    return alternatives(std::move(options), path + ".type");
  }

  static constexpr int max_schema_nesting = 64;
  std::string where_;
  int nesting_ = 0;
  std::vector<SchemaNode> nodes_;
  std::uint16_t root_ = 0;
};

// Matches byte b against the alternatives text_of(i), i in [begin, end), that agree with the
// `pos` bytes read so far (those of text_of(alt)); on a match alt becomes the first such one.
// Returns false when none continues with b. Used for a grammar's choice segment, a schema's keys
// and its enum values.
template <class Index>
[[nodiscard]] bool match_alternative(const auto& text_of, Index begin, Index end, Index& alt, Index pos, std::uint8_t b) noexcept {
  const std::string_view read = std::string_view(text_of(alt)).substr(0, pos);
  for (Index a = std::max(alt, begin); a < end; ++a) {
    const std::string_view t = text_of(a);
    if (t.size() > pos && static_cast<std::uint8_t>(t[pos]) == b && t.starts_with(read)) {
      alt = a;
      return true;
    }
  }
  return false;
}

// ---- the recognizer ----

enum class SchemaMode : std::uint8_t {
  value,     // a value of `value_node` is expected
  scalar,    // reading a schema-free value, string, number or literal word in `scalar`
  literal,   // reading one of value_node's enum texts
  key,       // reading a key of the top object
  in_frame,  // structure of the top object or array
  done,      // the root object ended
};

struct SchemaFrame {
  std::uint16_t node = 0;
  std::uint16_t next = 0;  // object: the first property that may still come
  std::uint8_t phase = 0;  // object: 0 after '{', 1 after ',', 2 before ':', 3 after a value; array: 0 after '[', 2 after a value
};

struct SchemaState {
  std::array<SchemaFrame, max_schema_depth> frames{};
  std::uint8_t depth = 0;
  SchemaMode mode = SchemaMode::value;
  std::uint8_t whitespace_run = 0;
  std::uint16_t value_node = 0;
  std::uint16_t match_pos = 0, match_alt = 0;  // literal and key: bytes matched, first agreeing alternative
  JsonState scalar;
};

[[nodiscard]] inline SchemaState schema_start(const JsonSchema& schema) noexcept {
  SchemaState s;
  s.value_node = schema.root();
  return s;
}

[[nodiscard]] inline bool schema_complete(const SchemaState& s) noexcept { return s.mode == SchemaMode::done; }

// Inside a free string with nothing pending (token_mask's shortcut).
[[nodiscard]] inline bool schema_in_plain_string(const SchemaState& s) noexcept {
  return s.mode == SchemaMode::scalar && json_in_plain_string(s.scalar);
}

namespace schema_detail {

using K = SchemaNode::Kind;

inline void value_ended(const JsonSchema& schema, SchemaState& s) noexcept {
  if (s.depth == 0) {
    s.mode = SchemaMode::done;
    return;
  }
  SchemaFrame& f = s.frames[s.depth - 1];
  f.phase = schema.node(f.node).kind == K::object ? 3 : 2;
  s.mode = SchemaMode::in_frame;
}

// Object properties that may come next: [f.next, end), end just after the first required one.
[[nodiscard]] inline std::uint16_t candidates_end(const SchemaNode& n, const SchemaFrame& f) noexcept {
  for (std::size_t i = f.next; i < n.properties.size(); ++i)
    if (n.properties[i].required) return static_cast<std::uint16_t>(i + 1);
  return static_cast<std::uint16_t>(n.properties.size());
}
[[nodiscard]] inline bool required_left(const SchemaNode& n, const SchemaFrame& f) noexcept {
  for (std::size_t i = f.next; i < n.properties.size(); ++i)
    if (n.properties[i].required) return true;
  return false;
}


}  // namespace schema_detail

// Consumes one byte; false: no output valid under the schema starts with the bytes so far plus
// this one (the state is then unspecified: callers step a copy).
[[nodiscard]] inline bool schema_step(const JsonSchema& schema, SchemaState& s, std::uint8_t b) noexcept {
  using namespace schema_detail;
  const bool space = b == ' ' || b == '\t' || b == '\n' || b == '\r';
  const auto whitespace = [&] {
    if (s.whitespace_run >= max_whitespace_run) return false;
    ++s.whitespace_run;
    return true;
  };
  for (;;) {
    switch (s.mode) {
      case SchemaMode::done: return false;
      case SchemaMode::value: {
        if (space) return whitespace();
        s.whitespace_run = 0;
        const SchemaNode* n = &schema.node(s.value_node);
        if (!n->first[b]) return false;
        if (n->kind == K::alternatives) {
          for (const std::uint16_t o : n->options)
            if (schema.node(o).first[b]) s.value_node = o;
          n = &schema.node(s.value_node);
        }
        switch (n->kind) {
          case K::object:
          case K::array:
            s.frames[s.depth++] = SchemaFrame{s.value_node, 0, 0};
            s.mode = SchemaMode::in_frame;
            return true;  // the '{' or '['
          case K::literals:
            s.mode = SchemaMode::literal;
            s.match_pos = 0;
            s.match_alt = 0;
            continue;
          default:
            s.scalar = json_start(n->kind == K::any_object);
            s.mode = SchemaMode::scalar;
            continue;
        }
      }
      case SchemaMode::scalar: {
        const bool integer = schema.node(s.value_node).kind == K::integer;
        JsonState next = s.scalar;
        // An integer has no fraction or exponent, and at most max_schema_integer_digits digits.
        const bool not_integer = integer && s.scalar.mode == JsonMode::number &&
                                 (b == '.' || b == 'e' || b == 'E' ||
                                  (b >= '0' && b <= '9' && s.scalar.number_digits >= max_schema_integer_digits));
        if (!not_integer && json_step(next, b)) {
          s.scalar = next;
          if (s.scalar.mode == JsonMode::done) value_ended(schema, s);
          return true;
        }
        if (!json_complete(s.scalar)) return false;
        value_ended(schema, s);  // a number ends where the next byte is not part of it
        continue;
      }
      case SchemaMode::literal: {
        const SchemaNode& n = schema.node(s.value_node);
        const auto text_of = [&](std::uint16_t a) -> const std::string& { return n.literals[a]; };
        const auto count = static_cast<std::uint16_t>(n.literals.size());
        if (match_alternative(text_of, std::uint16_t{0}, count, s.match_alt, s.match_pos, b)) {
          ++s.match_pos;
          // Complete unless a longer literal agrees with what was read (enum [1, 10] after "1").
          const std::string_view read = std::string_view(n.literals[s.match_alt]).substr(0, s.match_pos);
          bool longer = false;
          for (const std::string& l : n.literals) longer = longer || (l.size() > s.match_pos && std::string_view(l).starts_with(read));
          if (!longer) value_ended(schema, s);
          return true;
        }
        // The byte ends a literal read whole (and belongs to what follows), or nothing.
        bool whole = false;
        const std::string_view read = std::string_view(n.literals[s.match_alt]).substr(0, s.match_pos);
        for (const std::string& l : n.literals) whole = whole || l == read;
        if (s.match_pos == 0 || !whole) return false;
        value_ended(schema, s);
        continue;
      }
      case SchemaMode::key: {
        SchemaFrame& f = s.frames[s.depth - 1];
        const SchemaNode& n = schema.node(f.node);
        const auto text_of = [&](std::uint16_t a) -> const std::string& { return n.properties[a].key; };
        if (!match_alternative(text_of, f.next, candidates_end(n, f), s.match_alt, s.match_pos, b)) return false;
        if (++s.match_pos == n.properties[s.match_alt].key.size()) {
          f.next = static_cast<std::uint16_t>(s.match_alt + 1);
          f.phase = 2;
          s.mode = SchemaMode::in_frame;
        }
        return true;
      }
      case SchemaMode::in_frame: {
        if (space) return whitespace();
        s.whitespace_run = 0;
        SchemaFrame& f = s.frames[s.depth - 1];
        const SchemaNode& n = schema.node(f.node);
        if (n.kind == K::array) {
          if (b == ']') {
            --s.depth;
            value_ended(schema, s);
            return true;
          }
          s.value_node = n.items;
          if (f.phase == 0) {  // the first element starts with this byte
            s.mode = SchemaMode::value;
            continue;
          }
          if (b != ',') return false;  // after an element: ',' then the next one
          s.mode = SchemaMode::value;
          return true;
        }
        switch (f.phase) {
          case 0:
          case 1:
            if (b == '"' && f.next < candidates_end(n, f)) {
              s.mode = SchemaMode::key;
              s.match_pos = 0;
              s.match_alt = f.next;
              continue;
            }
            if (b == '}' && f.phase == 0 && !required_left(n, f)) {
              --s.depth;
              value_ended(schema, s);
              return true;
            }
            return false;
          case 2:
            if (b != ':') return false;
            s.mode = SchemaMode::value;
            s.value_node = n.properties[f.next - 1u].node;
            return true;
          default:  // 3: after a value
            if (b == ',' && f.next < candidates_end(n, f)) {
              f.phase = 1;
              return true;
            }
            if (b == '}' && !required_left(n, f)) {
              --s.depth;
              value_ended(schema, s);
              return true;
            }
            return false;
        }
      }
    }
  }
}

}  // namespace qwen::guided

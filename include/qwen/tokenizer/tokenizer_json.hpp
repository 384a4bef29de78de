// Reading tokenizer.json (Hugging Face tokenizers' serialisation) into a TokenizerSpec, accepting
// exactly the components qwen implements -- those Qwen3 ships:
//   normalizer      NFC (or none)
//   pre_tokenizer   Sequence[Split(Qwen's regex, Isolated, invert false), ByteLevel(add_prefix_space
//                   false, use_regex false)]
//   model           BPE without dropout, unk token, subword prefix/suffix or byte fallback;
//                   ignore_merges either way
//   post_processor  ByteLevel (offsets only; it adds no tokens) or none
//   decoder         ByteLevel
//   added_tokens    with single_word, lstrip, rstrip and normalized all false
//   truncation, padding  none
// Anything else is a ConfigError naming the component and the value (`pre_tokenizer: Split pattern
// is "...", only Qwen's pattern is implemented`), never a silently different tokenization.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/io/json_file.hpp"
#include "qwen/tokenizer/added_tokens.hpp"
#include "qwen/tokenizer/pre_tokenizer.hpp"

namespace qwen::tokenizer {

struct TokenizerSpec {
  std::string source;                                   // file name, for messages
  std::vector<std::pair<std::string, TokenId>> vocab;   // the BPE model's vocabulary
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<AddedToken> added_tokens;
  bool nfc = false;
  bool ignore_merges = false;
};

namespace detail {

[[noreturn]] inline void unsupported(const std::string& file, std::string_view component, const std::string& what) {
  throw_error<ConfigError>(file, ": ", component, ": ", what, " is not supported by qwen's tokenizer");
}

// The "type" of a component object.
inline std::string component_type(const io::JsonObject& o) { return o.string("type"); }

// A boolean flag that must have one value when present.
inline void require_flag(const io::JsonObject& o, std::string_view component, const char* key, bool wanted) {
  if (const auto v = o.optional_boolean(key); v && *v != wanted)
    unsupported(o.file(), component, qwen::detail::cat(key, " = ", *v ? "true" : "false"));
}

// A string field that must be absent, null or empty.
inline void require_empty(const io::JsonObject& o, std::string_view component, const char* key) {
  if (const auto v = o.optional_string(key); v && !v->empty()) unsupported(o.file(), component, qwen::detail::cat(key, " \"", *v, "\""));
}

inline void check_byte_level(const io::JsonObject& o, std::string_view component, bool check_regex) {
  require_flag(o, component, "add_prefix_space", false);
  if (check_regex) require_flag(o, component, "use_regex", false);
}

inline void parse_pre_tokenizer(const io::JsonObject& root, const std::string& file) {
  const auto pre = root.optional_object("pre_tokenizer");
  if (!pre) unsupported(file, "pre_tokenizer", "no pre_tokenizer (null)");
  const std::string type = component_type(*pre);
  if (type != "Sequence") unsupported(file, "pre_tokenizer", "type \"" + type + "\" (expected Sequence[Split, ByteLevel])");
  const io::json* list = pre->value("pretokenizers");
  if (!list || !list->is_array()) pre->bad_type("pretokenizers", list ? *list : io::json(), "a list of pre-tokenizers");
  if (list->size() != 2) unsupported(file, "pre_tokenizer", qwen::detail::cat("a Sequence of ", list->size(), " pre-tokenizers (expected Split, ByteLevel)"));
  const io::JsonObject split((*list)[0], file + ": pre_tokenizer[0]");
  const io::JsonObject byte_level((*list)[1], file + ": pre_tokenizer[1]");
  if (const std::string t = component_type(split); t != "Split") unsupported(file, "pre_tokenizer[0]", "type \"" + t + "\" (expected Split)");
  const auto pattern = split.optional_object("pattern");
  if (!pattern) unsupported(file, "pre_tokenizer[0]", "a Split without a pattern");
  if (pattern->has("String")) unsupported(file, "pre_tokenizer[0]", "a String pattern");
  if (const std::string regex = pattern->string("Regex"); regex != kQwenSplitPattern)
    unsupported(file, "pre_tokenizer[0]", "Split pattern \"" + regex + "\" (only Qwen's pattern is implemented)");
  if (const std::string b = split.string("behavior"); b != "Isolated") unsupported(file, "pre_tokenizer[0]", "Split behavior \"" + b + "\"");
  require_flag(split, "pre_tokenizer[0]", "invert", false);
  if (const std::string t = component_type(byte_level); t != "ByteLevel")
    unsupported(file, "pre_tokenizer[1]", "type \"" + t + "\" (expected ByteLevel)");
  check_byte_level(byte_level, "pre_tokenizer[1] ByteLevel", true);
}

inline void parse_model(const io::JsonObject& root, TokenizerSpec& spec) {
  const std::string& file = spec.source;
  const auto model = root.optional_object("model");
  if (!model) throw_error<ConfigError>(file, ": required field 'model' is missing");
  if (const std::string t = component_type(*model); t != "BPE") unsupported(file, "model", "type \"" + t + "\" (only BPE is implemented)");
  if (const io::json* d = model->value("dropout")) unsupported(file, "model", "dropout " + io::json_preview(*d));
  if (const auto u = model->optional_string("unk_token")) unsupported(file, "model", "unk_token \"" + *u + "\"");
  require_empty(*model, "model", "continuing_subword_prefix");
  require_empty(*model, "model", "end_of_word_suffix");
  require_flag(*model, "model", "byte_fallback", false);
  spec.ignore_merges = model->optional_boolean("ignore_merges").value_or(false);

  const io::json* vocab = model->value("vocab");
  if (!vocab || !vocab->is_object()) model->bad_type("vocab", vocab ? *vocab : io::json(), "an object {token: id}");
  spec.vocab.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<std::int64_t>() < 0 || it.value().get<std::int64_t>() > kMaxTokenId)
      throw_error<FormatError>(file, ": model.vocab: token \"", it.key(), "\" has id ", io::json_preview(it.value()),
                               ", expected an integer in [0, ", kMaxTokenId, "]");
    // Parsed JSON text is valid UTF-8, but a json built in code need not be; the decoder relies on it.
    if (unicode::first_invalid(it.key()) != std::string_view::npos)
      throw_error<FormatError>(file, ": model.vocab: the token with id ", io::json_preview(it.value()), " is not valid UTF-8");
    spec.vocab.emplace_back(it.key(), static_cast<TokenId>(it.value().get<std::int64_t>()));
  }

  const io::json* merges = model->value("merges");
  if (!merges || !merges->is_array()) model->bad_type("merges", merges ? *merges : io::json(), "a list of merges");
  spec.merges.reserve(merges->size());
  for (std::size_t i = 0; i < merges->size(); ++i) {
    const io::json& m = (*merges)[i];
    // Two spellings: "left right" (tokenizers < 0.20) and ["left", "right"].
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      const std::size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == s.size() || s.find(' ', space + 1) != std::string::npos)
        throw_error<FormatError>(file, ": model.merges[", i, "] is ", io::json_preview(m), ", expected \"left right\"");
      spec.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      throw_error<FormatError>(file, ": model.merges[", i, "] is ", io::json_preview(m), ", expected [\"left\", \"right\"]");
    }
  }
}

inline void parse_added_tokens(const io::JsonObject& root, TokenizerSpec& spec) {
  const io::json* list = root.value("added_tokens");
  if (!list) return;
  if (!list->is_array()) root.bad_type("added_tokens", *list, "a list of added tokens");
  for (std::size_t i = 0; i < list->size(); ++i) {
    const io::JsonObject t((*list)[i], qwen::detail::cat(spec.source, ": added_tokens[", i, "]"));
    AddedToken token;
    token.id = static_cast<TokenId>(t.integer("id", 0, kMaxTokenId));
    token.content = t.string("content");
    if (token.content.empty()) throw_error<FormatError>(t.file(), ": content is empty");
    if (unicode::first_invalid(token.content) != std::string_view::npos) throw_error<FormatError>(t.file(), ": content is not valid UTF-8");
    token.special = t.optional_boolean("special").value_or(false);
    for (const char* flag : {"single_word", "lstrip", "rstrip", "normalized"})
      if (t.optional_boolean(flag).value_or(false))
        throw_error<ConfigError>(t.file(), " (\"", token.content, "\"): ", flag, " = true is not supported by qwen's tokenizer");
    spec.added_tokens.push_back(std::move(token));
  }
}

}  // namespace detail

// Checks a parsed tokenizer.json and extracts what the tokenizer needs. `file` starts messages.
[[nodiscard]] inline TokenizerSpec parse_tokenizer_json(const io::json& json, const std::string& file) {
  const io::JsonObject root(json, file);
  TokenizerSpec spec;
  spec.source = file;
  for (const char* key : {"truncation", "padding"})
    if (const io::json* v = root.value(key)) detail::unsupported(file, key, io::json_preview(*v));
  if (const auto normalizer = root.optional_object("normalizer")) {
    const std::string t = detail::component_type(*normalizer);
    if (t != "NFC") detail::unsupported(file, "normalizer", "type \"" + t + "\" (only NFC is implemented)");
    spec.nfc = true;
  }
  detail::parse_pre_tokenizer(root, file);
  if (const auto post = root.optional_object("post_processor")) {
    const std::string t = detail::component_type(*post);
    if (t != "ByteLevel") detail::unsupported(file, "post_processor", "type \"" + t + "\" (it may add tokens)");
  }
  const auto decoder = root.optional_object("decoder");
  if (!decoder) detail::unsupported(file, "decoder", "no decoder (null)");
  if (const std::string t = detail::component_type(*decoder); t != "ByteLevel")
    detail::unsupported(file, "decoder", "type \"" + t + "\" (only ByteLevel is implemented)");
  detail::parse_model(root, spec);
  detail::parse_added_tokens(root, spec);
  return spec;
}

// Reads DIR/tokenizer.json, or the file itself when `path` names a file.
[[nodiscard]] inline TokenizerSpec read_tokenizer_json(const std::filesystem::path& path) {
  const std::filesystem::path file = io::file_in_dir_or_file(path, "tokenizer.json");
  return parse_tokenizer_json(io::read_json_file(file), file.string());
}

}  // namespace qwen::tokenizer

// tokenizer_config.json and chat_template.jinja: the chat template and the special tokens. The
// tokenizer itself (tokenizer.json) is read by the tokenizer component.
//
// transformers 5 writes the chat template to chat_template.jinja beside tokenizer_config.json
// (and named ones to chat_templates/NAME.jinja). When such files exist they take priority over
// the "chat_template" entry of tokenizer_config.json, which is then ignored entirely
// (transformers 5.23, tokenization_utils_base.py, PreTrainedTokenizerBase._from_pretrained:
// "If independent chat template file(s) exist, they take priority over template entries in the
// tokenizer config"). read_tokenizer_config does the same.
#pragma once

#include <charconv>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/io/json_file.hpp"
#include "qwen/io/path_status.hpp"

namespace qwen::io {

struct AddedTokenInfo {
  std::string content;
  bool special = false;
};

struct TokenizerConfig {
  std::string chat_template;  // the default template ("" when there is none)
  std::map<std::string, std::string> named_chat_templates;  // from a list of {name, template} or chat_templates/*.jinja
  std::string chat_template_source;  // the file the templates were read from ("" when there are none)
  std::optional<std::string> eos_token;
  std::optional<std::string> pad_token;
  std::optional<std::string> bos_token;
  std::optional<std::int64_t> model_max_length;  // absent when the file states no usable limit
  std::map<std::int64_t, AddedTokenInfo> added_tokens;  // "added_tokens_decoder": id -> token
};

// Cap on one chat template file (Qwen3's template is about 4 KB).
inline constexpr std::uint64_t kMaxChatTemplateBytes = 16ull << 20;

namespace detail {

// Special tokens appear either as a plain string or as an AddedToken object {"content": ...}.
inline std::optional<std::string> token_text(const JsonObject& cfg, const char* key) {
  const json* v = cfg.value(key);
  if (!v) return std::nullopt;
  if (v->is_string()) return v->get<std::string>();
  if (!v->is_object()) cfg.bad_type(key, *v, "a string or an object with \"content\"");
  return JsonObject(*v, cfg.file() + ": " + key).string("content");
}

// A token id written as a JSON object key: decimal digits only, within int64.
inline std::optional<std::int64_t> token_id_key(const std::string& key) {
  std::int64_t id = -1;
  const char* end = key.data() + key.size();
  const auto [ptr, ec] = std::from_chars(key.data(), end, id);
  if (key.empty() || key[0] == '-' || ec != std::errc() || ptr != end) return std::nullopt;
  return id;
}

// A template file, read whole; valid UTF-8 as Python's open(encoding="utf-8") requires.
inline std::string read_template_file(const std::filesystem::path& path) {
  std::string text = read_small_file(path, kMaxChatTemplateBytes);
  if (const std::size_t bad = first_invalid_utf8(text); bad != std::string::npos)
    throw_error<FormatError>(path.string(), ": not valid UTF-8 (byte ", bad, " of the file)");
  return text;
}

}  // namespace detail

[[nodiscard]] inline TokenizerConfig parse_tokenizer_config(const json& root, const std::string& file) {
  const JsonObject cfg(root, file);
  TokenizerConfig c;
  if (const json* t = cfg.value("chat_template")) {
    c.chat_template_source = file;
    if (t->is_string()) {
      c.chat_template = t->get<std::string>();
    } else if (t->is_array()) {
      for (std::size_t i = 0; i < t->size(); ++i) {
        if (!(*t)[i].is_object()) cfg.bad_type("chat_template", *t, "a string or a list of {\"name\", \"template\"}");
        const JsonObject entry((*t)[i], qwen::detail::cat(file, ": chat_template[", i, "]"));
        c.named_chat_templates[entry.string("name")] = entry.string("template");
      }
      if (auto it = c.named_chat_templates.find("default"); it != c.named_chat_templates.end()) c.chat_template = it->second;
    } else {
      cfg.bad_type("chat_template", *t, "a string or a list of {\"name\", \"template\"}");
    }
  }
  c.eos_token = detail::token_text(cfg, "eos_token");
  c.pad_token = detail::token_text(cfg, "pad_token");
  c.bos_token = detail::token_text(cfg, "bos_token");
  // model_max_length is sometimes a huge float (int(1e30) written as 1e30) meaning "no limit":
  // keep integers within int64, take any other number as no limit.
  if (const json* m = cfg.value("model_max_length")) {
    if (!m->is_number()) cfg.bad_type("model_max_length", *m, "a number");
    if (m->is_number_integer() && !(m->is_number_unsigned() && m->get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())))
      c.model_max_length = cfg.integer("model_max_length", 1);
  }
  if (auto decoder = cfg.optional_object("added_tokens_decoder")) {
    for (const auto& [key, value] : decoder->raw().items()) {
      const auto id = detail::token_id_key(key);
      if (!id) throw_error<ConfigError>(file, ": added_tokens_decoder key '", key, "' is not a token id");
      const JsonObject token(value, file + ": added_tokens_decoder[" + key + "]");
      c.added_tokens[*id] = AddedTokenInfo{token.string("content"), token.optional_boolean("special").value_or(false)};
    }
  }
  return c;
}

// Replaces c's templates by those in DIR/chat_template.jinja and DIR/chat_templates/*.jinja when
// any exist (see the top of this file); leaves c unchanged otherwise.
inline void read_chat_template_files(const std::filesystem::path& dir, TokenizerConfig& c) {
  namespace fs = std::filesystem;
  std::map<std::string, std::string> templates;
  std::string source;
  if (const fs::path single = dir / "chat_template.jinja"; path_exists(single)) {
    templates["default"] = detail::read_template_file(single);
    source = single.string();
  }
  if (const fs::path named = dir / "chat_templates"; file_type_at(named) == fs::file_type::directory) {
    std::error_code ec;
    std::vector<fs::path> files;
    for (fs::directory_iterator it(named, ec), end; !ec && it != end; it.increment(ec))
      if (it->path().extension() == ".jinja") files.push_back(it->path());
    if (ec) throw_error<IoError>(named.string(), ": cannot list: ", ec.message());
    for (const fs::path& f : files) templates[f.stem().string()] = detail::read_template_file(f);
    if (!files.empty()) source += (source.empty() ? "" : " and ") + named.string() + "/*.jinja";
  }
  if (templates.empty()) return;
  c.named_chat_templates.clear();
  c.chat_template.clear();
  if (templates.size() == 1 && templates.contains("default")) {
    c.chat_template = templates["default"];
  } else {
    if (auto it = templates.find("default"); it != templates.end()) c.chat_template = it->second;
    c.named_chat_templates = std::move(templates);
  }
  c.chat_template_source = source;
}

// Reads DIR/tokenizer_config.json and the chat template files beside it; nullopt when the
// checkpoint has no tokenizer_config.json.
[[nodiscard]] inline std::optional<TokenizerConfig> read_tokenizer_config(const std::filesystem::path& dir) {
  auto config = read_optional_json_file(dir / "tokenizer_config.json", parse_tokenizer_config);
  if (config) read_chat_template_files(dir, *config);
  return config;
}

}  // namespace qwen::io

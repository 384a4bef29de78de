// tokenizer_config.json: the chat template and the special tokens. The tokenizer itself
// (tokenizer.json) is read by the tokenizer component.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "qwen/io/json_file.hpp"

namespace qwen::io {

struct AddedTokenInfo {
  std::string content;
  bool special = false;
};

struct TokenizerConfig {
  std::string chat_template;  // the default template ("" when the file has none)
  std::map<std::string, std::string> named_chat_templates;  // when chat_template is a list of {name, template}
  std::optional<std::string> eos_token;
  std::optional<std::string> pad_token;
  std::optional<std::string> bos_token;
  std::optional<std::int64_t> model_max_length;
  std::map<std::int64_t, AddedTokenInfo> added_tokens;  // "added_tokens_decoder": id -> token
};

namespace detail {
// Special tokens appear either as a plain string or as an AddedToken object {"content": ...}.
inline std::optional<std::string> token_text(const JsonObject& cfg, const char* key) {
  if (!cfg.has(key)) return std::nullopt;
  const json& v = cfg.raw()[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  cfg.bad_type(key, v, "a string or an object with \"content\"");
}
}  // namespace detail

[[nodiscard]] inline TokenizerConfig parse_tokenizer_config(const json& root, const std::string& file) {
  const JsonObject cfg(root, file);
  TokenizerConfig c;
  if (cfg.has("chat_template")) {
    const json& t = cfg.raw()["chat_template"];
    if (t.is_string()) {
      c.chat_template = t.get<std::string>();
    } else if (t.is_array()) {
      for (const json& entry : t) {
        if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") || !entry["name"].is_string() ||
            !entry["template"].is_string())
          cfg.bad_type("chat_template", t, "a string or a list of {\"name\", \"template\"}");
        c.named_chat_templates[entry["name"].get<std::string>()] = entry["template"].get<std::string>();
      }
      if (auto it = c.named_chat_templates.find("default"); it != c.named_chat_templates.end()) c.chat_template = it->second;
    } else {
      cfg.bad_type("chat_template", t, "a string or a list of {\"name\", \"template\"}");
    }
  }
  c.eos_token = detail::token_text(cfg, "eos_token");
  c.pad_token = detail::token_text(cfg, "pad_token");
  c.bos_token = detail::token_text(cfg, "bos_token");
  // model_max_length is sometimes a huge float (1e30) meaning "no limit": keep only sane integers.
  if (cfg.has("model_max_length") && cfg.raw()["model_max_length"].is_number_integer())
    c.model_max_length = cfg.raw()["model_max_length"].get<std::int64_t>();
  if (auto decoder = cfg.optional_object("added_tokens_decoder")) {
    for (const auto& [key, value] : decoder->raw().items()) {
      std::int64_t id = -1;
      try {
        std::size_t used = 0;
        id = std::stoll(key, &used);
        if (used != key.size()) id = -1;
      } catch (const std::exception&) {
        id = -1;
      }
      if (id < 0) throw_error<ConfigError>(file, ": added_tokens_decoder key '", key, "' is not a token id");
      const JsonObject token(value, file + ": added_tokens_decoder[" + key + "]");
      c.added_tokens[id] = AddedTokenInfo{token.string("content"), token.optional_boolean("special").value_or(false)};
    }
  }
  return c;
}

// Reads DIR/tokenizer_config.json; nullopt when the checkpoint has none.
[[nodiscard]] inline std::optional<TokenizerConfig> read_tokenizer_config(const std::filesystem::path& dir) {
  return read_optional_json_file(dir / "tokenizer_config.json", parse_tokenizer_config);
}

}  // namespace qwen::io

// ChatTemplate: the chat template of a checkpoint, as one of the variants qwen implements natively.
//
// qwen does not interpret Jinja. Each variant is a C++ renderer that produces byte for byte what
// transformers' apply_chat_template renders with one official template text. At load, the
// checkpoint's template text (tokenizer_config.json, or chat_template.jinja beside it) is
// compared with the text of every variant, by its length and a 64-bit FNV-1a fingerprint of its
// bytes; a template that matches none is refused with a ConfigError naming the file, rather
// than rendered wrong. A caller who knows better (a checkpoint whose template differs only in
// ways that do not change the output) can force a variant by name.
//
// Variants implemented:
//   "qwen3"  the hybrid thinking template of the Qwen3 release (Qwen3-0.6B ... 235B-A22B, also
//            used by the FP8 checkpoints): thinking on by default, enable_thinking=false inserts
//            an empty think block; reasoning of assistant turns after the last user query is
//            kept, earlier reasoning is dropped. 4116 bytes, sha256 87a2728c...33396b5.
// The 2507 Instruct and Thinking templates are not implemented: their exact text could not be
// confirmed here (see docs/chat.md).
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "qwen/chat/qwen3_render.hpp"
#include "qwen/chat/request.hpp"
#include "qwen/core/error.hpp"
#include "qwen/io/tokenizer_config.hpp"

namespace qwen::chat {

// FNV-1a, 64 bits: identifies a template text (not a security measure: a caller can force a
// variant anyway).
[[nodiscard]] constexpr std::uint64_t fnv1a64(std::string_view text) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

struct TemplateVariant {
  std::string_view name;
  std::size_t text_bytes;          // length of the official template text
  std::uint64_t text_fingerprint;  // fnv1a64 of it
  std::string (*render)(const ChatRequest&);
  // What the end of a rendered prompt tells the reasoning parser (see reasoning_parser.hpp) is
  // derived from the prompt text itself, so it needs no entry here.
};

inline constexpr TemplateVariant kVariants[] = {
    {"qwen3", 4116, 0x2bfdb7aa9754484eull, &qwen3::render},
};

[[nodiscard]] inline std::string known_variant_names() {
  std::string names;
  for (const TemplateVariant& v : kVariants) names += (names.empty() ? "" : ", ") + std::string(v.name);
  return names;
}

class ChatTemplate {
 public:
  // The variant named `name`; InvalidArgument naming the known ones when there is none.
  [[nodiscard]] static ChatTemplate variant(std::string_view name) {
    for (const TemplateVariant& v : kVariants)
      if (v.name == name) return ChatTemplate(v);
    throw_error<InvalidArgument>("chat template variant '", name, "' is unknown (known: ", known_variant_names(), ")");
  }

  // The variant whose official text is `text`, or nullptr.
  [[nodiscard]] static const TemplateVariant* identify(std::string_view text) noexcept {
    const std::uint64_t fingerprint = fnv1a64(text);
    for (const TemplateVariant& v : kVariants)
      if (v.text_bytes == text.size() && v.text_fingerprint == fingerprint) return &v;
    return nullptr;
  }

  // The template given as text read from `source` (a file name for messages). With `forced`,
  // that variant is used whatever the text; otherwise an unknown or empty text is a ConfigError.
  [[nodiscard]] static ChatTemplate from_text(std::string_view text, std::string_view source,
                                              std::optional<std::string_view> forced = std::nullopt) {
    if (forced) return variant(*forced);
    if (text.empty())
      throw_error<ConfigError>(source, ": no chat template (name a variant to use one anyway; known: ", known_variant_names(), ")");
    if (const TemplateVariant* v = identify(text)) return ChatTemplate(*v);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a64(text)));
    throw_error<ConfigError>(source, ": the chat template (", text.size(), " bytes, fingerprint ", hex,
                             ") is not one qwen implements (known: ", known_variant_names(),
                             "); it would not be rendered faithfully. Name a variant to force one.");
  }

  // The default template of a checkpoint or tokenizer directory (io::read_tokenizer_config).
  [[nodiscard]] static ChatTemplate from_directory(const std::filesystem::path& dir,
                                                   std::optional<std::string_view> forced = std::nullopt) {
    const auto config = io::read_tokenizer_config(dir);
    if (!config) {
      if (forced) return variant(*forced);
      throw_error<IoError>((dir / "tokenizer_config.json").string(), ": file not found");
    }
    const std::string source = config->chat_template_source.empty() ? (dir / "tokenizer_config.json").string()
                                                                     : config->chat_template_source;
    return from_text(config->chat_template, source, forced);
  }

  [[nodiscard]] std::string_view variant_name() const noexcept { return variant_->name; }

  // The prompt for a validated request.
  [[nodiscard]] std::string render(const ChatRequest& request) const { return variant_->render(request); }

 private:
  explicit ChatTemplate(const TemplateVariant& v) : variant_(&v) {}
  const TemplateVariant* variant_;
};

// The prompt for an OpenAI chat request object (validated by parse_chat_request; a
// ChatRequestError names the offending field). Pass ordered_json parsed from the request text
// (io::parse_json_strict<nlohmann::ordered_json>): tools are rendered with their keys in the
// order given, as transformers does.
[[nodiscard]] inline std::string render(const ordered_json& request, const ChatTemplate& chat_template) {
  return chat_template.render(parse_chat_request(request));
}
// nlohmann::json would convert silently, with its keys sorted: tools whose keys are not in
// alphabetical order would be rendered unlike transformers. Parse the request as ordered_json.
std::string render(const nlohmann::json& request, const ChatTemplate& chat_template) = delete;

}  // namespace qwen::chat

// Errors as the OpenAI API reports them: an HTTP status and
//   {"error": {"message": "...", "type": "...", "param": "..." | null, "code": "..." | null}}
//
// Handlers throw ApiError; what the library throws for a client's input (InvalidArgument and its
// kin: the engine's parameter checks, the chat request's fields, the tokenizer's UTF-8 check) is a
// 400 whose `param` is read off the message (from_library_error). Anything else is the server's
// fault: 500, and the server goes on.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace qwen_serve {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string type, std::optional<std::string> param = std::nullopt,
           std::optional<std::string> code = std::nullopt)
      : std::runtime_error(message), status_(status), type_(std::move(type)), param_(std::move(param)), code_(std::move(code)) {}

  [[nodiscard]] int status() const noexcept { return status_; }
  [[nodiscard]] const std::string& type() const noexcept { return type_; }
  [[nodiscard]] const std::optional<std::string>& param() const noexcept { return param_; }
  [[nodiscard]] const std::optional<std::string>& code() const noexcept { return code_; }

  [[nodiscard]] nlohmann::ordered_json body() const {
    nlohmann::ordered_json error = {{"message", what()}, {"type", type_}, {"param", nullptr}, {"code", nullptr}};
    if (param_) error["param"] = *param_;
    if (code_) error["code"] = *code_;
    return {{"error", std::move(error)}};
  }

 private:
  int status_;
  std::string type_;
  std::optional<std::string> param_;
  std::optional<std::string> code_;
};

// 400 for a request field: `param` names it as the client wrote it ("messages[2].content").
[[nodiscard]] inline ApiError bad_request(std::string message, std::optional<std::string> param = std::nullopt) {
  return ApiError(400, std::move(message), "invalid_request_error", std::move(param));
}
[[nodiscard]] inline ApiError not_supported(std::string message, std::string param) {
  return ApiError(400, std::move(message), "invalid_request_error", std::move(param), "unsupported_parameter");
}
[[nodiscard]] inline ApiError not_found(std::string message, std::string code) {
  return ApiError(404, std::move(message), "invalid_request_error", std::nullopt, std::move(code));
}
[[nodiscard]] inline ApiError unavailable(std::string message, std::string code) {
  return ApiError(503, std::move(message), "server_error", std::nullopt, std::move(code));
}

// The field a library message names: the first 'quoted' identifier ("request: 'max_tokens' is
// 0, ..."; "sampling parameter 'top_p' is 1.5, ..."), or the path after "chat request: "
// ("chat request: messages[3].role: unknown role ..."). nullopt when there is none.
[[nodiscard]] inline std::optional<std::string> param_of_library_message(std::string_view message) {
  constexpr std::string_view chat_prefix = "chat request: ";
  if (const std::size_t at = message.find(chat_prefix); at != std::string_view::npos) {
    const std::size_t begin = at + chat_prefix.size();
    const std::size_t end = message.find(": ", begin);
    if (end != std::string_view::npos && end > begin) return std::string(message.substr(begin, end - begin));
  }
  const std::size_t open = message.find('\'');
  if (open == std::string_view::npos) return std::nullopt;
  const std::size_t close = message.find('\'', open + 1);
  if (close == std::string_view::npos || close == open + 1) return std::nullopt;
  const std::string_view name = message.substr(open + 1, close - open - 1);
  for (const char c : name)
    if (!(c == '_' || c == '.' || c == '[' || c == ']' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return std::nullopt;
  return std::string(name);
}

}  // namespace qwen_serve

// qwen-serve's command line, shaped like `vllm serve` (docs/server.md lists every option).
//
//   qwen-serve MODEL_DIR [--host H] [--port P] [--served-model-name NAME] [--api-key KEY] ...
//
// parse_options() turns argv into ServerOptions or throws ServeUsageError (the caller prints it
// and exits 2); --help and --version print and exit 0 through CLI11.
#pragma once

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace qwen_serve {

class ServeUsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ServerOptions {
  std::filesystem::path model;
  std::string host = "127.0.0.1";
  int port = 8000;                        // 0: any free port (the one bound is printed)
  std::string served_model_name;          // empty: the model directory's name
  std::string api_key;                    // empty: no authentication
  std::int64_t max_model_len = 0;         // 0: the model's (capped by the KV pool)
  int max_num_seqs = 64;
  std::int64_t max_num_batched_tokens = 512;
  std::int64_t kv_cache_bytes = 0;        // 0: the engine's default
  unsigned threads = 0;                   // CPU threads for the forward pass; 0: every core
  std::string kv_cache_dtype = "bf16";    // the KV cache's element: bf16 or fp32
  bool enable_prefix_caching = true;
  int max_waiting_requests = 256;         // sequences waiting beyond max_num_seqs before 503
  std::size_t max_body_bytes = std::size_t{32} << 20;
  int http_threads = 128;                 // connections served at once (one thread each)
  int keep_alive_seconds = 5;
  std::string reasoning_parser = "qwen3"; // accepted for vLLM compatibility; Qwen3's parser runs
  std::string tool_call_parser = "hermes";
};

// "4G", "512MiB", "1073741824": bytes, with K/M/G/T suffixes meaning powers of 1024 ("KB",
// "KiB" and "K" alike). Throws ServeUsageError naming the option.
[[nodiscard]] inline std::int64_t parse_byte_size(const std::string& text, const std::string& option) {
  std::size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  std::string unit = text.substr(i);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  int shift = -1;
  if (unit.empty() || unit == "B") shift = 0;
  else if (unit == "K" || unit == "KB" || unit == "KIB") shift = 10;
  else if (unit == "M" || unit == "MB" || unit == "MIB") shift = 20;
  else if (unit == "G" || unit == "GB" || unit == "GIB") shift = 30;
  else if (unit == "T" || unit == "TB" || unit == "TIB") shift = 40;
  if (i == 0 || i > 15 || shift < 0)
    throw ServeUsageError(option + ": '" + text + "' is not a size (an integer with an optional K, M, G or T suffix)");
  const std::int64_t value = std::stoll(text.substr(0, i));
  if (value > (std::numeric_limits<std::int64_t>::max() >> shift)) throw ServeUsageError(option + ": '" + text + "' is too large");
  return value << shift;
}

// Parses argv. Throws ServeUsageError for a bad command line; CLI11 handles --help itself
// (the caller runs app.exit on CLI::ParseError).
inline ServerOptions parse_options(CLI::App& app, int argc, char** argv) {
  ServerOptions o;
  std::string model_positional, model_option, kv_cache_memory;
  bool no_prefix_caching = false, enable_reasoning = false, enable_auto_tool_choice = false;
  app.description("qwen-serve: an OpenAI-compatible HTTP server for Qwen3 checkpoints (docs/server.md)");
  app.add_option("model_dir", model_positional, "checkpoint directory (config.json, *.safetensors, tokenizer files)");
  app.add_option("--model", model_option, "checkpoint directory (instead of the positional argument)");
  app.add_option("--host", o.host, "address to listen on")->capture_default_str();
  app.add_option("--port", o.port, "port to listen on; 0 picks a free one (printed at startup)")->capture_default_str()->check(CLI::Range(0, 65535));
  app.add_option("--served-model-name", o.served_model_name, "the model name clients use (default: the directory's name)");
  app.add_option("--api-key", o.api_key, "require 'Authorization: Bearer KEY' on /v1 routes (or set QWEN_API_KEY)");
  app.add_option("--max-model-len", o.max_model_len, "context length (default: the model's, capped by the KV cache)")->check(CLI::NonNegativeNumber);
  app.add_option("--max-num-seqs", o.max_num_seqs, "sequences run together in one step")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--max-num-batched-tokens", o.max_num_batched_tokens, "tokens in one step")->capture_default_str()->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 24));
  app.add_option("--kv-cache-memory", kv_cache_memory, "KV cache size in bytes, e.g. 2G (default: max-num-seqs full contexts, at most half the free memory)");
  app.add_option("--threads", o.threads, "CPU threads for the forward pass (default: every core)");
  app.add_option("--kv-cache-dtype", o.kv_cache_dtype, "element of the KV cache: bf16 or fp32 (twice the memory)")
      ->capture_default_str()->check(CLI::IsMember({"bf16", "fp32"}));
  app.add_flag("--no-enable-prefix-caching", no_prefix_caching, "turn off reuse of cached prompt blocks");
  app.add_option("--max-waiting-requests", o.max_waiting_requests, "sequences allowed to wait beyond max-num-seqs; more get 503")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  app.add_option("--max-body-bytes", o.max_body_bytes, "largest request body; larger ones get 413")->capture_default_str()->check(CLI::Range(std::size_t{1024}, std::size_t{1} << 32));
  app.add_option("--http-threads", o.http_threads, "connections served at once")->capture_default_str()->check(CLI::Range(2, 4096));
  app.add_option("--keep-alive-timeout", o.keep_alive_seconds, "seconds an idle connection stays open")->capture_default_str()->check(CLI::Range(1, 600));
  // vLLM's switches: accepted; Qwen3's reasoning and tool-call parsers are always on.
  app.add_flag("--enable-reasoning", enable_reasoning, "accepted for vLLM compatibility (reasoning is always split out)");
  app.add_option("--reasoning-parser", o.reasoning_parser, "qwen3 or deepseek_r1 (both split <think>...</think>)")->capture_default_str();
  app.add_flag("--enable-auto-tool-choice", enable_auto_tool_choice, "accepted for vLLM compatibility (tool calls are always parsed)");
  app.add_option("--tool-call-parser", o.tool_call_parser, "hermes (Qwen3's <tool_call> format)")->capture_default_str();
  app.set_version_flag("--version", QWEN_SERVE_VERSION);
  app.parse(argc, argv);

  if (!model_positional.empty() && !model_option.empty() && model_positional != model_option)
    throw ServeUsageError("give the model directory once: '" + model_positional + "' and --model '" + model_option + "' differ");
  o.model = model_option.empty() ? model_positional : model_option;
  if (o.model.empty()) throw ServeUsageError("no model directory (qwen-serve MODEL_DIR, or --model DIR)");
  if (o.served_model_name.empty()) {
    std::filesystem::path p = o.model;
    if (!p.has_filename()) p = p.parent_path();  // "dir/" names "dir"
    o.served_model_name = p.filename().string();
    if (o.served_model_name.empty() || o.served_model_name == ".") o.served_model_name = std::filesystem::absolute(p).filename().string();
  }
  if (o.api_key.empty())
    if (const char* key = std::getenv("QWEN_API_KEY")) o.api_key = key;
  if (!kv_cache_memory.empty()) o.kv_cache_bytes = parse_byte_size(kv_cache_memory, "--kv-cache-memory");
  o.enable_prefix_caching = !no_prefix_caching;
  if (o.reasoning_parser != "qwen3" && o.reasoning_parser != "deepseek_r1")
    throw ServeUsageError("--reasoning-parser: '" + o.reasoning_parser + "' is not supported (qwen3 or deepseek_r1)");
  if (o.tool_call_parser != "hermes")
    throw ServeUsageError("--tool-call-parser: '" + o.tool_call_parser + "' is not supported (hermes: Qwen3's format)");
  return o;
}

}  // namespace qwen_serve

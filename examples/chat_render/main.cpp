// qwen-chat-render: renders OpenAI chat requests with a checkpoint's chat template.
//   qwen-chat-render --tokenizer DIR [--jsonl] [--variant NAME]
// Reads one chat request from stdin -- a JSON object with messages, tools, add_generation_prompt
// (default true) and chat_template_kwargs (enable_thinking) -- and prints the rendered prompt as
// one JSON string followed by a newline. With --jsonl, every input line is one request and every
// output line the JSON string of its prompt, in order.
// The template is read from DIR (tokenizer_config.json, or chat_template.jinja beside it) and
// must be one qwen implements; --variant NAME uses that variant whatever DIR holds.
// Any problem: the error on stderr (with the input line number under --jsonl), exit status 1,
// nothing more on stdout.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <qwen/chat/chat_template.hpp>
#include <qwen/io/json_file.hpp>
#include "../common/command_line.hpp"

namespace {

// stdin is read whole, up to the cap on JSON files.
std::string read_stdin() {
  std::string text;
  char buffer[1 << 16];
  while (const std::size_t n = std::fread(buffer, 1, sizeof buffer, stdin)) {
    text.append(buffer, n);
    if (text.size() > qwen::io::kMaxJsonFileBytes)
      throw qwen::FormatError("<stdin>: more than " + std::to_string(qwen::io::kMaxJsonFileBytes >> 20) + " MiB of input");
  }
  if (std::ferror(stdin)) throw qwen::IoError("<stdin>: read failed");
  return text;
}

// The rendered prompt of one request text, as a JSON string.
std::string render_line(std::string_view text, const std::string& where, const qwen::chat::ChatTemplate& chat_template) {
  const auto request = qwen::io::parse_json_strict<nlohmann::ordered_json>(text, where, "input");
  return nlohmann::json(qwen::chat::render(request, chat_template)).dump();
}

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path tokenizer_dir;
  std::string variant;
  bool jsonl = false;
  CLI::App app("qwen-chat-render: render OpenAI chat requests (stdin) with a checkpoint's chat template");
  app.add_option("--tokenizer", tokenizer_dir, "checkpoint or tokenizer directory (tokenizer_config.json)")->required();
  app.add_option("--variant", variant, "use this template variant whatever the directory holds (known: " +
                                           qwen::chat::known_variant_names() + ")");
  app.add_flag("--jsonl", jsonl, "one request per input line, one result per output line");
  if (const auto status = qwen_tools::parse_command_line(app, argc, argv, "qwen-chat-render")) return *status;
  std::size_t line_number = 0;
  try {
    const auto chat_template = qwen::chat::ChatTemplate::from_directory(
        tokenizer_dir, variant.empty() ? std::nullopt : std::optional<std::string_view>(variant));
    const std::string input = read_stdin();
    if (!jsonl) {
      std::cout << render_line(input, "<stdin>", chat_template) << '\n';
      return 0;
    }
    std::string out;
    for (std::size_t begin = 0; begin < input.size();) {
      ++line_number;
      std::size_t end = input.find('\n', begin);
      if (end == std::string::npos) end = input.size();
      const std::string_view line = std::string_view(input).substr(begin, end - begin);
      if (line.find_first_not_of(" \t\r") == std::string_view::npos)
        throw qwen::FormatError("<stdin>: the line is empty (expected one chat request per line)");
      out += render_line(line, "<stdin>", chat_template);
      out += '\n';
      begin = end + 1;
    }
    std::cout << out;  // all or nothing: no partial output before an error
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "qwen-chat-render: error: ";
    if (jsonl && line_number > 0) std::cerr << "line " << line_number << ": ";
    std::cerr << e.what() << "\n";
    return 1;
  }
}

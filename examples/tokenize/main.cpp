// qwen-tokenize: the Qwen3 tokenizer on the command line.
//   qwen-tokenize --tokenizer DIR            UTF-8 text on stdin -> one JSON array of ids
//   qwen-tokenize --tokenizer DIR --jsonl    one JSON string per line -> one JSON array per line
//   qwen-tokenize --tokenizer DIR --decode   a JSON array of ids on stdin -> the text
//   qwen-tokenize --tokenizer DIR --chat     an OpenAI chat request (JSON object: messages, tools,
//                                            add_generation_prompt (default true),
//                                            chat_template_kwargs) -> the rendered prompt's ids
//     --chat --text   prints the rendered prompt as a JSON string instead of its ids
//     --chat --jsonl  one request per input line, one result per output line
//   The chat template is the one in DIR's tokenizer_config.json (or chat_template.jinja) and must
//   be a variant qwen implements (include/qwen/chat/chat_template.hpp).
// DIR holds tokenizer.json (a path to the file itself also works). Invalid UTF-8 input is an
// error naming the byte offset unless --lenient, which replaces it with U+FFFD; --skip-special
// leaves special tokens out of --decode. Input is checked before the tokenizer is loaded where it
// can be (invalid UTF-8, a malformed id list). Any problem, a command-line one included:
// "qwen-tokenize: error: ..." on stderr, exit status 1.
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <qwen/chat/chat_template.hpp>
#include <qwen/io/json_file.hpp>
#include <qwen/tokenizer/tokenizer.hpp>
#include "../common/command_line.hpp"
#include "../common/input.hpp"

namespace {

using qwen::tokenizer::TokenId;
using qwen::tokenizer::Tokenizer;

std::string ids_to_json(const std::vector<TokenId>& ids) {
  std::string out = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(ids[i]);
  }
  return out + "]";
}

// stdin is read whole, up to qwen_tools::max_input_bytes (a directory as stdin is a read error).
std::string read_stdin() { return qwen::io::read_all(STDIN_FILENO, "stdin", qwen_tools::max_input_bytes); }

// The rendered prompt of one chat request text (its object keys kept in their order: the
// template's tojson prints tools as given).
std::string render_chat(const std::string& text, const std::string& where, const qwen::chat::ChatTemplate& chat_template) {
  return qwen::chat::render(qwen::io::parse_json_strict<nlohmann::ordered_json>(text, where, "input"), chat_template);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qwen-tokenize: encode text to Qwen3 token ids, or decode ids to text"};
  std::filesystem::path dir;
  bool jsonl = false, decode = false, lenient = false, skip_special = false, chat = false, text_only = false;
  app.add_option("--tokenizer", dir, "directory with tokenizer.json (or the file)")->required();
  app.add_flag("--jsonl", jsonl, "read one JSON string per line, print one JSON array of ids per line");
  app.add_flag("--decode", decode, "read a JSON array of ids, print the text");
  app.add_flag("--lenient", lenient, "replace invalid UTF-8 input with U+FFFD instead of failing");
  app.add_flag("--skip-special", skip_special, "with --decode: leave special tokens out");
  app.add_flag("--chat", chat, "read an OpenAI chat request, print the ids of the prompt its chat template renders");
  app.add_flag("--text", text_only, "with --chat: print the rendered prompt as a JSON string instead of ids");
  if (const auto status = qwen_tools::parse_command_line(app, argc, argv, "qwen-tokenize")) return *status;
  try {
    if (jsonl && decode) throw qwen::InvalidArgument("--jsonl and --decode cannot be combined");
    if (skip_special && !decode) throw qwen::InvalidArgument("--skip-special applies to --decode only");
    if (chat && decode) throw qwen::InvalidArgument("--chat and --decode cannot be combined");
    if (text_only && !chat) throw qwen::InvalidArgument("--text applies to --chat only");
    const auto mode = lenient ? qwen::tokenizer::Utf8Mode::Lenient : qwen::tokenizer::Utf8Mode::Strict;
    std::ios::sync_with_stdio(false);
    if (chat) {
      // The template's directory: DIR, or the directory of the tokenizer.json named by DIR.
      const std::filesystem::path template_dir = std::filesystem::is_regular_file(dir) ? dir.parent_path() : dir;
      const auto chat_template = qwen::chat::ChatTemplate::from_directory(template_dir);
      std::optional<Tokenizer> tokenizer;
      if (!text_only) tokenizer.emplace(qwen::tokenizer::read_tokenizer_json(dir));
      const auto result = [&](const std::string& text, const std::string& where) {
        const std::string prompt = render_chat(text, where, chat_template);
        return text_only ? nlohmann::json(prompt).dump() : ids_to_json(tokenizer->encode(prompt, qwen::tokenizer::Utf8Mode::Strict));
      };
      std::string out;  // all or nothing: no partial output before an error
      if (!jsonl) {
        out = result(read_stdin(), "stdin") + '\n';
      } else {
        const std::vector<std::string> lines = qwen_tools::split_lines(read_stdin());
        for (std::size_t n = 1; n <= lines.size(); ++n) {
          const std::string& line = lines[n - 1];
          const std::string where = "stdin line " + std::to_string(n);
          if (line.find_first_not_of(" \t\r") == std::string::npos)
            throw qwen::InvalidArgument(where + ": empty line (expected one chat request per line)");
          try {
            out += result(line, where) + '\n';
          } catch (const qwen::Error& e) {  // name the line whatever went wrong in it
            const std::string what = e.what();
            throw qwen::InvalidArgument(what.starts_with(where) ? what : where + ": " + what);
          }
        }
      }
      std::cout << out;
    } else if (decode) {
      // Input first: a malformed list fails before the 11 MB tokenizer.json is read.
      const qwen::io::json ids = qwen::io::parse_json_strict(read_stdin(), "stdin", "input");
      if (!ids.is_array()) throw qwen::InvalidArgument("stdin: expected a JSON array of token ids, got " + qwen::io::json_preview(ids));
      std::vector<TokenId> list;
      for (std::size_t i = 0; i < ids.size(); ++i) {
        if (!ids[i].is_number_integer() || ids[i].get<std::int64_t>() < INT32_MIN || ids[i].get<std::int64_t>() > INT32_MAX)
          throw qwen::InvalidArgument("stdin: element " + std::to_string(i) + " is " + qwen::io::json_preview(ids[i]) +
                                      ", not a token id");
        list.push_back(static_cast<TokenId>(ids[i].get<std::int64_t>()));
      }
      std::cout << Tokenizer::from_file(dir).decode(list, skip_special);
    } else if (jsonl) {
      const std::vector<std::string> lines = qwen_tools::split_lines(read_stdin());  // read (and size-checked) before the tokenizer loads
      const Tokenizer tokenizer = Tokenizer::from_file(dir);
      std::string out;  // all or nothing, as --chat --jsonl: no partial output before an error
      for (std::size_t n = 1; n <= lines.size(); ++n) {
        const std::string& line = lines[n - 1];
        const std::string where = "stdin line " + std::to_string(n);
        if (line.empty()) throw qwen::InvalidArgument(where + ": empty line (expected a JSON string)");
        const qwen::io::json text = qwen::io::parse_json_strict(line, where, "line");
        if (!text.is_string()) throw qwen::InvalidArgument(where + ": expected a JSON string, got " + qwen::io::json_preview(text));
        out += ids_to_json(tokenizer.encode(text.get_ref<const std::string&>(), mode)) + '\n';
      }
      std::cout << out;
    } else {
      const std::string text = read_stdin();
      if (mode == qwen::tokenizer::Utf8Mode::Strict) Tokenizer::check_utf8(text);  // before loading
      std::cout << ids_to_json(Tokenizer::from_file(dir).encode(text, mode)) << '\n';
    }
    std::cout.flush();
    if (!std::cout) throw qwen::IoError("stdout: write failed");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qwen-tokenize: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

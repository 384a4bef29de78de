// qwen-tokenize: the Qwen3 tokenizer on the command line.
//   qwen-tokenize --tokenizer DIR            UTF-8 text on stdin -> one JSON array of ids
//   qwen-tokenize --tokenizer DIR --jsonl    one JSON string per line -> one JSON array per line
//   qwen-tokenize --tokenizer DIR --decode   a JSON array of ids on stdin -> the text
// DIR holds tokenizer.json (a path to the file itself also works). Invalid UTF-8 input is an
// error naming the byte offset unless --lenient, which replaces it with U+FFFD; --skip-special
// leaves special tokens out of --decode. Any problem: the error on stderr, exit status 1 (a
// command-line usage error: CLI11's message and status). Input is checked before the tokenizer is
// loaded where it can be (invalid UTF-8, a malformed id list).
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <qwen/io/json_file.hpp>
#include <qwen/tokenizer/tokenizer.hpp>

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

std::string read_stdin() {
  std::ostringstream s;
  s << std::cin.rdbuf();
  return s.str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qwen-tokenize: encode text to Qwen3 token ids, or decode ids to text"};
  std::filesystem::path dir;
  bool jsonl = false, decode = false, lenient = false, skip_special = false;
  app.add_option("--tokenizer", dir, "directory with tokenizer.json (or the file)")->required();
  app.add_flag("--jsonl", jsonl, "read one JSON string per line, print one JSON array of ids per line");
  app.add_flag("--decode", decode, "read a JSON array of ids, print the text");
  app.add_flag("--lenient", lenient, "replace invalid UTF-8 input with U+FFFD instead of failing");
  app.add_flag("--skip-special", skip_special, "with --decode: leave special tokens out");
  CLI11_PARSE(app, argc, argv);
  try {
    if (jsonl && decode) throw qwen::InvalidArgument("--jsonl and --decode cannot be combined");
    if (skip_special && !decode) throw qwen::InvalidArgument("--skip-special applies to --decode only");
    const auto mode = lenient ? qwen::tokenizer::Utf8Mode::Lenient : qwen::tokenizer::Utf8Mode::Strict;
    std::ios::sync_with_stdio(false);
    if (decode) {
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
      const Tokenizer tokenizer = Tokenizer::from_file(dir);
      std::string line;
      for (std::size_t n = 1; std::getline(std::cin, line); ++n) {
        const std::string where = "stdin line " + std::to_string(n);
        if (line.empty()) throw qwen::InvalidArgument(where + ": empty line (expected a JSON string)");
        const qwen::io::json text = qwen::io::parse_json_strict(line, where, "line");
        if (!text.is_string()) throw qwen::InvalidArgument(where + ": expected a JSON string, got " + qwen::io::json_preview(text));
        std::cout << ids_to_json(tokenizer.encode(text.get_ref<const std::string&>(), mode)) << '\n';
      }
    } else {
      const std::string text = read_stdin();
      if (mode == qwen::tokenizer::Utf8Mode::Strict) Tokenizer::check_utf8(text);  // before loading
      std::cout << ids_to_json(Tokenizer::from_file(dir).encode(text, mode)) << '\n';
    }
    std::cout.flush();
    if (!std::cout) throw qwen::IoError("stdout: write failed");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qwen-tokenize: %s\n", e.what());
    return 1;
  }
  return 0;
}

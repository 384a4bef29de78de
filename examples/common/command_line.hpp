// The tools' command-line parsing (CLI11) with the tools' error form: a usage error is printed as
// "TOOL: error: MESSAGE" (as every other error of the tool), then a pointer to --help.
#pragma once

#include <cstdio>
#include <optional>
#include <string_view>

#include <CLI/CLI.hpp>

namespace qwen_tools {

// Parses argv into `app`. nullopt: go on. Otherwise the tool exits with the returned status:
// 0 after --help (CLI11 printed it), `usage_status` after a usage error.
[[nodiscard]] inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv, const char* tool, int usage_status = 1) {
  // "--model=" with nothing after '=': CLI11 would take the next argument as the value and then
  // report something else (e.g. "--model= --prompt-ids 1": "argument not expected: 1").
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.starts_with("--") && arg.size() > 3 && arg.back() == '=' && arg.find('=') == arg.size() - 1) {
      std::fprintf(stderr, "%s: error: %.*s has an empty value\nRun %s --help for the options.\n", tool,
                   static_cast<int>(arg.size() - 1), arg.data(), tool);
      return usage_status;
    }
  }
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);  // --help
    std::fprintf(stderr, "%s: error: %s\nRun %s --help for the options.\n", tool, e.what(), tool);
    return usage_status;
  }
}

}  // namespace qwen_tools

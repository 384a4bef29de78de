// What the tools read whole (qwen-tokenize's stdin, qwen-generate's --input): one size bound and
// one way of cutting the text into lines.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace qwen_tools {

// Input read whole is at most this many bytes: an endless source such as /dev/zero is refused
// there (qwen::io::read_all's error names the limit).
inline constexpr std::uint64_t max_input_bytes = std::uint64_t{256} << 20;

// The lines of `text`, split at '\n' (a last line without one counts; none after a final '\n').
[[nodiscard]] inline std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t begin = 0;
  while (begin < text.size()) {
    const std::size_t end = std::min(text.find('\n', begin), text.size());
    lines.push_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  return lines;
}

}  // namespace qwen_tools

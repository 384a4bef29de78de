// Runs a command line through the shell with stdout and stderr captured, for tests of the
// example tools. A crash (a signal, e.g. from a sanitizer abort) is reported as exited = false.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "scratch_dir.hpp"

namespace qwen::testing {

struct ProcessResult {
  bool exited = false;  // false: killed by a signal
  int status = -1;      // exit status when exited
  std::string out;
  std::string err;
};

// Quotes one argument for /bin/sh.
inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

inline ProcessResult run_process(const std::string& command_line) {
  static int counter = 0;
  const std::filesystem::path base = std::filesystem::temp_directory_path() /
                                     ("qwen-test-process-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  const std::string out = base.string() + ".out", err = base.string() + ".err";
  const int raw = std::system((command_line + " > " + shell_quote(out) + " 2> " + shell_quote(err)).c_str());
  ProcessResult r;
  r.exited = raw != -1 && WIFEXITED(raw);
  r.status = r.exited ? WEXITSTATUS(raw) : -1;
  r.out = read_file(out);
  r.err = read_file(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

}  // namespace qwen::testing

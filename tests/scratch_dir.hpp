// A scratch directory for one test: fresh on construction, removed with everything in it on
// destruction. Named qwen-test-TAG-PID-N under the system temp dir, so that tests running in
// parallel processes (ctest -j) or twice in one process never share one. Also: whole-file read
// and write for the files tests put there.
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

namespace qwen::testing {

class ScratchDir {
 public:
  // An empty directory.
  explicit ScratchDir(std::string_view tag) : path_(make_path(tag)) { std::filesystem::create_directories(path_); }
  // A recursive copy of `source` (a golden checkpoint, say).
  ScratchDir(std::string_view tag, const std::filesystem::path& source) : path_(make_path(tag)) {
    std::filesystem::copy(source, path_, std::filesystem::copy_options::recursive);
  }
  ~ScratchDir() {
    std::error_code ec;  // a destructor must not throw; a leftover directory is harmless
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  [[nodiscard]] std::filesystem::path operator/(const std::filesystem::path& name) const { return path_ / name; }

 private:
  static std::filesystem::path make_path(std::string_view tag) {
    static std::atomic<int> counter{0};
    const auto path = std::filesystem::temp_directory_path() /
                      ("qwen-test-" + std::string(tag) + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path);  // a leftover of an earlier process with the same pid
    return path;
  }

  std::filesystem::path path_;
};

// Replaces `path` with exactly `bytes` (NULs included).
inline void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

// The whole content of `path`; a file that cannot be opened is an error naming it.
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace qwen::testing

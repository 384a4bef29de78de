// A whole file mapped read-only into memory, owned by one object (move-only RAII).
//
// Contract: open() maps the entire regular file with PROT_READ / MAP_PRIVATE and closes the
// descriptor (the mapping keeps the file alive). An empty file is not mapped (mmap of length 0
// fails) and is represented as data() == nullptr, size() == 0, so the format layer can report
// "empty file" itself. Every failure is an IoError naming the path and strerror(errno).
//
// Caveat shared by every mmap loader: if another process truncates the file while it is mapped,
// touching the lost pages raises SIGBUS. Checkpoints are expected to be immutable while loaded.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <utility>

#include "qwen/core/error.hpp"

namespace qwen::io {

class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept
      : path_(std::move(other.path_)), data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      unmap();
      path_ = std::move(other.path_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~MappedFile() { unmap(); }

  // Maps `path`. Throws IoError if it cannot be opened, is not a regular file, or cannot be mapped.
  [[nodiscard]] static MappedFile open(const std::filesystem::path& path) {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever; it is
    // rejected below by the regular-file check. It has no effect on regular files.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) fail(path, "cannot open");
    struct FdCloser {
      int fd;
      ~FdCloser() { ::close(fd); }
    } closer{fd};

    struct stat st {};
    if (::fstat(fd, &st) != 0) fail(path, "cannot stat");
    if (!S_ISREG(st.st_mode)) throw_error<IoError>(path.string(), ": not a regular file");
    if (st.st_size < 0 || static_cast<std::uintmax_t>(st.st_size) > SIZE_MAX)
      throw_error<IoError>(path.string(), ": file size ", st.st_size, " cannot be mapped");

    MappedFile file;
    file.path_ = path;
    file.size_ = static_cast<std::size_t>(st.st_size);
    if (file.size_ == 0) return file;  // nothing to map; see the contract above
    void* p = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      file.size_ = 0;
      fail(path, "cannot mmap");
    }
    file.data_ = p;
    return file;
  }

  // First byte of the mapping; nullptr for an empty file or a moved-from object.
  [[nodiscard]] const std::byte* data() const noexcept { return static_cast<const std::byte*>(data_); }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data(), size_}; }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  [[noreturn]] static void fail(const std::filesystem::path& path, const char* what) {
    const int err = errno;
    throw_error<IoError>(path.string(), ": ", what, ": ", std::strerror(err));
  }

  void unmap() noexcept {
    if (data_ != nullptr) ::munmap(data_, size_);
    data_ = nullptr;
    size_ = 0;
  }

  std::filesystem::path path_;
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace qwen::io

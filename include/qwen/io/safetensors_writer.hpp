// Writing .safetensors files and sharded checkpoints that the reference (Python/Rust) library and
// SafetensorsFile / Checkpoint accept.
//
// Layout written: u64 little-endian header length, compact JSON header padded with spaces to a
// multiple of 8 bytes (as the reference does, so the data section starts 8-byte aligned), then the
// tensors back to back in the order given. Each tensor's data is element-aligned when the tensors
// are given in descending dtype size (the reference writer sorts that way; this one keeps the
// caller's order).
//
// Every file is written to a temporary file in the target directory, fsynced, and renamed over the
// target, so a failed or interrupted write never leaves a partial file under the target name.
// Bad arguments throw InvalidArgument, filesystem failures IoError (naming path and strerror).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/core/error.hpp"
#include "qwen/core/tensor.hpp"
#include "qwen/io/safetensors.hpp"

namespace qwen::io {

using NamedTensor = std::pair<std::string, TensorView>;

namespace detail {

// A temporary file beside `target`; commit() fsyncs and renames it over `target`. Destroyed
// without commit() (an exception on the way), it is closed and unlinked.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path target) : target_(std::move(target)) {
    static std::atomic<unsigned> counter{0};
    temp_ = target_;
    temp_ += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0) fail("cannot create temporary file ", temp_);
  }
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(temp_.c_str());
    }
  }

  void write(const void* data, std::size_t n) {
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {  // write() may write less than asked (and at most ~2 GB per call)
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) fail("cannot write ", temp_);
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  }

  void commit() {
    if (::fsync(fd_) != 0) fail("cannot fsync ", temp_);
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) {
      const int err = errno;
      ::unlink(temp_.c_str());
      errno = err;
      fail("cannot close ", temp_);
    }
    if (std::rename(temp_.c_str(), target_.c_str()) != 0) {
      const int err = errno;
      ::unlink(temp_.c_str());
      errno = err;
      fail("cannot rename ", temp_, " to ", target_);
    }
  }

 private:
  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    const int err = errno;
    throw_error<IoError>(target_.string(), ": ", std::forward<Parts>(parts)..., ": ", std::strerror(err));
  }

  std::filesystem::path target_, temp_;
  int fd_ = -1;
};

inline void write_text_file(const std::filesystem::path& path, const std::string& text) {
  AtomicFileWriter out(path);
  out.write(text.data(), text.size());
  out.commit();
}

// Bytes of a tensor about to be written; throws InvalidArgument unless it can be written as is.
[[nodiscard]] inline std::uint64_t checked_write_size(const std::filesystem::path& path, const NamedTensor& t) {
  // Named references, not a structured binding: a lambda may not capture one before clang 16.
  const std::string& name = t.first;
  const TensorView& view = t.second;
  const auto bad = [&](auto&&... parts) { throw_error<InvalidArgument>(path.string(), ": tensor \"", name, "\": ", parts...); };
  if (name.empty() || name == "__metadata__") bad("name is not allowed");
  if (first_invalid_utf8(name) != std::string_view::npos) bad("name is not valid UTF-8");
  for (std::int64_t d : view.shape)
    if (d < 0) bad("negative dimension in shape ", shape_string(view.shape));
  const auto bytes = byte_size(view.dtype, view.shape);
  if (!bytes) bad("shape ", shape_string(view.shape), " is too large");
  // Checked after the size: is_contiguous() multiplies extents in int64.
  if (view.strides.size() != view.shape.size() || !view.is_contiguous())
    bad("view with shape ", shape_string(view.shape), " and strides ", shape_string(view.strides), " is not contiguous");
  if (*bytes > 0 && view.data == nullptr) bad("null data for ", *bytes, " bytes");
  return *bytes;
}

}  // namespace detail

// Writes `tensors` (contiguous views, unique names) and `metadata` to `path` as one safetensors file.
inline void write_safetensors(const std::filesystem::path& path, std::span<const NamedTensor> tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    for (const auto& [k, v] : metadata)
      if (first_invalid_utf8(k) != std::string_view::npos || first_invalid_utf8(v) != std::string_view::npos)
        throw_error<InvalidArgument>(path.string(), ": metadata entry \"", k, "\" is not valid UTF-8");
    header["__metadata__"] = metadata;
  }
  std::set<std::string_view> seen;
  std::uint64_t offset = 0;
  for (const NamedTensor& t : tensors) {
    const std::uint64_t bytes = detail::checked_write_size(path, t);
    if (!seen.insert(t.first).second) throw_error<InvalidArgument>(path.string(), ": duplicate tensor name \"", t.first, "\"");
    std::uint64_t end = 0;
    if (__builtin_add_overflow(offset, bytes, &end))
      throw_error<InvalidArgument>(path.string(), ": total tensor size overflows 64 bits");
    header[t.first] = {{"dtype", dtype_name(t.second.dtype)}, {"shape", t.second.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }

  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > kMaxHeaderBytes)
    throw_error<InvalidArgument>(path.string(), ": header of ", text.size(), " bytes exceeds the limit of ", kMaxHeaderBytes);

  detail::AtomicFileWriter out(path);
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
  out.write(length, sizeof length);
  out.write(text.data(), text.size());
  for (const NamedTensor& t : tensors) out.write(t.second.data, t.second.nbytes());
  out.commit();
}

// Writes `dir`/model.safetensors.index.json: {"metadata": {"total_size": N}, "weight_map": {...}}.
inline void write_safetensors_index(const std::filesystem::path& dir, const std::map<std::string, std::string>& weight_map,
                                    std::uint64_t total_size) {
  const nlohmann::json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  detail::write_text_file(dir / kIndexFileName, index.dump(2) + "\n");
}

// Writes a sharded checkpoint into `dir` (created if missing) the way Hugging Face names it:
// model-00001-of-0000N.safetensors ... plus model.safetensors.index.json. Tensors are taken in the
// order given and a new shard starts when the next tensor would push the current one past
// `max_shard_bytes` (a larger tensor gets a shard of its own). `metadata` goes into every shard.
// Each file is written atomically and the index last, so a failure leaves no index.
// Returns the shard paths.
inline std::vector<std::filesystem::path> write_sharded_safetensors(const std::filesystem::path& dir,
                                                                    std::span<const NamedTensor> tensors,
                                                                    std::uint64_t max_shard_bytes,
                                                                    const std::map<std::string, std::string>& metadata = {}) {
  std::vector<std::vector<NamedTensor>> shards;
  std::set<std::string_view> seen;
  std::uint64_t shard_bytes = 0, total = 0;
  for (const NamedTensor& t : tensors) {
    const std::uint64_t bytes = detail::checked_write_size(dir, t);
    if (!seen.insert(t.first).second) throw_error<InvalidArgument>(dir.string(), ": duplicate tensor name \"", t.first, "\"");
    if (shards.empty() || (shard_bytes > 0 && bytes > max_shard_bytes - std::min(max_shard_bytes, shard_bytes))) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(t);
    shard_bytes += bytes;
    if (__builtin_add_overflow(total, bytes, &total)) throw_error<InvalidArgument>(dir.string(), ": total size overflows 64 bits");
  }
  if (shards.empty()) throw_error<InvalidArgument>(dir.string(), ": a sharded checkpoint needs at least one tensor");

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw_error<IoError>(dir.string(), ": cannot create directory: ", ec.message());

  std::vector<std::filesystem::path> paths;
  std::map<std::string, std::string> weight_map;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    write_safetensors(dir / name, shards[i], metadata);
    paths.push_back(dir / name);
    for (const NamedTensor& t : shards[i]) weight_map.emplace(t.first, name);
  }
  write_safetensors_index(dir, weight_map, total);
  return paths;
}

}  // namespace qwen::io

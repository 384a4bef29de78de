// Reading one .safetensors file: strict validation on open, then zero-copy views into the mapping.
//
// Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian u64 N, then N bytes
// of UTF-8 JSON `{name: {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {string: string}}`, then the data section. Offsets are relative to the start of
// the data section (byte 8 + N of the file).
//
// What open() accepts mirrors the reference (Rust) implementation: the header is at most 100 MB,
// every tensor's byte span matches its shape and dtype, and the spans tile the data section
// exactly -- no overlaps, no holes, no trailing bytes (the reference's "MetadataIncompleteBuffer").
// The header goes through parse_json_strict (io/json_file.hpp), which is stricter than the
// reference in two places: duplicate JSON keys are rejected (the reference keeps the last one
// silently), and objects/arrays may nest at most kMaxJsonDepth levels. Like the reference, a NUL
// byte or anything else after the JSON value is rejected, and `"__metadata__": null` is taken as
// no metadata. Every failure is a FormatError whose message starts with the file path.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/core/dtype.hpp"
#include "qwen/core/error.hpp"
#include "qwen/core/tensor.hpp"
#include "qwen/io/json_file.hpp"
#include "qwen/io/mapped_file.hpp"

namespace qwen::io {

// The reference implementation's cap on the JSON header (guards against absurd allocations).
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
// The names Hugging Face gives a checkpoint's single file and its shard index.
inline constexpr const char* kSingleFileName = "model.safetensors";
inline constexpr const char* kIndexFileName = "model.safetensors.index.json";

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  std::uint64_t begin = 0, end = 0;  // [begin, end): byte offsets relative to the data section

  [[nodiscard]] std::uint64_t nbytes() const noexcept { return end - begin; }
};

namespace detail {

// Bytes of a tensor with non-negative extents `shape`, or nullopt when the shape is too large.
// Zero extents count as 1 in the bound: Shape arithmetic elsewhere (element_count, strides) forms
// partial products in int64, which must not overflow even for a zero-size [0, 2^62, 2^62].
[[nodiscard]] inline std::optional<std::uint64_t> byte_size(DType dtype, std::span<const std::int64_t> shape) noexcept {
  std::uint64_t bound = dtype_size(dtype);
  bool empty = false;
  for (const std::int64_t d : shape) {
    empty = empty || d == 0;
    if (__builtin_mul_overflow(bound, static_cast<std::uint64_t>(d == 0 ? 1 : d), &bound)) return std::nullopt;
  }
  if (bound > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
  return empty ? 0 : bound;
}

}  // namespace detail

class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws IoError if it cannot be read, FormatError if it is malformed.
  [[nodiscard]] static SafetensorsFile open(const std::filesystem::path& path) {
    SafetensorsFile file;
    file.file_ = MappedFile::open(path);
    file.parse_header();
    file.check_layout();
    return file;
  }

  // All tensors in data-offset order (the order they lie in the file; zero-size ties by name).
  [[nodiscard]] std::span<const TensorInfo> tensors() const noexcept { return tensors_; }
  [[nodiscard]] std::size_t tensor_count() const noexcept { return tensors_.size(); }

  // The tensor's entry, or nullptr. The pointer lives as long as this object.
  [[nodiscard]] const TensorInfo* find(std::string_view name) const {
    const auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &tensors_[it->second];
  }

  // Zero-copy view into the mapping; throws WeightError naming tensor and file when absent.
  // The data pointer is element-aligned only if the writer arranged it (ours, given tensors in
  // descending dtype size, and the reference writer do); crafted files may be unaligned.
  [[nodiscard]] TensorView view(std::string_view name) const {
    const TensorInfo* info = find(name);
    if (info == nullptr) throw_error<WeightError>(path().string(), ": no tensor named \"", name, "\"");
    return view(*info);
  }
  // Precondition: `info` is one of tensors().
  [[nodiscard]] TensorView view(const TensorInfo& info) const {
    return TensorView(file_.data() + data_offset_ + info.begin, info.dtype, info.shape);
  }

  // The "__metadata__" map (empty when absent).
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return file_.path(); }
  [[nodiscard]] std::uint64_t file_size() const noexcept { return file_.size(); }
  // Start of the data section in the file: 8 + header length.
  [[nodiscard]] std::uint64_t data_offset() const noexcept { return data_offset_; }
  [[nodiscard]] std::span<const std::byte> data_section() const noexcept {
    return file_.bytes().subspan(data_offset_);
  }

 private:
  SafetensorsFile() = default;

  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    throw_error<FormatError>(path().string(), ": ", std::forward<Parts>(parts)...);
  }

  void parse_header() {
    const std::size_t size = file_.size();
    if (size == 0) fail("empty file (a safetensors file starts with an 8-byte header length)");
    if (size < 8) fail("file is ", size, " bytes, shorter than the 8-byte header length");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | std::to_integer<std::uint64_t>(file_.data()[i]);
    if (n > kMaxHeaderBytes) fail("header length ", n, " exceeds the limit of ", kMaxHeaderBytes, " bytes");
    if (n > size - 8) fail("header length ", n, " runs past the end of the file (8 + ", n, " > file size ", size, ")");
    data_offset_ = 8 + n;

    const std::string_view text(reinterpret_cast<const char*>(file_.data()) + 8, static_cast<std::size_t>(n));
    const nlohmann::json header = parse_json_strict(text, path().string() + ": header", "header");
    if (!header.is_object()) fail("header is not a JSON object (got ", header.type_name(), ")");

    for (const auto& [key, value] : header.items()) {
      if (key == "__metadata__") parse_metadata(value);
      else tensors_.push_back(parse_entry(key, value));
    }
  }

  void parse_metadata(const nlohmann::json& value) {
    if (value.is_null()) return;
    if (!value.is_object()) fail("\"__metadata__\" is not an object of strings (got ", value.type_name(), ")");
    for (const auto& [k, v] : value.items()) {
      if (!v.is_string())
        fail("\"__metadata__\" is not an object of strings: value of \"", k, "\" is a ", v.type_name());
      metadata_.emplace(k, v.get<std::string>());
    }
  }

  TensorInfo parse_entry(const std::string& name, const nlohmann::json& entry) const {
    const auto bad = [&](auto&&... parts) { fail("tensor \"", name, "\": ", parts...); };
    if (!entry.is_object()) bad("entry is not an object (got ", entry.type_name(), ")");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!entry.contains(field)) bad("missing \"", field, "\"");

    TensorInfo info;
    info.name = name;
    const auto& dtype = entry["dtype"];
    if (!dtype.is_string()) bad("\"dtype\" is not a string (got ", dtype.type_name(), ")");
    const auto parsed = parse_dtype(dtype.get_ref<const std::string&>());
    if (!parsed) bad("unknown dtype \"", dtype.get_ref<const std::string&>(), "\"");
    info.dtype = *parsed;

    const auto& shape = entry["shape"];
    if (!shape.is_array()) bad("\"shape\" is not an array (got ", shape.type_name(), ")");
    for (const auto& d : shape) {
      if (d.is_number_unsigned()) {
        const auto v = d.get<std::uint64_t>();
        if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
          bad("dimension ", v, " is too large");
        info.shape.push_back(static_cast<std::int64_t>(v));
      } else if (d.is_number_integer()) {
        bad("negative dimension ", d.get<std::int64_t>(), " in \"shape\"");
      } else {
        bad("\"shape\" holds a ", d.type_name(), ", not an integer");
      }
    }

    const auto& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
      bad("\"data_offsets\" is not an array of two non-negative integers");
    info.begin = offsets[0].get<std::uint64_t>();
    info.end = offsets[1].get<std::uint64_t>();
    if (info.begin > info.end) bad("data_offsets [", info.begin, ", ", info.end, "]: begin is after end");

    const auto bytes = detail::byte_size(info.dtype, info.shape);
    if (!bytes) bad("shape ", shape_string(info.shape), " of ", dtype_name(info.dtype), " overflows 64-bit byte counts");
    if (*bytes != info.nbytes())
      bad("shape ", shape_string(info.shape), " of ", dtype_name(info.dtype), " needs ", *bytes, " bytes, but data_offsets [",
          info.begin, ", ", info.end, "] span ", info.nbytes(), " bytes");

    const std::uint64_t data_size = file_.size() - data_offset_;
    if (info.end > data_size)
      bad("data_offsets [", info.begin, ", ", info.end, "] run past the end of the data section (", data_size, " bytes)");
    return info;
  }

  // The spans must tile [0, data size) exactly: sorted by offset, each starts where the last ended.
  void check_layout() {
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    std::uint64_t covered = 0;  // end of the spans seen so far
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      const TensorInfo& t = tensors_[i];
      if (i > 0 && t.begin < covered) {
        const TensorInfo& prev = tensors_[i - 1];
        fail("tensor \"", t.name, "\" data_offsets [", t.begin, ", ", t.end, "] overlap tensor \"", prev.name, "\" [",
             prev.begin, ", ", prev.end, "]");
      }
      if (t.begin > covered)
        fail("bytes [", covered, ", ", t.begin, ") of the data section belong to no tensor (hole before tensor \"", t.name, "\")");
      covered = t.end;
      by_name_.emplace(t.name, i);
    }
    const std::uint64_t data_size = file_.size() - data_offset_;
    if (covered != data_size)
      fail("data section is ", data_size, " bytes but the tensors cover only [0, ", covered, "): ", data_size - covered,
           " trailing bytes");
  }

  MappedFile file_;
  std::uint64_t data_offset_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> by_name_;  // name -> index into tensors_
  std::map<std::string, std::string> metadata_;
};

}  // namespace qwen::io

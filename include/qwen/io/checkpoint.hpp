// A checkpoint directory as Hugging Face lays it out: either one `model.safetensors`, or
// `model.safetensors.index.json` ({"weight_map": {tensor: shard file}, "metadata": {...}}) plus the
// shard files it names. When both are present the single file wins, as in transformers (5.23,
// modeling_utils.py, _get_resolved_checkpoint_files: a local directory's model.safetensors is
// tried before model.safetensors.index.json), so that qwen binds the weights the reference does.
//
// open() maps every file and cross-checks the index against the shards, so later lookups cannot
// fail on a broken checkpoint. Errors: IoError when something is not on disk (directory, both
// entry files, a shard named by the index), is a dangling or looping symbolic link, or cannot be
// read; FormatError when a file or the index is malformed or the index disagrees with the
// shards; WeightError when a caller asks for a tensor the checkpoint lacks. Messages start with
// the directory or file and name the tensor and the shard involved.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/core/error.hpp"
#include "qwen/core/tensor.hpp"
#include "qwen/io/json_file.hpp"
#include "qwen/io/path_status.hpp"
#include "qwen/io/safetensors.hpp"

namespace qwen::io {

class Checkpoint {
 public:
  [[nodiscard]] static Checkpoint open(const std::filesystem::path& dir) {
    const std::filesystem::file_type type = file_type_at(dir);
    if (type == std::filesystem::file_type::not_found) throw_error<IoError>(dir.string(), ": checkpoint directory does not exist");
    if (type != std::filesystem::file_type::directory) throw_error<IoError>(dir.string(), ": not a directory");

    Checkpoint ckpt;
    ckpt.dir_ = dir;
    const auto index = dir / kIndexFileName;
    const auto single = dir / kSingleFileName;
    if (path_exists(single)) {  // first, as in transformers (see the top of this file)
      ckpt.files_.push_back(SafetensorsFile::open(single));
      for (const TensorInfo& t : ckpt.files_[0].tensors()) ckpt.tensors_.emplace(t.name, Entry{0, &t});
    } else if (path_exists(index)) {
      ckpt.open_sharded(index);
    } else {
      throw_error<IoError>(dir.string(), ": neither model.safetensors nor model.safetensors.index.json found");
    }
    return ckpt;
  }

  [[nodiscard]] const std::filesystem::path& dir() const noexcept { return dir_; }
  [[nodiscard]] bool is_sharded() const noexcept { return sharded_; }

  // Every tensor name, sorted.
  [[nodiscard]] std::vector<std::string> tensor_names() const {
    std::vector<std::string> names;
    names.reserve(tensors_.size());
    for (const auto& [name, entry] : tensors_) names.push_back(name);
    return names;
  }
  [[nodiscard]] std::size_t tensor_count() const noexcept { return tensors_.size(); }
  [[nodiscard]] bool contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

  // Throw WeightError naming the tensor and the directory when the tensor is absent.
  [[nodiscard]] const TensorInfo& info(std::string_view name) const { return *entry(name).info; }
  [[nodiscard]] TensorView view(std::string_view name) const {
    const Entry& e = entry(name);
    return files_[e.file].view(*e.info);
  }
  [[nodiscard]] const std::filesystem::path& file_of(std::string_view name) const { return files_[entry(name).file].path(); }

  // Sum of every tensor's bytes.
  [[nodiscard]] std::uint64_t total_bytes() const noexcept {
    std::uint64_t total = 0;
    for (const auto& [name, e] : tensors_) total += e.info->nbytes();  // bounded by the mapped sizes
    return total;
  }
  // The safetensors files, in the order opened (sorted by name for a sharded checkpoint).
  [[nodiscard]] std::vector<std::filesystem::path> files() const {
    std::vector<std::filesystem::path> paths;
    for (const SafetensorsFile& f : files_) paths.push_back(f.path());
    return paths;
  }
  [[nodiscard]] const std::vector<SafetensorsFile>& safetensors_files() const noexcept { return files_; }

 private:
  // `info` points into files_[file]; it stays valid when the Checkpoint moves because moving a
  // vector keeps its elements' heap storage.
  struct Entry {
    std::size_t file;
    const TensorInfo* info;
  };

  Checkpoint() = default;

  const Entry& entry(std::string_view name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) throw_error<WeightError>(dir_.string(), ": checkpoint has no tensor named \"", name, "\"");
    return it->second;
  }

  // A weight_map value must stay inside the directory: relative, no "..", no NUL.
  static bool escapes(const std::string& shard) {
    if (shard.empty() || shard.find('\0') != std::string::npos) return true;
    const std::filesystem::path p(shard);
    if (p.has_root_path()) return true;
    for (const auto& part : p)
      if (part == "..") return true;
    return false;
  }

  void open_sharded(const std::filesystem::path& index_path) {
    sharded_ = true;
    const std::string where = index_path.string();
    const nlohmann::json index = read_json_file(index_path);
    if (!index.is_object()) throw_error<FormatError>(where, ": index is not a JSON object (got ", index.type_name(), ")");
    const auto wm = index.find("weight_map");
    if (wm == index.end()) throw_error<FormatError>(where, ": no \"weight_map\" object");
    if (!wm->is_object()) throw_error<FormatError>(where, ": \"weight_map\" is not an object (got ", wm->type_name(), ")");
    if (wm->empty()) throw_error<FormatError>(where, ": \"weight_map\" is empty");

    std::map<std::string, std::string, std::less<>> weight_map;  // tensor -> shard file
    std::set<std::string> shard_names;
    for (const auto& [tensor, shard] : wm->items()) {
      if (!shard.is_string())
        throw_error<FormatError>(where, ": weight_map value for tensor \"", tensor, "\" is a ", shard.type_name(), ", not a file name");
      const auto& name = shard.get_ref<const std::string&>();
      if (escapes(name))
        throw_error<FormatError>(where, ": shard path \"", name, "\" for tensor \"", tensor, "\" escapes the checkpoint directory");
      // "./a.safetensors" and "a.safetensors" are the same shard.
      const std::string normal = std::filesystem::path(name).lexically_normal().string();
      weight_map.emplace(tensor, normal);
      shard_names.insert(normal);
    }

    std::map<std::string, std::size_t> file_of_shard;  // shard name -> index into files_
    files_.reserve(shard_names.size());
    for (const std::string& shard : shard_names) {
      const auto path = dir_ / shard;
      if (!path_exists(path))  // a dangling or looping link throws, naming the path
        throw_error<IoError>(where, ": missing shard \"", shard, "\" (", path.string(), " does not exist)");
      file_of_shard.emplace(shard, files_.size());
      files_.push_back(SafetensorsFile::open(path));
    }

    // files_ is complete, so pointers into it are now stable.
    std::vector<std::string> shard_of_file(files_.size());
    for (const auto& [shard, i] : file_of_shard) shard_of_file[i] = shard;
    for (std::size_t i = 0; i < files_.size(); ++i) {
      for (const TensorInfo& t : files_[i].tensors()) {
        const auto [it, fresh] = tensors_.emplace(t.name, Entry{i, &t});
        if (!fresh)
          throw_error<FormatError>(where, ": tensor \"", t.name, "\" is in two shards: \"", shard_of_file[it->second.file],
                                   "\" and \"", shard_of_file[i], "\"");
        if (!weight_map.contains(t.name))
          throw_error<FormatError>(where, ": tensor \"", t.name, "\" in shard \"", shard_of_file[i], "\" is absent from weight_map");
      }
    }
    for (const auto& [tensor, shard] : weight_map) {
      const auto it = tensors_.find(tensor);
      if (it == tensors_.end())
        throw_error<FormatError>(where, ": weight_map puts tensor \"", tensor, "\" in shard \"", shard, "\", which does not contain it");
      if (shard_of_file[it->second.file] != shard)
        throw_error<FormatError>(where, ": weight_map puts tensor \"", tensor, "\" in shard \"", shard, "\", but it is in shard \"",
                                 shard_of_file[it->second.file], "\"");
    }
  }

  std::filesystem::path dir_;
  bool sharded_ = false;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, Entry, std::less<>> tensors_;
};

}  // namespace qwen::io

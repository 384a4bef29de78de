// What a path names, asked with error codes so that every failure becomes a qwen::IoError naming
// the path and the operating system's reason (never a std::filesystem::filesystem_error).
//
// Only a path with nothing at all behind it counts as absent. A symbolic link whose target does
// not exist ("dangling"), a symbolic link loop, a component that is not a directory, or a
// permission failure is an error: a checkpoint that points at missing weights is broken, not
// "without weights".
#pragma once

#include <filesystem>
#include <string>
#include <system_error>

#include "qwen/core/error.hpp"

namespace qwen::io {

// The type of the file `path` names, following symbolic links; file_type::not_found only when
// nothing exists at `path` itself. Throws IoError otherwise.
[[nodiscard]] inline std::filesystem::file_type file_type_at(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() != fs::file_type::not_found) {
    if (ec) throw_error<IoError>(path.string(), ": cannot stat: ", ec.message());
    return st.type();
  }
  // Nothing to follow: either nothing is there, or a symbolic link points at nothing.
  std::error_code link_ec;
  const fs::file_status link = fs::symlink_status(path, link_ec);
  if (link.type() == fs::file_type::not_found) return fs::file_type::not_found;
  if (link_ec) throw_error<IoError>(path.string(), ": cannot stat: ", link_ec.message());
  if (link.type() == fs::file_type::symlink) {
    std::error_code target_ec;
    const fs::path target = fs::read_symlink(path, target_ec);
    throw_error<IoError>(path.string(), ": dangling symbolic link (its target ",
                         target_ec ? std::string("cannot be read") : "'" + target.string() + "'", " does not exist)");
  }
  throw_error<IoError>(path.string(), ": cannot stat: ", ec ? ec.message() : std::string("unknown error"));
}

// True when something exists at `path` (following links); false only when nothing is there.
[[nodiscard]] inline bool path_exists(const std::filesystem::path& path) {
  return file_type_at(path) != std::filesystem::file_type::not_found;
}

// The file a "DIR or FILE" argument names: DIR/name when `path` is a directory, else `path`
// itself. A directory that is itself called `name` and holds no `name` (a config.json made a
// directory by mistake) is an IoError naming it, not a search for config.json/config.json.
[[nodiscard]] inline std::filesystem::path file_in_dir_or_file(const std::filesystem::path& path, const std::string& name) {
  if (file_type_at(path) != std::filesystem::file_type::directory) return path;
  const std::filesystem::path inside = path / name;
  if (path.filename() == name && !path_exists(inside))
    throw_error<IoError>(path.string(), ": is a directory, not the file ", name, " (give the file, or the checkpoint directory that holds it)");
  return inside;
}

}  // namespace qwen::io

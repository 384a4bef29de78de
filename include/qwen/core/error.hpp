// Typed errors. The library reports, the application decides: every failure is
// thrown as one of these, with a message that names the file, tensor or field
// and the values involved. Only examples and benchmarks turn them into exit codes.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace qwen {

// Base of every error the library throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A file could not be opened, mapped or read.
class IoError : public Error {
 public:
  using Error::Error;
};

// A file is malformed: bad safetensors header, invalid JSON, inconsistent offsets.
class FormatError : public Error {
 public:
  using Error::Error;
};

// config.json / generation_config.json / tokenizer_config.json disagree with the
// compiled model type or hold an invalid value.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// The checkpoint's tensors do not match the model: missing, extra, wrong shape or dtype.
class WeightError : public Error {
 public:
  using Error::Error;
};

// A caller passed an argument outside the contract (bad index, shape mismatch).
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

namespace detail {
// Concatenates anything streamable into one message.
template <class... Parts>
[[nodiscard]] std::string cat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}
}  // namespace detail

// throw_error<FormatError>(path, ": header length ", n, " exceeds file size ", size);
template <class E, class... Parts>
[[noreturn]] void throw_error(Parts&&... parts) {
  throw E(detail::cat(std::forward<Parts>(parts)...));
}

}  // namespace qwen

// The element types a tensor in a checkpoint may have, named as safetensors names them.
// The scalar types themselves (bf16, fp16, fp8_e4m3) and their conversions live in numeric.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace qwen {

enum class DType : std::uint8_t {
  F64,
  F32,
  F16,
  BF16,
  F8_E4M3,  // OCP e4m3fn: no infinities, max 448
  F8_E5M2,
  I64,
  I32,
  I16,
  I8,
  U8,
  BOOL,
};

// Size of one element in bytes.
[[nodiscard]] constexpr std::size_t dtype_size(DType t) noexcept {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::F8_E4M3: case DType::F8_E5M2: case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 0;
}

// The safetensors spelling ("BF16", "F8_E4M3", ...).
[[nodiscard]] constexpr std::string_view dtype_name(DType t) noexcept {
  switch (t) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::F8_E5M2: return "F8_E5M2";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

// Parses a safetensors dtype string; nullopt for anything unknown.
[[nodiscard]] constexpr std::optional<DType> parse_dtype(std::string_view s) noexcept {
  constexpr DType all[] = {DType::F64, DType::F32, DType::F16,  DType::BF16, DType::F8_E4M3, DType::F8_E5M2,
                           DType::I64, DType::I32, DType::I16, DType::I8,   DType::U8,      DType::BOOL};
  for (DType t : all)
    if (dtype_name(t) == s) return t;
  return std::nullopt;
}

}  // namespace qwen

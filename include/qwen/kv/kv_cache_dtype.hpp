// KVCacheDType: the element type of a KV cache (bf16 or fp32), its name and its size, apart from
// the storage (qwen/kv/paged_kv.hpp) so that option structs can name it without the cache code.
#pragma once

#include <cstdint>
#include <string_view>
#include <type_traits>

#include "qwen/core/error.hpp"
#include "qwen/core/numeric.hpp"

namespace qwen {

// The element type of a KV cache.
enum class KVCacheDType : std::uint8_t { bf16, fp32 };

[[nodiscard]] constexpr std::string_view to_string(KVCacheDType d) noexcept { return d == KVCacheDType::bf16 ? "bf16" : "fp32"; }
[[nodiscard]] constexpr std::int64_t element_bytes(KVCacheDType d) noexcept { return d == KVCacheDType::bf16 ? 2 : 4; }
// "bf16" or "fp32" (also "float32", "bfloat16", as torch spells them); InvalidArgument naming the
// value otherwise.
[[nodiscard]] inline KVCacheDType parse_kv_cache_dtype(std::string_view s) {
  if (s == "bf16" || s == "bfloat16") return KVCacheDType::bf16;
  if (s == "fp32" || s == "float32") return KVCacheDType::fp32;
  throw_error<InvalidArgument>("KV cache dtype '", s, "' is not one of bf16, fp32");
}
// The dtype whose elements are T (float or bf16).
template <class T>
inline constexpr KVCacheDType kv_cache_dtype_of = std::is_same_v<T, bf16> ? KVCacheDType::bf16 : KVCacheDType::fp32;

}  // namespace qwen

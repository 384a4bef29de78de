// Model shapes as types. A shape is any struct with the static constants below; the official
// Qwen3 sizes are provided, and tests define tiny ones the same way. `0.6_B`, `8_B`,
// `30_B_A3B` name the official shapes as values so that a model reads Qwen3<Dense, 8_B, bf16>.
#pragma once

#include <concepts>
#include <string_view>

namespace qwen {

// What every Qwen3 shape provides (attention and embedding dimensions).
template <class S>
concept ModelShape = requires {
  { S::name } -> std::convertible_to<std::string_view>;
  { S::vocab_size } -> std::convertible_to<int>;
  { S::hidden_size } -> std::convertible_to<int>;
  { S::num_layers } -> std::convertible_to<int>;
  { S::num_heads } -> std::convertible_to<int>;
  { S::num_kv_heads } -> std::convertible_to<int>;
  { S::head_dim } -> std::convertible_to<int>;
  { S::intermediate_size } -> std::convertible_to<int>;  // dense MLP width (MoE configs carry one too)
  { S::tie_word_embeddings } -> std::convertible_to<bool>;
};

// A mixture-of-experts shape adds the expert dimensions.
template <class S>
concept MoEShape = ModelShape<S> && requires {
  { S::num_experts } -> std::convertible_to<int>;
  { S::experts_per_token } -> std::convertible_to<int>;
  { S::moe_intermediate_size } -> std::convertible_to<int>;
  { S::norm_topk_prob } -> std::convertible_to<bool>;
};

template <class S>
concept DenseShape = ModelShape<S> && !MoEShape<S>;

namespace shapes {

// Shared by every official size.
struct OfficialCommon {
  static constexpr int vocab_size = 151936;
  static constexpr int head_dim = 128;
};

struct Qwen3_0_6B : OfficialCommon {
  static constexpr std::string_view name = "0.6B";
  static constexpr int hidden_size = 1024, num_layers = 28, num_heads = 16, num_kv_heads = 8, intermediate_size = 3072;
  static constexpr bool tie_word_embeddings = true;
};
struct Qwen3_1_7B : OfficialCommon {
  static constexpr std::string_view name = "1.7B";
  static constexpr int hidden_size = 2048, num_layers = 28, num_heads = 16, num_kv_heads = 8, intermediate_size = 6144;
  static constexpr bool tie_word_embeddings = true;
};
struct Qwen3_4B : OfficialCommon {
  static constexpr std::string_view name = "4B";
  static constexpr int hidden_size = 2560, num_layers = 36, num_heads = 32, num_kv_heads = 8, intermediate_size = 9728;
  static constexpr bool tie_word_embeddings = true;
};
struct Qwen3_8B : OfficialCommon {
  static constexpr std::string_view name = "8B";
  static constexpr int hidden_size = 4096, num_layers = 36, num_heads = 32, num_kv_heads = 8, intermediate_size = 12288;
  static constexpr bool tie_word_embeddings = false;
};
struct Qwen3_14B : OfficialCommon {
  static constexpr std::string_view name = "14B";
  static constexpr int hidden_size = 5120, num_layers = 40, num_heads = 40, num_kv_heads = 8, intermediate_size = 17408;
  static constexpr bool tie_word_embeddings = false;
};
struct Qwen3_32B : OfficialCommon {
  static constexpr std::string_view name = "32B";
  static constexpr int hidden_size = 5120, num_layers = 64, num_heads = 64, num_kv_heads = 8, intermediate_size = 25600;
  static constexpr bool tie_word_embeddings = false;
};
struct Qwen3_30B_A3B : OfficialCommon {
  static constexpr std::string_view name = "30B-A3B";
  static constexpr int hidden_size = 2048, num_layers = 48, num_heads = 32, num_kv_heads = 4, intermediate_size = 6144;
  static constexpr bool tie_word_embeddings = false;
  static constexpr int num_experts = 128, experts_per_token = 8, moe_intermediate_size = 768;
  static constexpr bool norm_topk_prob = true;
};
struct Qwen3_235B_A22B : OfficialCommon {
  static constexpr std::string_view name = "235B-A22B";
  static constexpr int hidden_size = 4096, num_layers = 94, num_heads = 64, num_kv_heads = 4, intermediate_size = 12288;
  static constexpr bool tie_word_embeddings = false;
  static constexpr int num_experts = 128, experts_per_token = 8, moe_intermediate_size = 1536;
  static constexpr bool norm_topk_prob = true;
};

// The tiny shapes of the golden fixtures in tests/golden (written by transformers).
struct TinyCommon {
  static constexpr int vocab_size = 512, hidden_size = 128, num_layers = 2, num_heads = 2, num_kv_heads = 1, head_dim = 128;
  static constexpr int intermediate_size = 192;
};
struct TinyDenseTied : TinyCommon {
  static constexpr std::string_view name = "TinyDenseTied";
  static constexpr bool tie_word_embeddings = true;
};
struct TinyDense : TinyCommon {
  static constexpr std::string_view name = "TinyDense";
  static constexpr bool tie_word_embeddings = false;
};
struct TinyMoE : TinyCommon {
  static constexpr std::string_view name = "TinyMoE";
  static constexpr bool tie_word_embeddings = false;
  static constexpr int num_experts = 8, experts_per_token = 2, moe_intermediate_size = 64;
  static constexpr bool norm_topk_prob = true;
};

// The bundled demo model (models/demo, trained by models/demo/train.py).
struct Demo {
  static constexpr std::string_view name = "Demo";
  static constexpr int vocab_size = 1024, hidden_size = 192, num_layers = 4, num_heads = 4, num_kv_heads = 2, head_dim = 64;
  static constexpr int intermediate_size = 512;
  static constexpr bool tie_word_embeddings = true;
};

}  // namespace shapes

namespace detail {
template <char... Cs>
struct Chars {
  template <std::size_t N>
  static constexpr bool is(const char (&s)[N]) {
    if (sizeof...(Cs) != N - 1) return false;
    const char have[] = {Cs...};
    for (std::size_t i = 0; i < N - 1; ++i)
      if (have[i] != s[i]) return false;
    return true;
  }
};
template <class>
inline constexpr bool no_official_size = false;
}  // namespace detail

namespace literals {

// 0.6_B, 1.7_B, 4_B, 8_B, 14_B, 32_B: the official dense shapes as values.
template <char... Cs>
consteval auto operator""_B() {
  using C = detail::Chars<Cs...>;
  if constexpr (C::is("0.6")) return shapes::Qwen3_0_6B{};
  else if constexpr (C::is("1.7")) return shapes::Qwen3_1_7B{};
  else if constexpr (C::is("4")) return shapes::Qwen3_4B{};
  else if constexpr (C::is("8")) return shapes::Qwen3_8B{};
  else if constexpr (C::is("14")) return shapes::Qwen3_14B{};
  else if constexpr (C::is("32")) return shapes::Qwen3_32B{};
  else static_assert(detail::no_official_size<C>, "no official dense Qwen3 size has this name: use 0.6_B, 1.7_B, 4_B, 8_B, 14_B or 32_B");
}
// 30_B_A3B: Qwen3-30B-A3B.
template <char... Cs>
consteval auto operator""_B_A3B() {
  using C = detail::Chars<Cs...>;
  static_assert(C::is("30"), "the only official Qwen3 MoE with 3B active parameters is 30_B_A3B");
  return shapes::Qwen3_30B_A3B{};
}
// 235_B_A22B: Qwen3-235B-A22B.
template <char... Cs>
consteval auto operator""_B_A22B() {
  using C = detail::Chars<Cs...>;
  static_assert(C::is("235"), "the only official Qwen3 MoE with 22B active parameters is 235_B_A22B");
  return shapes::Qwen3_235B_A22B{};
}

}  // namespace literals
}  // namespace qwen

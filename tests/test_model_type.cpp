// The compile-time model type: spelling, derived constants, concepts. The invalid
// combinations are compile-fail tests (tests/compile_fail/, run by ctest).
#include <catch2/catch.hpp>

#include <type_traits>

#include <qwen/model/qwen3.hpp>
#include <qwen/model/registry.hpp>

using namespace qwen;
using namespace qwen::literals;

namespace {
// A user-defined shape: any struct with the constants works like the official ones.
struct MyShape {
  static constexpr std::string_view name = "MyShape";
  static constexpr int vocab_size = 1000, hidden_size = 64, num_layers = 3, num_heads = 4, num_kv_heads = 2, head_dim = 128;
  static constexpr int intermediate_size = 96;
  static constexpr bool tie_word_embeddings = true;
};
}  // namespace

TEST_CASE("model type: Qwen3<Arch, Size, DType> spelled with size literals", "[model_type]") {
  using M8 = Qwen3<Dense, 8_B, bf16>;
  static_assert(std::is_same_v<M8, Qwen3Model<Dense, shapes::Qwen3_8B, bf16>>);
  static_assert(std::is_same_v<Qwen3<Dense, 0.6_B, bf16>::Shape, shapes::Qwen3_0_6B>);
  static_assert(std::is_same_v<Qwen3<Dense, 1.7_B, fp8>::Shape, shapes::Qwen3_1_7B>);
  static_assert(std::is_same_v<Qwen3<MoE, 235_B_A22B, fp8>::Shape, shapes::Qwen3_235B_A22B>);
  CHECK(M8::name() == "Qwen3<Dense, 8B, bf16>");
  CHECK(Qwen3<MoE, 30_B_A3B, fp8>::name() == "Qwen3<MoE, 30B-A3B, fp8>");
  CHECK(Qwen3<Dense, MyShape{}, fp32>::name() == "Qwen3<Dense, MyShape, fp32>");

  // 0.6B: 16 heads x 128 = 2048 != hidden 1024 (head_dim is independent of hidden/heads).
  using Small = Qwen3<Dense, 0.6_B, bf16>;
  static_assert(Small::q_size == 2048 && Small::hidden_size == 1024);
  static_assert(Small::kv_size == 1024 && Small::group_size == 2);
  static_assert(Small::tie_word_embeddings && !M8::tie_word_embeddings);
  using Big = Qwen3<MoE, 235_B_A22B, bf16>;
  static_assert(moe_dims<Big>::num_experts == 128 && moe_dims<Big>::experts_per_token == 8);
  static_assert(moe_dims<Big>::moe_intermediate_size == 1536 && Big::num_layers == 94 && Big::group_size == 16);
  static_assert(Qwen3<Dense, 32_B, bf16>::num_layers == 64);
  static_assert(Qwen3<Dense, 14_B, bf16>::num_heads == 40);
  static_assert(Qwen3<Dense, 4_B, bf16>::intermediate_size == 9728);

  static_assert(DenseShape<shapes::Qwen3_8B> && !MoEShape<shapes::Qwen3_8B>);
  static_assert(MoEShape<shapes::Qwen3_30B_A3B> && !DenseShape<shapes::Qwen3_30B_A3B>);
  static_assert(DenseShape<MyShape>);
  static_assert(!ModelShape<int>);
  static_assert(Qwen3Type<M8> && !Qwen3Type<int>);
  static_assert(weight_type_traits<fp8>::block_fp8 && weight_type_traits<fp8>::tensor_dtype == DType::BF16);
  static_assert(weight_type_traits<fp32>::tensor_dtype == DType::F32);
  static_assert(OfficialModels::size == 16 && TestModels::size == 6);
}

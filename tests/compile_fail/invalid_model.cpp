// Compiled once per CASE by ctest; each must fail with the static_assert message the test expects.
#include <qwen/model/qwen3.hpp>

using namespace qwen;
using namespace qwen::literals;

struct NotAShape {};
struct OddGroups {
  static constexpr std::string_view name = "OddGroups";
  static constexpr int vocab_size = 10, hidden_size = 8, num_layers = 1, num_heads = 3, num_kv_heads = 2, head_dim = 128;
  static constexpr int intermediate_size = 8;
  static constexpr bool tie_word_embeddings = true;
};

#if CASE == 1
using M = Qwen3<Dense, 30_B_A3B, bf16>;  // an MoE shape as Dense
#elif CASE == 2
using M = Qwen3<MoE, 8_B, bf16>;  // a dense shape as MoE
#elif CASE == 3
using M = Qwen3<Dense, 8_B, double>;  // unsupported weight type
#elif CASE == 4
using M = Qwen3Model<Dense, NotAShape, bf16>;
#elif CASE == 5
using M = Qwen3Model<int, shapes::Qwen3_8B, bf16>;
#elif CASE == 6
using M = Qwen3Model<Dense, OddGroups, bf16>;
#elif CASE == 7
using M = Qwen3<Dense, 7_B, bf16>;  // no such official size
#endif

int main() { return M::num_layers; }

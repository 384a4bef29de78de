// Embedding lookup: out[t, :] = float(table[tokens[t], :]).
// table: [vocab, hidden] float or bf16; tokens: [n]; out: [n, hidden] fp32.
#pragma once

#include <cstdint>

#include "qwen/core/error.hpp"
#include "qwen/core/numeric.hpp"

namespace qwen::kernels::cpu {

template <class W>
void embedding(const W* table, std::int64_t vocab, std::int64_t hidden, const std::int32_t* tokens, std::int64_t n, float* out) {
  for (std::int64_t t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= vocab)
      throw_error<InvalidArgument>("embedding: token id ", tokens[t], " at index ", t, " is outside the vocabulary [0, ", vocab, ")");
    const W* row = table + static_cast<std::int64_t>(tokens[t]) * hidden;
    for (std::int64_t i = 0; i < hidden; ++i) out[t * hidden + i] = to_float(row[i]);
  }
}

}  // namespace qwen::kernels::cpu

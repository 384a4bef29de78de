// Linked with qwen::native: the CPU kernels must be compiled for a vector level (the machines the
// tests run on have AVX2 at least), where a plain build of the same code gets the portable loops.
#include <cstdio>
#include <string_view>

#include <qwen/backend/cpu.hpp>

int main() {
  constexpr std::string_view isa = qwen::CpuBackend::isa();
  std::printf("consumer_native: CPU kernels %.*s\n", static_cast<int>(isa.size()), isa.data());
  return isa == "avx512" || isa == "avx2" ? 0 : 1;
}

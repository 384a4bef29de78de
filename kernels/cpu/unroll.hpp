// QWEN_UNROLL(n): unroll the next loop n times, so that a kernel's vectors stay in registers
// (GCC -O2 does not unroll on its own). GCC's pragma, which clang reads too. Empty under nvcc,
// whose front end knows no such pragma: the GPU tests compile the CPU kernels as their oracles.
#pragma once

#define QWEN_PRAGMA_TEXT(text) _Pragma(#text)
#if defined(__CUDACC__)
#define QWEN_UNROLL(n)
#else
#define QWEN_UNROLL(n) QWEN_PRAGMA_TEXT(GCC unroll n)
#endif

// Not a test of qwen's kernels: a kernel that cannot fit in 32 registers per thread
// (__launch_bounds__ with many blocks per SM forces the cap) and so spills. Compiled by
// check_spill_guard.cmake with the project's CUDA options, it must fail to build; that shows the
// options turn a spill in any real kernel into a build error.
__global__ void __launch_bounds__(1024, 2) spill_probe(float* x, int n) {
  float a[48];
#pragma unroll
  for (int i = 0; i < 48; ++i) a[i] = x[i * n + static_cast<int>(threadIdx.x)];
  float s = 0;
#pragma unroll
  for (int i = 0; i < 48; ++i)
#pragma unroll
    for (int j = 0; j < 48; ++j) s += a[i] * a[(i * j + 7) % 48];
  x[threadIdx.x] = s;
}

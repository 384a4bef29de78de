// The forward pass on the CUDA backend, end to end (Qwen3Forward<Model, CudaBackend>, plan_step,
// logits copied to the host every step), for the Qwen3-0.6B and Qwen3-8B shapes with random
// bf16 weights made at run time (bench/random_model.hpp; nothing is downloaded):
//   decode, batch 1 / 8 / 64: every sequence at a 512-token context, one token each per step
//     (each step rewrites position 512, so the context stays 512);
//   prefill: one 512-token prompt per step.
// In the same run, a device-to-device copy probe measures the bandwidth the device reaches
// (bytes read + bytes written per second), and each decode row reports the step's bytes (every
// Linear weight and lm_head once, plus the K/V the attention reads) over it.
//
// Prints one table and its own total time. Run by scripts/gpu-check; exits non-zero with the
// failing step named on any CUDA error.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <span>
#include <string>
#include <vector>

#include <qwen/backend/cuda.hpp>
#include <qwen/kv/block_manager.hpp>
#include <qwen/model/forward.hpp>
#include <qwen/model/qwen3.hpp>
#include <qwen/model/shapes.hpp>
#include <qwen/model/step.hpp>

#include "../random_model.hpp"

using namespace qwen;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw_error<Error>(what, ": ", cudaGetErrorString(status));
}

// Best of 5 device-to-device copies of 2 GiB: (read + written bytes) per second.
double copy_bandwidth() {
  const std::size_t bytes = std::size_t{2} << 30;
  void *a = nullptr, *b = nullptr;
  check(cudaMalloc(&a, bytes), "cudaMalloc (copy probe)");
  check(cudaMalloc(&b, bytes), "cudaMalloc (copy probe)");
  check(cudaMemset(a, 1, bytes), "cudaMemset");
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  float best_ms = 1e30f;
  for (int r = 0; r < 6; ++r) {
    check(cudaEventRecord(start), "cudaEventRecord");
    check(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice), "copy probe");
    check(cudaEventRecord(stop), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "copy probe");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    if (r > 0) best_ms = std::min(best_ms, ms);  // the first one warms up
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * static_cast<double>(bytes) / (best_ms * 1e-3);
}

struct Row {
  std::string what;
  double tokens_per_second = 0;
  double bytes_per_second = 0;  // decode only
  double flops_per_second = 0;  // prefill only
};

template <class Model>
std::vector<Row> run_shape(const char* name) {
  constexpr int context = 512, block = 16;
  constexpr int max_batch = 64;
  const auto t0 = Clock::now();
  bench::RandomModel<Model> random;  // host weights
  const double made = seconds_since(t0);
  CudaBackend backend;
  const int kv_blocks = max_batch * (context / block + 1) + 2 * (context / block + 1);
  Qwen3Forward<Model, CudaBackend, block> model(
      random.weights, random.config, backend, {.max_tokens = context, .max_sequences = max_batch, .kv_blocks = kv_blocks, .max_logit_rows = max_batch});
  std::printf("%s: weights made on the host in %.1f s, %.2f GiB placed on %s in %.1f s\n", name, made,
              static_cast<double>(backend.placed_weight_bytes()) / (1 << 30), backend.device_name().c_str(), seconds_since(t0) - made);
  BlockManager<block> books(kv_blocks);
  StepPlan plan;
  std::vector<float> logits;
  std::vector<std::int32_t> prompt(context);
  for (int i = 0; i < context; ++i) prompt[static_cast<std::size_t>(i)] = (i * 7919 + 17) % Model::vocab_size;
  auto step = [&](std::span<const SequenceChunk> chunks) {
    plan_step(books, chunks, model.limits(), plan);
    model.run(plan, logits);  // includes the copy of the logits to the host, which waits for the step
  };

  std::vector<Row> rows;
  // Prefill: a fresh 512-token sequence per step.
  {
    constexpr int reps = 5;
    double seconds = 0;
    for (int r = 0; r <= reps; ++r) {
      const int seq = books.add_sequence();
      const SequenceChunk chunk{seq, 0, prompt, Logits::last};
      const auto t = Clock::now();
      step(std::span(&chunk, 1));
      if (r > 0) seconds += seconds_since(t);  // the first one warms up
      books.free_sequence(seq);
    }
    const double flops = 2.0 * random.linear_params * context + 2.0 * Model::vocab_size * Model::hidden_size;
    rows.push_back({detail::cat(name, " prefill 512"), reps * context / seconds, 0, reps * flops / seconds});
  }
  // Decode at batch 1, 8, 64.
  std::vector<int> sequences;
  for (int i = 0; i < max_batch; ++i) {
    const int seq = books.add_sequence();
    const SequenceChunk chunk{seq, 0, prompt, Logits::none};
    step(std::span(&chunk, 1));
    sequences.push_back(seq);
  }
  const std::int32_t token = 42;
  for (const int batch : {1, 8, 64}) {
    std::vector<SequenceChunk> chunks;
    for (int i = 0; i < batch; ++i)
      chunks.push_back({sequences[static_cast<std::size_t>(i)], context, std::span(&token, 1), Logits::last});
    constexpr int warmup = 3, steps = 20;
    for (int s = 0; s < warmup; ++s) step(chunks);
    const auto t = Clock::now();
    for (int s = 0; s < steps; ++s) step(chunks);
    const double seconds = seconds_since(t);
    const double kv_bytes = 2.0 * Model::num_layers * Model::kv_size * sizeof(typename CudaBackend::KVElement) * (context + 1) * batch;
    const double bytes = static_cast<double>(random.bytes_per_token) + kv_bytes;
    rows.push_back({detail::cat(name, " decode batch ", batch), batch * steps / seconds, bytes * steps / seconds, 0});
  }
  return rows;
}

int run() {
  const auto t0 = Clock::now();
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: nothing to benchmark\n");
    return 4;
  }
  const double bandwidth = copy_bandwidth();
  std::printf("copy probe: %.0f GB/s (device-to-device, read + write)\n", bandwidth / 1e9);
  std::vector<Row> rows = run_shape<Qwen3Model<Dense, shapes::Qwen3_0_6B, bf16>>("Qwen3-0.6B");
  for (Row& r : run_shape<Qwen3Model<Dense, shapes::Qwen3_8B, bf16>>("Qwen3-8B")) rows.push_back(std::move(r));

  std::printf("\n| %-28s | %12s | %10s | %15s | %10s |\n", "step", "tok/s", "GB/s", "of copy probe", "TFLOP/s");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(30, '-').c_str(), std::string(14, '-').c_str(), std::string(12, '-').c_str(),
              std::string(17, '-').c_str(), std::string(12, '-').c_str());
  for (const Row& r : rows) {
    if (r.bytes_per_second > 0)
      std::printf("| %-28s | %12.1f | %10.0f | %15.2f | %10s |\n", r.what.c_str(), r.tokens_per_second, r.bytes_per_second / 1e9,
                  r.bytes_per_second / bandwidth, "");
    else
      std::printf("| %-28s | %12.1f | %10s | %15s | %10.1f |\n", r.what.c_str(), r.tokens_per_second, "", "", r.flops_per_second / 1e12);
  }
  std::printf("\ncopy probe %.0f GB/s; decode bytes = every Linear weight and lm_head once per step + the K/V read (bf16)\n",
              bandwidth / 1e9);
  std::printf("total time %.1f s\n", seconds_since(t0));
  return 0;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
}

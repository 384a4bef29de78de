// qwen-bench-sampler: per-row time of the sampler at Qwen3's vocabulary (151,936 logits).
//   Sampler/<case>/151936/<logits>: one row on one thread (the calling thread, no pool)
//     greedy        temperature 0
//     top_k_top_p   top_k 20, top_p 0.95, temperature 0.6 (Qwen3's thinking-mode advice)
//     top_p_only    top_p 0.95
//     min_p         min_p 0.05
//   Sampler/batch64_top_k_top_p/151936/<logits>/threads:{1,all}: 64 rows of top_k_top_p through
//     sample_batch on a pool of one thread or of every core; measured in wall time (the workers'
//     CPU time is not the caller's), per_row_seconds is the batch time / 64.
// Single rows report CPU time and wall time: on a loaded machine (nice 19) the wall time also
// holds the time other processes had the core; the CPU time is this row's cost.
// <logits>: "gauss" = N(0, 2^2) i.i.d. (a flat distribution: top_p 0.95 keeps most of the
// vocabulary, the hard case for the nucleus), "peaked" = the same plus 30 tokens 8..16 above
// the rest (a confident model). Logits are fixed pseudo-random values; each iteration draws at a
// new step, so the draws differ.
// Counters: per_row_seconds; logit_bytes_per_second (row bytes / per-row time);
// one_pass_seconds = the best time of one vectorised max pass over the row (cached), measured in
// this process: the floor, since every logit must be read once. per_row_seconds /
// one_pass_seconds says how many such passes a case costs.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <qwen/kernels/cpu/sampling_scan.hpp>
#include <qwen/kernels/cpu/thread_pool.hpp>
#include <qwen/sampling/sampler.hpp>

namespace {

using namespace qwen::sampling;
constexpr std::int64_t vocab = 151936;

std::vector<float> make_logits(std::int64_t rows, bool peaked) {
  std::vector<float> out(static_cast<std::size_t>(rows * vocab));
  std::uint64_t state = 0x243f6a8885a308d3ull;
  const auto uniform = [&] {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    return (static_cast<double>(state >> 11) + 0.5) * 0x1p-53;
  };
  for (std::size_t i = 0; i < out.size(); i += 2) {  // Box-Muller
    const double r = std::sqrt(-2 * std::log(uniform())), a = 6.283185307179586 * uniform();
    out[i] = static_cast<float>(2 * r * std::cos(a));
    if (i + 1 < out.size()) out[i + 1] = static_cast<float>(2 * r * std::sin(a));
  }
  if (peaked)
    for (std::int64_t r = 0; r < rows; ++r)
      for (int j = 0; j < 30; ++j) out[static_cast<std::size_t>(r * vocab + (j * 4973 + r * 131) % vocab)] += 8.0f + 0.27f * j;
  return out;
}

// Seconds of one vectorised pass over a row (best of many): the sampler's floor.
double one_pass_seconds(const std::vector<float>& row) {
  double best = 1e9;
  float sink = 0;
  for (int rep = 0; rep < 200; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    sink += qwen::kernels::cpu::sampling_scan::row_max(row.data(), vocab).max;
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  benchmark::DoNotOptimize(sink);
  return best;
}

SamplingParams case_params(const std::string& name) {
  SamplingParams p;
  if (name == "greedy") p.temperature = 0;
  if (name == "top_k_top_p") p.temperature = 0.6, p.top_k = 20, p.top_p = 0.95;
  if (name == "top_p_only") p.top_p = 0.95;
  if (name == "min_p") p.min_p = 0.05;
  return p;
}

void set_counters(benchmark::State& state, double rows_per_iteration, double pass_seconds) {
  // Rates are per second of wall time; kInvert turns "rows per second" into seconds per row.
  state.counters["per_row_seconds"] =
      benchmark::Counter(rows_per_iteration, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["logit_bytes_per_second"] =
      benchmark::Counter(rows_per_iteration * vocab * 4.0, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["one_pass_seconds"] = pass_seconds;
}

void BM_Row(benchmark::State& state, const std::string& name, bool peaked) {
  std::vector<float> row = make_logits(1, peaked);
  const SamplingParams params = case_params(name);
  const double pass = one_pass_seconds(row);
  RowScratch scratch;
  std::vector<std::int32_t> output;  // its size is the draw step
  output.reserve(1 << 20);
  std::int64_t checksum = 0;
  for (auto _ : state) {
    const auto result = sample_row(row, RowRequest{&params, 1234, {}, output}, scratch);
    checksum += result.token;
    if (output.size() < output.capacity()) output.push_back(0);  // next step: a new draw
  }
  benchmark::DoNotOptimize(checksum);
  set_counters(state, 1, pass);
}

void BM_Batch(benchmark::State& state, bool peaked, unsigned threads) {
  constexpr std::int64_t rows = 64;
  std::vector<float> logits = make_logits(rows, peaked);
  const SamplingParams params = case_params("top_k_top_p");
  const double pass = one_pass_seconds(std::vector<float>(logits.begin(), logits.begin() + vocab));
  qwen::kernels::cpu::ThreadPool pool(threads);
  Sampler sampler;
  std::vector<std::vector<std::int32_t>> outputs(rows);
  std::vector<RowRequest> requests(rows);
  std::vector<SampleResult> results(rows);
  std::int64_t step = 0;
  for (auto _ : state) {
    for (std::int64_t r = 0; r < rows; ++r) {
      outputs[static_cast<std::size_t>(r)].assign(static_cast<std::size_t>(step % 64), 0);
      requests[static_cast<std::size_t>(r)] = {&params, static_cast<std::uint64_t>(r), {}, outputs[static_cast<std::size_t>(r)]};
    }
    sampler.sample_batch(logits, vocab, requests, results, &pool);
    benchmark::DoNotOptimize(results.data());
    ++step;
  }
  set_counters(state, rows, pass);
  state.counters["threads"] = pool.size();
}

}  // namespace

int main(int argc, char** argv) {
  for (const bool peaked : {false, true}) {
    const std::string logits = peaked ? "peaked" : "gauss";
    for (const char* name : {"greedy", "top_k_top_p", "top_p_only", "min_p"})
      benchmark::RegisterBenchmark(("Sampler/" + std::string(name) + "/151936/" + logits).c_str(),
                                   [name = std::string(name), peaked](benchmark::State& s) { BM_Row(s, name, peaked); })
          ->Unit(benchmark::kMicrosecond);
    for (const unsigned threads : {1u, 0u})  // 0: every core
      benchmark::RegisterBenchmark(("Sampler/batch64_top_k_top_p/151936/" + logits + (threads ? "/threads:1" : "/threads:all")).c_str(),
                                   [peaked, threads](benchmark::State& s) { BM_Batch(s, peaked, threads); })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

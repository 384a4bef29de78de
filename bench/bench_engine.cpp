// qwen-bench-engine: offline throughput of the engine on the Qwen3-0.6B shape (random bf16
// weights made at run time, the real Qwen3 tokenizer and chat template), 1, 8 and 32 concurrent
// chat requests of about 128 prompt tokens and exactly 128 generated tokens each (ignore_eos;
// sampled with Qwen3's non-thinking settings: temperature 0.7, top_p 0.8, top_k 20, so sampling,
// detokenizing and the reasoning parser all run).
//
// Per concurrency, three runs; the table shows the median run by wall time:
//   generated tok/s   generated tokens / wall time from the first submit to the last result
//   ratio             that over the single-request rate of this process
//   overhead          (scheduling + sampling + text + callbacks) / (everything the steps took),
//                     from the engine's own step timers
// and at the end the peak RSS of the process against weight bytes + the KV pool's bytes.
//   qwen-bench-engine [--concurrency 1,8,32] [--runs 3]      (threads: every core)
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <qwen/chat/chat_template.hpp>
#include <qwen/engine/engine.hpp>
#include <qwen/tokenizer/tokenizer.hpp>

#include "random_model.hpp"

namespace {

using namespace qwen;
using namespace qwen::literals;
using Model = Qwen3<Dense, 0.6_B, bf16>;

constexpr int kOutput = 128;

struct Run {
  double seconds = 0, generated_per_second = 0, overhead = 0;
  std::int64_t prompt_tokens = 0;
};

std::vector<int> parse_list(const char* text) {
  std::vector<int> out;
  for (const char* p = text; *p;) {
    char* end = nullptr;
    out.push_back(static_cast<int>(std::strtol(p, &end, 10)));
    p = *end == ',' ? end + 1 : end;
    if (end == p && *p) break;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> concurrency = {1, 8, 32};
  int runs = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--concurrency") concurrency = parse_list(argv[i + 1]);
    else if (a == "--runs") runs = std::atoi(argv[i + 1]);
  }
  const int most = *std::max_element(concurrency.begin(), concurrency.end());

  bench::RandomModel<Model> model;  // its own CpuBackend: every core
  const auto tokenizer = tokenizer::Tokenizer::from_file(QWEN_BENCH_TOKENIZER_DIR "/tokenizer.json");
  const auto chat_template = chat::ChatTemplate::from_directory(QWEN_BENCH_TOKENIZER_DIR);

  engine::EngineOptions options;
  options.max_num_seqs = std::max(most, 1);
  options.max_num_batched_tokens = 512;
  options.max_model_len = 1024;
  options.kv_cache_bytes = static_cast<std::int64_t>(most) * 272 * engine::kv_bytes_per_token<Model>(model.backend.kv_element_bytes());  // 17 blocks each
  engine::Engine<> engine(engine::make_step_model<Model>(model.weights, model.config, model.backend, options), options,
                          {&tokenizer, &chat_template, {151645, 151643}});

  // A user turn of about 110 tokens (common words, one token each; the template adds the rest);
  // each request differs from its first words on, so the prefix cache serves nothing (the
  // template's header is shorter than a block).
  static const char* const words[] = {"the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "was", "on", "be",
                                      "at", "by", "this", "had", "not", "are", "but", "from", "or", "have", "an", "they", "which",
                                      "one", "you", "were", "her", "all"};
  const auto request = [&](int i) {
    std::string text = "Request " + std::to_string(i) + ":";
    for (int w = 0; w < 104; ++w) text += std::string(" ") + words[(i * 131 + w * 17 + w * w) % 32];
    engine::GenerationParams p;
    p.max_tokens = kOutput;
    p.ignore_eos = true;
    p.sampling.temperature = 0.7;
    p.sampling.top_p = 0.8;
    p.sampling.top_k = 20;
    p.sampling.seed = static_cast<std::uint64_t>(i);
    return engine::chat_request(nlohmann::ordered_json{{"messages", {{{"role", "user"}, {"content", text}}}},
                                                       {"chat_template_kwargs", {{"enable_thinking", false}}}},
                                p);
  };

  int serial = 0;
  const auto run_once = [&](int n) {
    const engine::EngineStats before = engine.stats();
    std::vector<engine::Request> requests;
    for (int i = 0; i < n; ++i) requests.push_back(request(serial++));
    const auto t0 = std::chrono::steady_clock::now();
    const auto results = engine.generate(std::move(requests));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const engine::EngineStats after = engine.stats();
    Run r;
    r.seconds = seconds;
    std::int64_t generated = 0;
    for (const auto& res : results) {
      generated += res.usage.completion_tokens;
      r.prompt_tokens += res.usage.prompt_tokens;
    }
    if (generated != static_cast<std::int64_t>(n) * kOutput) {
      std::fprintf(stderr, "qwen-bench-engine: %lld tokens generated, expected %d\n", static_cast<long long>(generated), n * kOutput);
      std::exit(1);
    }
    r.generated_per_second = static_cast<double>(generated) / seconds;
    const double overhead = (after.schedule_seconds - before.schedule_seconds) + (after.sample_seconds - before.sample_seconds) +
                            (after.output_seconds - before.output_seconds);
    r.overhead = overhead / (overhead + after.forward_seconds - before.forward_seconds);
    return r;
  };

  std::printf("qwen-bench-engine: Qwen3-0.6B shape, random bf16 weights, %u threads, KV pool %lld tokens (%.0f MiB)\n",
              model.backend.pool().size(), static_cast<long long>(engine.kv_tokens()),
              static_cast<double>(engine.kv_cache_bytes()) / (1 << 20));
  std::printf("%-12s %-14s %-16s %-8s %-10s %s\n", "concurrent", "prompt tok/req", "generated tok/s", "ratio", "overhead", "runs (tok/s)");
  double single = 0;
  for (const int n : concurrency) {
    std::vector<Run> all;
    for (int k = 0; k < runs; ++k) all.push_back(run_once(n));
    std::vector<Run> sorted = all;
    std::sort(sorted.begin(), sorted.end(), [](const Run& a, const Run& b) { return a.seconds < b.seconds; });
    const Run& median = sorted[sorted.size() / 2];
    if (n == 1) single = median.generated_per_second;
    std::string each;
    for (const Run& r : all) each += (each.empty() ? "" : ", ") + std::to_string(r.generated_per_second).substr(0, 5);
    std::printf("%-12d %-14lld %-16.2f %-8s %-10s %s\n", n, static_cast<long long>(median.prompt_tokens / n), median.generated_per_second,
                single > 0 ? (std::to_string(median.generated_per_second / single).substr(0, 4) + "x").c_str() : "-",
                (std::to_string(100 * median.overhead).substr(0, 4) + "%").c_str(), each.c_str());
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const double weights_mib = static_cast<double>(model.arena.bytes()) / (1 << 20);
  const double kv_mib = static_cast<double>(engine.kv_cache_bytes()) / (1 << 20);
  std::printf("peak RSS %.0f MiB; weights %.0f MiB + KV pool %.0f MiB = %.0f MiB\n", static_cast<double>(usage.ru_maxrss) / 1024,
              weights_mib, kv_mib, weights_mib + kv_mib);
  const auto s = engine.stats();
  std::printf("engine: %lld steps, %lld preemptions, prefix cache served %lld of %lld prompt tokens\n",
              static_cast<long long>(s.steps), static_cast<long long>(s.preemptions), static_cast<long long>(s.prompt_tokens_cached),
              static_cast<long long>(s.prompt_tokens));
  return 0;
}

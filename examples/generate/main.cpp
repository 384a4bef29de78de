// qwen-generate (first form): greedy generation from token ids on the CPU backend.
//   qwen-generate --model DIR --prompt-ids 1,2,3 --max-tokens N [--temperature 0] [--logprobs K] [--json]
// With --json it prints one object:
//   {"token_ids": [...], "logprobs": [[[id, logprob], ... K pairs], ... one list per generated token]}
// where logprob is the log-probability under the model's distribution (log-softmax of the logits).
// Generation stops at max-tokens, or at an end-of-sequence id (generation_config.json /
// config.json) unless --ignore-eos. Any problem: the error on stderr, exit status 1.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <qwen/backend/cpu.hpp>
#include <qwen/model/forward.hpp>
#include <qwen/qwen.hpp>

namespace {

struct Options {
  std::filesystem::path model;
  std::string prompt_ids;
  int max_tokens = 16;
  double temperature = 0;
  int logprobs = 0;
  bool json = false;
  bool ignore_eos = false;
  unsigned threads = 0;
};

std::vector<std::int32_t> parse_ids(const std::string& text) {
  std::vector<std::int32_t> ids;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 0 || v > INT32_MAX)
      throw qwen::InvalidArgument("--prompt-ids: '" + item + "' is not a token id (expected comma-separated non-negative integers)");
    ids.push_back(static_cast<std::int32_t>(v));
  }
  if (ids.empty()) throw qwen::InvalidArgument("--prompt-ids: the prompt is empty");
  return ids;
}

// The k most likely tokens with their log-probabilities (log-softmax in double), best first;
// ties go to the lower id.
std::vector<std::pair<std::int32_t, double>> top_logprobs(const float* logits, std::int64_t vocab, int k) {
  double max = logits[0];
  for (std::int64_t i = 1; i < vocab; ++i) max = std::max<double>(max, logits[i]);
  double sum = 0;
  for (std::int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  const double log_norm = max + std::log(sum);
  std::vector<std::int32_t> order(static_cast<std::size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  const auto keep = static_cast<std::size_t>(std::max(k, 1));
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep), order.end(),
                    [&](std::int32_t a, std::int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  std::vector<std::pair<std::int32_t, double>> out;
  for (std::size_t i = 0; i < keep; ++i) out.emplace_back(order[i], static_cast<double>(logits[order[i]]) - log_norm);
  return out;
}

template <class Model>
int generate(const Options& opt, const qwen::io::ModelConfig& config) {
  const auto loaded = qwen::load_checkpoint<Model>(opt.model, config);
  const std::vector<std::int32_t> prompt = parse_ids(opt.prompt_ids);
  const std::int64_t total = static_cast<std::int64_t>(prompt.size()) + opt.max_tokens;
  if (total > config.max_position_embeddings)
    throw qwen::InvalidArgument("the prompt (" + std::to_string(prompt.size()) + " tokens) plus --max-tokens " +
                                std::to_string(opt.max_tokens) + " exceeds max_position_embeddings " +
                                std::to_string(config.max_position_embeddings));
  std::set<std::int64_t> eos(config.eos_token_ids.begin(), config.eos_token_ids.end());
  if (loaded.generation) eos.insert(loaded.generation->eos_token_ids.begin(), loaded.generation->eos_token_ids.end());

  constexpr int block = 16;
  qwen::CpuBackend backend(opt.threads);
  qwen::Qwen3Forward<Model, qwen::CpuBackend, block> model(loaded.weights, config, backend,
                                                           static_cast<int>((total + block - 1) / block));
  const int seq = model.add_sequence();
  std::vector<std::int32_t> generated;
  std::vector<std::vector<std::pair<std::int32_t, double>>> logprobs;
  std::vector<float> logits;
  std::vector<std::int32_t> input = prompt;
  int position = 0;
  while (static_cast<int>(generated.size()) < opt.max_tokens) {
    const qwen::SequenceChunk chunk{seq, position, input, qwen::Logits::last};
    model.step(std::span(&chunk, 1), logits);
    position += static_cast<int>(input.size());
    auto top = top_logprobs(logits.data(), Model::vocab_size, std::max(opt.logprobs, 1));
    const std::int32_t next = top.front().first;  // greedy
    generated.push_back(next);
    top.resize(static_cast<std::size_t>(opt.logprobs));
    logprobs.push_back(std::move(top));
    if (!opt.ignore_eos && eos.contains(next)) break;
    input.assign(1, next);
  }

  if (opt.json) {
    nlohmann::json out = {{"token_ids", generated}, {"logprobs", nlohmann::json::array()}};
    for (const auto& step : logprobs) {
      nlohmann::json pairs = nlohmann::json::array();
      for (const auto& [id, lp] : step) pairs.push_back({id, lp});
      out["logprobs"].push_back(pairs);
    }
    std::cout << out.dump() << "\n";
  } else {
    for (std::size_t i = 0; i < generated.size(); ++i) std::cout << (i ? "," : "") << generated[i];
    std::cout << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app("qwen-generate: greedy generation from token ids (CPU backend)");
  app.add_option("--model", opt.model, "checkpoint directory as downloaded from Hugging Face")->required();
  app.add_option("--prompt-ids", opt.prompt_ids, "prompt token ids, comma-separated")->required();
  app.add_option("--max-tokens", opt.max_tokens, "tokens to generate")->check(CLI::Range(1, 1 << 20));
  app.add_option("--temperature", opt.temperature, "0 = greedy (the only mode until the sampler exists)");
  app.add_option("--logprobs", opt.logprobs, "top alternatives to report per generated token")->check(CLI::Range(0, 20));
  app.add_flag("--json", opt.json, "print a JSON object with token_ids and logprobs");
  app.add_flag("--ignore-eos", opt.ignore_eos, "do not stop at end-of-sequence tokens");
  app.add_option("--threads", opt.threads, "worker threads (0 = all cores)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 1;
  }
  try {
    if (opt.temperature != 0)
      throw qwen::InvalidArgument("--temperature " + std::to_string(opt.temperature) +
                                  ": only 0 (greedy) is supported until the sampler exists");
    if (!std::filesystem::is_directory(opt.model)) throw qwen::IoError(opt.model.string() + ": not a directory");
    const qwen::io::ModelConfig config = qwen::io::read_checkpoint_config(opt.model);
    return qwen::dispatch_model<qwen::ToolModels>(config, [&]<class Model>() { return generate<Model>(opt, config); });
  } catch (const std::exception& e) {
    std::cerr << "qwen-generate: error: " << e.what() << "\n";
    return 1;
  }
}

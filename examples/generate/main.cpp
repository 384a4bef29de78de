// qwen-generate (first form): generation from token ids on the CPU backend, with the Sampler.
//   qwen-generate --model DIR --prompt-ids 1,2,3 [--max-tokens N] [--json] [--logprobs K]
//                 [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--presence-penalty X]
//                 [--frequency-penalty X] [--repetition-penalty R] [--min-tokens N] [--seed S]
//                 [--use-generation-config] [--ignore-eos] [--threads N]
//
// Sampling parameters (meanings and valid ranges: docs/sampler.md; this tool: docs/generate.md):
//   - default: greedy (temperature 0), every filter and penalty off, as the first form was;
//   - --use-generation-config: start from the checkpoint's generation_config.json instead: the
//     sampler's defaults (temperature 1, filters off) replaced by each of temperature, top_k,
//     top_p, min_p, repetition_penalty the file states; "do_sample": false (or absent) means
//     greedy, as in transformers. A checkpoint without the file is an error;
//   - every option given on the command line overrides both.
// --temperature 0 is exactly greedy: the argmax of the (penalised) logits, ties to the lower id.
// The random stream is Philox keyed by --seed (Sampler::admit_seed draws one when it is absent
// and the run samples; it is then printed on stderr so the run can be replayed): the same seed,
// prompt, options and checkpoint give the same tokens.
//
// With --json it prints one object:
//   {"token_ids": [...], "logprobs": [[[id, logprob], ... K pairs], ... one list per generated token]}
// where the K pairs are the K most likely tokens of the model's raw distribution (log-softmax
// of the logits, before penalties, temperature or filters), best first; ties go to the lower id.
// Generation stops at --max-tokens, or at an end-of-sequence id (generation_config.json /
// config.json; they are the sampler's stop_token_ids, which --min-tokens masks) unless
// --ignore-eos. Any problem, bad parameter values included (named with their value, e.g.
// "sampling parameter 'top_p' is 1.5, must be in (0, 1]"): the error on stderr, exit status 1.
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <iostream>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <qwen/backend/cpu.hpp>
#include <qwen/model/forward.hpp>
#include <qwen/qwen.hpp>
#include <qwen/sampling/sampler.hpp>

namespace {

// The command line as given; an empty optional is an option the user did not pass.
struct Options {
  std::filesystem::path model;
  std::string prompt_ids;
  int max_tokens = 16;
  int logprobs = 0;
  bool json = false;
  bool ignore_eos = false;
  unsigned threads = 0;
  bool use_generation_config = false;
  std::optional<double> temperature, top_p, min_p, presence_penalty, frequency_penalty, repetition_penalty;
  std::optional<int> top_k, min_tokens;
  std::optional<std::string> seed;  // parsed by parse_seed: CLI11 would wrap "-1" to 2^64 - 1
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

// A decimal integer in [0, 2^64), the whole text.
std::uint64_t parse_seed(const std::string& text) {
  std::uint64_t seed = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), seed);
  if (text.empty() || error != std::errc() || end != text.data() + text.size())
    throw qwen::InvalidArgument("--seed: '" + text + "' is not a seed (expected an integer in [0, 2^64))");
  return seed;
}

// The request's sampling parameters: the tool's default (greedy) or the checkpoint's
// generation_config.json (--use-generation-config), then the options given; see the header.
// stop_ids: the end-of-sequence ids, empty with --ignore-eos.
qwen::sampling::SamplingParams sampling_params(const Options& opt, const std::optional<qwen::io::GenerationConfig>& generation,
                                               const std::set<std::int64_t>& stop_ids) {
  qwen::sampling::SamplingParams p;
  p.temperature = 0;
  if (opt.use_generation_config) {
    if (!generation)
      throw qwen::InvalidArgument("--use-generation-config: " + (opt.model / "generation_config.json").string() +
                                  " does not exist");
    p.temperature = generation->do_sample ? generation->temperature.value_or(1.0) : 0.0;
    p.top_k = generation->top_k.value_or(p.top_k);
    p.top_p = generation->top_p.value_or(p.top_p);
    p.min_p = generation->min_p.value_or(p.min_p);
    p.repetition_penalty = generation->repetition_penalty.value_or(p.repetition_penalty);
  }
  p.temperature = opt.temperature.value_or(p.temperature);
  p.top_k = opt.top_k.value_or(p.top_k);
  p.top_p = opt.top_p.value_or(p.top_p);
  p.min_p = opt.min_p.value_or(p.min_p);
  p.presence_penalty = opt.presence_penalty.value_or(p.presence_penalty);
  p.frequency_penalty = opt.frequency_penalty.value_or(p.frequency_penalty);
  p.repetition_penalty = opt.repetition_penalty.value_or(p.repetition_penalty);
  p.min_tokens = opt.min_tokens.value_or(p.min_tokens);
  if (opt.seed) p.seed = parse_seed(*opt.seed);
  p.logprobs = opt.logprobs;
  for (const std::int64_t id : stop_ids) {
    // Ids beyond int32 cannot be a token of any vocabulary; validate() names those inside int32
    // but outside this model's vocabulary.
    if (id > INT32_MAX) throw qwen::InvalidArgument("end-of-sequence id " + std::to_string(id) + " is not a token id");
    p.stop_token_ids.push_back(static_cast<std::int32_t>(id));
  }
  return p;
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
  std::set<std::int64_t> eos;
  if (!opt.ignore_eos) {
    eos.insert(config.eos_token_ids.begin(), config.eos_token_ids.end());
    if (loaded.generation) eos.insert(loaded.generation->eos_token_ids.begin(), loaded.generation->eos_token_ids.end());
  }
  const qwen::sampling::SamplingParams params = sampling_params(opt, loaded.generation, eos);
  qwen::sampling::validate(params, Model::vocab_size);  // before the prompt is run (sample() checks again)
  const std::uint64_t seed = qwen::sampling::Sampler::admit_seed(params);
  if (!params.seed && !params.greedy()) std::cerr << "qwen-generate: seed " << seed << "\n";

  // The prompt is run in chunks of at most `chunk` tokens (the forward pass's buffers are sized
  // for its largest step), then one token per step.
  constexpr int block = 16;
  constexpr std::int64_t chunk = 512;
  qwen::CpuBackend backend(opt.threads);
  const int kv_blocks = static_cast<int>((total + block - 1) / block);
  qwen::Qwen3Forward<Model, qwen::CpuBackend, block> model(
      loaded.weights, config, backend,
      {.max_tokens = std::min<std::int64_t>(chunk, std::max<std::int64_t>(1, static_cast<std::int64_t>(prompt.size()))),
       .max_sequences = 1, .kv_blocks = kv_blocks, .max_logit_rows = 1});
  qwen::BlockManager<block> books(kv_blocks);
  qwen::StepPlan plan;
  qwen::sampling::Sampler sampler;
  const int seq = books.add_sequence();
  std::vector<std::int32_t> generated;
  std::vector<std::vector<qwen::sampling::TokenLogprob>> logprobs;
  std::vector<float> logits;  // [1, vocab]: the last position's logits
  std::vector<std::int32_t> input = prompt;
  int position = 0;
  auto run = [&](std::span<const std::int32_t> tokens, qwen::Logits wanted) {
    const qwen::SequenceChunk step{seq, position, tokens, wanted};
    qwen::plan_step(books, std::span(&step, 1), model.limits(), plan);
    model.run(plan, logits);
    position += static_cast<int>(tokens.size());
  };
  while (static_cast<int>(generated.size()) < opt.max_tokens) {
    std::span<const std::int32_t> rest(input);
    for (; static_cast<std::int64_t>(rest.size()) > chunk; rest = rest.subspan(chunk)) run(rest.first(chunk), qwen::Logits::none);
    run(rest, qwen::Logits::last);
    qwen::sampling::SampleResult next = sampler.sample(logits, {&params, seed, prompt, generated});
    generated.push_back(next.token);
    logprobs.push_back(std::move(next.top_logprobs));
    if (next.stop) break;
    input.assign(1, next.token);
  }

  if (opt.json) {
    nlohmann::json out = {{"token_ids", generated}, {"logprobs", nlohmann::json::array()}};
    for (const auto& step : logprobs) {
      nlohmann::json pairs = nlohmann::json::array();
      for (const auto& [id, lp] : step) pairs.push_back({id, static_cast<double>(lp)});
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
  CLI::App app("qwen-generate: generation from token ids (CPU backend); greedy unless told otherwise");
  app.add_option("--model", opt.model, "checkpoint directory as downloaded from Hugging Face")->required();
  app.add_option("--prompt-ids", opt.prompt_ids, "prompt token ids, comma-separated")->required();
  app.add_option("--max-tokens", opt.max_tokens, "tokens to generate")->check(CLI::Range(1, 1 << 20));
  app.add_option("--logprobs", opt.logprobs, "top alternatives of the raw distribution to report per generated token (0..20)");
  app.add_flag("--json", opt.json, "print a JSON object with token_ids and logprobs");
  app.add_flag("--ignore-eos", opt.ignore_eos, "do not stop at end-of-sequence tokens");
  app.add_option("--threads", opt.threads, "worker threads (0 = all cores)");
  app.add_flag("--use-generation-config", opt.use_generation_config,
               "start from generation_config.json's sampling parameters instead of greedy");
  app.add_option("--temperature", opt.temperature, "0 = greedy (the default); > 0 samples");
  app.add_option("--top-k", opt.top_k, "keep the k most likely tokens (0 or -1: off)");
  app.add_option("--top-p", opt.top_p, "nucleus: keep the smallest set of mass >= p, in (0, 1] (1: off)");
  app.add_option("--min-p", opt.min_p, "keep tokens with p >= min_p * p_max, in [0, 1] (0: off)");
  app.add_option("--presence-penalty", opt.presence_penalty, "subtracted once from each generated token's logit, in [-2, 2]");
  app.add_option("--frequency-penalty", opt.frequency_penalty, "subtracted per occurrence in the output, in [-2, 2]");
  app.add_option("--repetition-penalty", opt.repetition_penalty, "> 0; prompt and output tokens: l > 0 ? l / r : l * r");
  app.add_option("--min-tokens", opt.min_tokens, "end-of-sequence ids are masked until this many tokens are generated");
  app.add_option("--seed", opt.seed, "64-bit seed of the random stream (default: drawn, printed on stderr)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 1;
  }
  try {
    if (!std::filesystem::is_directory(opt.model)) throw qwen::IoError(opt.model.string() + ": not a directory");
    const qwen::io::ModelConfig config = qwen::io::read_checkpoint_config(opt.model);
    return qwen::dispatch_model<qwen::ToolModels>(config, [&]<class Model>() { return generate<Model>(opt, config); });
  } catch (const std::exception& e) {
    std::cerr << "qwen-generate: error: " << e.what() << "\n";
    return 1;
  }
}

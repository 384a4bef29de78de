// qwen-generate: offline generation on the engine (CPU backend, continuous batching).
//   qwen-generate --model DIR --prompt TEXT            a completion, streamed to stdout
//   qwen-generate --model DIR --chat TEXT [--system TEXT] [--no-think]
//                                                      one user turn through the chat template:
//                                                      the answer on stdout, reasoning on stderr
//   qwen-generate --model DIR --input FILE.jsonl [--output FILE.jsonl]
//                                                      one request per line, all run together
//   qwen-generate --model DIR --prompt-ids 1,2,3       token ids in, token ids out
// with [--json] [--max-tokens N] [--n N] [--stop STR]... [--logprobs K] [--ignore-eos]
//      [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--presence-penalty X]
//      [--frequency-penalty X] [--repetition-penalty R] [--min-tokens N] [--seed S]
//      [--logit-bias ID=BIAS]... [--use-generation-config]
//      [--threads N] [--kv-cache-dtype bf16|fp32] [--max-num-seqs N] [--max-num-batched-tokens N] [--kv-cache-memory SIZE]
//      [--max-model-len N] [--no-enable-prefix-caching]
//
// docs/generate.md describes every option, the output of each form, the JSONL format and the
// exit status. In short:
//   - sampling is greedy unless --use-generation-config (the checkpoint's generation_config.json)
//     or an option says otherwise; an unseeded sampled run of a single prompt prints its drawn
//     seed on stderr ("qwen-generate: seed N"), and --seed N replays it;
//   - generation stops at --max-tokens, an end-of-sequence id (config.json's and
//     generation_config.json's, unless --ignore-eos) or a --stop string;
//   - --prompt-ids prints the ids on one line, or with --json {"token_ids", "logprobs"}, as the
//     first form of the tool did; the text forms with --json print one object with the text,
//     reasoning_content (chat), content, tool_calls, token_ids, finish_reason and usage;
//   - any problem: "qwen-generate: error: ..." on stderr, exit status 1. With --input a bad line
//     is an error line in the output (and on stderr) and the other lines still run; the exit
//     status is then 1.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <qwen/chat/chat_template.hpp>
#include <qwen/engine/any_llm.hpp>
#include <qwen/io/json_file.hpp>

#include "console.hpp"
#include "jsonl.hpp"
#include "options.hpp"
#include "results.hpp"
#include "tool_models.hpp"
#include "../common/command_line.hpp"
#include "../common/input.hpp"

namespace {

using namespace generate;
namespace engine = qwen::engine;

// The loaded checkpoint, whatever its model type (examples/common/tool_models.hpp: the per-type
// code is compiled once in the qwen-tool-models library); everything below compiles once.
struct Session {
  explicit Session(engine::AnyLLM& llm)
      : engine(llm.engine()), generation(&llm.generation()), vocab_size(llm.engine().vocab_size()),
        max_position_embeddings(llm.config().max_position_embeddings) {}
  engine::RequestId submit(engine::Request r, std::function<void(const engine::RequestOutput&)> callback) {
    return engine.submit(std::move(r), std::move(callback));
  }
  bool step() { return engine.step(); }
  [[nodiscard]] engine::EngineStats stats() const { return engine.stats(); }
  engine::Engine<16>& engine;
  const std::optional<qwen::io::GenerationConfig>* generation;
  std::int64_t vocab_size;
  std::int64_t max_position_embeddings;
};

// ---- the single-prompt forms ----

ordered_json chat_json(const Options& opt) {
  ordered_json messages = ordered_json::array();
  if (opt.system) messages.push_back({{"role", "system"}, {"content", *opt.system}});
  messages.push_back({{"role", "user"}, {"content", *opt.chat}});
  ordered_json request = {{"messages", std::move(messages)}};
  if (opt.no_think) request["chat_template_kwargs"] = {{"enable_thinking", false}};
  return request;
}

// The --prompt-ids form's output, unchanged from the tool's first form (one choice per line, or
// per element of "choices" with --n > 1).
void print_ids(const engine::RequestResult& result, bool json) {
  if (json) {
    const auto one = [](const engine::Choice& c) { return ordered_json{{"token_ids", token_ids(c)}, {"logprobs", logprobs_json(c)}}; };
    ordered_json out;
    if (result.choices.size() == 1) {
      out = one(result.choices[0]);
    } else {
      out = {{"choices", ordered_json::array()}};
      for (const engine::Choice& c : result.choices) out["choices"].push_back(one(c));
    }
    write_out(stdout, dump_line(out));
    return;
  }
  for (const engine::Choice& c : result.choices) {
    std::string line;
    for (std::size_t i = 0; i < c.tokens.size(); ++i) {
      if (i) line += ',';
      line += std::to_string(c.tokens[i].id);
    }
    write_out(stdout, line + "\n");
  }
}

int run_single(const Options& opt, PromptForm form, Session& s) {
  engine::Request request;
  engine::GenerationParams params = base_params(opt, *s.generation, form);
  if (form == PromptForm::ids) {
    std::vector<std::int32_t> ids = parse_ids(*opt.prompt_ids);
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] >= s.vocab_size)
        throw qwen::InvalidArgument(qwen::detail::cat("--prompt-ids: token id ", ids[i], " at index ", i, " is outside the vocabulary [0, ",
                                                      s.vocab_size, ")"));
    if (static_cast<std::int64_t>(ids.size()) + opt.max_tokens > s.max_position_embeddings)
      throw qwen::InvalidArgument(qwen::detail::cat("the prompt (", ids.size(), " tokens) plus --max-tokens ", opt.max_tokens,
                                                    " exceeds max_position_embeddings ", s.max_position_embeddings));
    request = engine::token_request(std::move(ids), std::move(params));
  } else if (form == PromptForm::text) {
    request = engine::text_request(*opt.prompt, std::move(params));
  } else {
    request = engine::chat_request(chat_json(opt), std::move(params));
  }
  engine::validate_generation_params(request.params, s.vocab_size);  // before the seed is reported
  qwen::sampling::SamplingParams& sampling = request.params.sampling;
  if (!sampling.seed && !sampling.greedy()) {
    sampling.seed = qwen::sampling::Sampler::admit_seed(sampling);
    std::cerr << "qwen-generate: seed " << *sampling.seed << "\n";
  }

  const bool stream = !opt.json && form != PromptForm::ids;
  std::optional<StreamPrinter> printer;
  if (stream) printer.emplace(opt.n, is_terminal(STDOUT_FILENO), is_terminal(STDERR_FILENO));
  std::optional<engine::RequestResult> result;
  s.submit(std::move(request), [&](const engine::RequestOutput& out) {
    if (printer) printer->add(out.delta);
    if (out.result) result = *out.result;
  });
  while (s.step()) {
  }
  if (!result) throw qwen::Error("the request ended without a result");
  if (const std::string error = request_error(*result); !error.empty()) throw qwen::Error(error);
  if (form == PromptForm::ids) {
    print_ids(*result, opt.json);
  } else if (opt.json) {
    ordered_json out = ordered_json::object();
    append_result(out, *result, {.reasoning_content = form == PromptForm::chat, .logprobs = opt.logprobs > 0});
    write_out(stdout, dump_line(out));
  }
  return 0;
}

// ---- --input ----

struct RawLine {
  std::size_t number = 0;
  std::string text;
};

// The non-empty lines of a JSONL file, a pipe or /dev/stdin (a trailing \r removed), read whole up
// to qwen_tools::max_input_bytes.
std::vector<RawLine> read_input_lines(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // blocking: a FIFO waits for its writer
  if (fd < 0) {
    const int err = errno;
    throw qwen::IoError(path.string() + (err == ENOENT ? ": file not found" : ": cannot open: " + std::string(std::strerror(err))));
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) throw qwen::IoError(path.string() + ": is a directory, not a JSONL file");
  const std::string text =
      qwen::io::read_all(fd, path.string(), qwen_tools::max_input_bytes, S_ISREG(st.st_mode) ? static_cast<std::size_t>(st.st_size) : 0);
  std::vector<RawLine> lines;
  std::size_t number = 0;
  for (std::string& line : qwen_tools::split_lines(text)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t\r\n\f\v") == std::string::npos) continue;
    lines.push_back({number, std::move(line)});
  }
  return lines;
}

int run_input(const Options& opt, Session& s, const std::vector<RawLine>& raw, std::FILE* out) {
  struct Job {
    InputLine line;
    std::int64_t budget = 0;  // tokens it may still generate (n x max_tokens at first)
    bool done = false;
    std::string output;       // its output line, once done
  };
  const engine::GenerationParams defaults = base_params(opt, *s.generation, PromptForm::input);
  std::vector<Job> jobs;
  jobs.reserve(raw.size());
  for (const RawLine& r : raw) jobs.push_back({parse_input_line(r.text, r.number, defaults), 0, false, {}});

  const std::string file = opt.input->string();
  Progress progress(is_terminal(STDERR_FILENO), jobs.size());
  std::size_t done = 0, failed = 0, written = 0;
  std::int64_t budget_left = 0;
  const auto fail = [&](Job& job, const std::string& error) {
    progress.clear();
    std::cerr << "qwen-generate: " << file << ":" << job.line.number << ": error: " << error << std::endl;
    job.output = dump_line({{"id", job.line.id}, {"error", qwen::detail::cat("line ", job.line.number, ": ", error)}});
    ++failed;
  };
  const auto write_ready = [&] {
    for (; written < jobs.size() && jobs[written].done; ++written) {
      if (out == stdout) progress.clear();
      write_out(out, jobs[written].output);
    }
  };
  const auto finished = [&](Job& job, const engine::RequestResult* result) {
    if (result) {
      if (const std::string error = request_error(*result); !error.empty()) {
        fail(job, error);
      } else {
        ordered_json line = {{"id", job.line.id}};
        append_result(line, *result, {.reasoning_content = true, .logprobs = job.line.request->params.sampling.logprobs.value_or(0) > 0});
        job.output = dump_line(line);
      }
    }
    budget_left -= job.budget;
    job.budget = 0;
    job.done = true;
    ++done;
    write_ready();
  };

  for (Job& job : jobs) {
    if (!job.line.request) {
      fail(job, job.line.error);
      finished(job, nullptr);
      continue;
    }
    const engine::GenerationParams& p = job.line.request->params;
    job.budget = std::int64_t{p.n} * p.max_tokens.value_or(0);
    try {
      s.submit(*job.line.request, [&, j = &job](const engine::RequestOutput& o) {
        const auto generated = static_cast<std::int64_t>(o.delta.tokens.size());
        j->budget -= generated;
        budget_left -= generated;
        if (o.result) finished(*j, o.result);
      });
      budget_left += job.budget;
    } catch (const qwen::Error& e) {
      fail(job, e.what());
      finished(job, nullptr);
    }
  }
  while (s.step()) progress.update(done, s.stats().generated_tokens, budget_left);
  progress.update(done, s.stats().generated_tokens, budget_left, true);
  progress.clear();

  const engine::EngineStats stats = s.stats();
  const double seconds = progress.seconds();
  char summary[512];
  std::snprintf(summary, sizeof summary,
                "qwen-generate: %zu requests (%zu failed), %lld prompt tokens (%lld from the prefix cache: %.1f%%), "
                "%lld generated tokens in %.2f s (%.1f tok/s)\n",
                jobs.size(), failed, static_cast<long long>(stats.prompt_tokens), static_cast<long long>(stats.prompt_tokens_cached),
                stats.prompt_tokens ? 100.0 * static_cast<double>(stats.prompt_tokens_cached) / static_cast<double>(stats.prompt_tokens) : 0.0,
                static_cast<long long>(stats.generated_tokens), seconds,
                seconds > 0 ? static_cast<double>(stats.generated_tokens) / seconds : 0.0);
  write_out(stderr, summary);
  return failed > 0 ? 1 : 0;
}

int run_model(const Options& opt, PromptForm form, const engine::LLMOptions& options, const std::vector<RawLine>& input, std::FILE* out) {
  const std::unique_ptr<engine::AnyLLM> llm = qwen_tools::load_model(opt.model, options);
  Session s(*llm);
  return form == PromptForm::input ? run_input(opt, s, input, out) : run_single(opt, form, s);
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app("qwen-generate: offline generation on the engine (CPU backend); greedy unless told otherwise");
  app.add_option("--model", opt.model, "checkpoint directory as downloaded from Hugging Face")->required();
  app.add_option("--prompt", opt.prompt, "a completion of this text, streamed to stdout");
  app.add_option("--chat", opt.chat, "one user message through the chat template: the answer on stdout, reasoning on stderr");
  app.add_option("--system", opt.system, "with --chat: a system message before it");
  app.add_flag("--no-think", opt.no_think, "with --chat: chat_template_kwargs enable_thinking false");
  app.add_option("--input", opt.input, "a JSONL file of requests, one per line, run together (docs/generate.md)");
  app.add_option("--output", opt.output, "with --input: the JSONL results (default: stdout)");
  app.add_option("--prompt-ids", opt.prompt_ids, "prompt token ids, comma-separated; prints token ids");
  app.add_option("--max-tokens", opt.max_tokens, "tokens to generate at most (default 16)")->check(CLI::Range(1, 1 << 20));
  app.add_option("--n", opt.n, "completions of the prompt (choice i samples with seed + i)");
  app.add_option("--stop", opt.stop, "stop string (repeatable); the output ends before it")->allow_extra_args(false);
  app.add_option("--logprobs", opt.logprobs, "top alternatives of the raw distribution to report per generated token (0..20)");
  app.add_flag("--json", opt.json, "print one JSON object at the end instead of streaming");
  app.add_flag("--ignore-eos", opt.ignore_eos, "do not stop at end-of-sequence tokens");
  app.add_flag("--use-generation-config", opt.use_generation_config,
               "start from generation_config.json's sampling parameters instead of greedy");
  app.add_option("--temperature", opt.temperature, "0 = greedy (the default); > 0 samples");
  app.add_option("--top-k", opt.top_k, "keep the k most likely tokens (0 or -1: off)");
  app.add_option("--top-p", opt.top_p, "nucleus: keep the smallest set of mass >= p, in (0, 1] (1: off)");
  app.add_option("--min-p", opt.min_p, "keep tokens with p >= min_p * p_max, in [0, 1] (0: off)");
  app.add_option("--presence-penalty", opt.presence_penalty, "subtracted once from each generated token's logit, in [-2, 2]");
  app.add_option("--frequency-penalty", opt.frequency_penalty, "subtracted per occurrence in the output, in [-2, 2]");
  app.add_option("--repetition-penalty", opt.repetition_penalty, "> 0; prompt and output tokens: l > 0 ? l / r : l * r");
  app.add_option("--min-tokens", opt.min_tokens, "end-of-sequence ids and stop strings wait until this many tokens are generated");
  app.add_option("--seed", opt.seed, "64-bit seed of the random stream (default: drawn, printed on stderr)");
  app.add_option("--logit-bias", opt.logit_bias, "ID=BIAS: add BIAS (in [-100, 100]) to token ID's logit (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--threads", opt.threads, "worker threads (0 = all cores)");
  app.add_option("--kv-cache-dtype", opt.kv_cache_dtype, "element of the KV cache: bf16 (the default) or fp32 (twice the memory)")
      ->check(CLI::IsMember({"bf16", "fp32"}));
  app.add_option("--max-num-seqs", opt.max_num_seqs, "sequences running at once (default 64)");
  app.add_option("--max-num-batched-tokens", opt.max_num_batched_tokens, "tokens in one forward step (default 512)");
  app.add_option("--kv-cache-memory", opt.kv_cache_memory,
                 "KV cache size: bytes, or with K/M/G/T (= KiB/MiB/GiB/TiB) or KB/MB/GB/TB (default: enough for "
                 "--max-num-seqs full contexts, at most half the available memory)");
  app.add_option("--max-model-len", opt.max_model_len, "context length (default: max_position_embeddings, capped by the KV cache)");
  app.add_flag("--no-enable-prefix-caching", opt.no_prefix_caching, "do not reuse the KV of prompt prefixes computed before");
  if (const auto status = qwen_tools::parse_command_line(app, argc, argv, "qwen-generate")) return *status;
  try {
    const PromptForm form = prompt_form(opt);
    const engine::LLMOptions options = llm_options(opt);
    std::vector<RawLine> input;
    if (form == PromptForm::input) input = read_input_lines(*opt.input);
    if (!std::filesystem::is_directory(opt.model)) throw qwen::IoError(opt.model.string() + ": not a directory");
    if (form == PromptForm::chat) {
      try {
        (void)qwen::chat::ChatTemplate::from_directory(opt.model);
      } catch (const qwen::Error& e) {
        throw qwen::InvalidArgument(std::string("--chat needs the checkpoint's chat template: ") + e.what());
      }
    }
    std::FILE* out = stdout;
    if (opt.output) {
      out = std::fopen(opt.output->c_str(), "w");
      if (!out) throw qwen::IoError(opt.output->string() + ": cannot open for writing: " + std::strerror(errno));
    }
    const int status = run_model(opt, form, options, input, out);
    if (out != stdout && std::fclose(out) != 0) throw qwen::IoError(opt.output->string() + ": write failed");
    return status;
  } catch (const std::exception& e) {
    std::cerr << "qwen-generate: error: " << e.what() << "\n";
    return 1;
  }
}

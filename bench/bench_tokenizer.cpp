// qwen-bench-tokenizer: encode and decode throughput of the Qwen3 tokenizer, single-threaded.
//   qwen-bench-tokenizer [--tokenizer=DIR] [--text=FILE] [google benchmark flags]
// DIR defaults to ../shared/models/qwen3-tokenizer beside the source tree; FILE defaults to the
// test corpus (tests/tokenizer/corpus.jsonl) joined with "\n" -- Chinese, Japanese, Korean,
// Arabic, Cyrillic, emoji, code, URLs, whitespace runs, numbers, special tokens.
//   Encode/warm      encode(text) with the word cache kept between iterations (as a server sees
//                    repeated words; Hugging Face's BPE cache also persists between calls)
//   Encode/cold      the word cache emptied before each iteration
//   Decode           decode(ids of text)
//   StreamDecode     the same ids pushed one at a time through a StreamDecoder
// bytes_per_second counts UTF-8 bytes of text (input for encode, output for decode); tokens/s
// is reported too. bench/compare_tokenizer.py runs Hugging Face tokenizers on the same file.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <qwen/tokenizer/stream_decoder.hpp>
#include <qwen/tokenizer/tokenizer.hpp>

namespace {

using qwen::tokenizer::TokenId;
using qwen::tokenizer::Tokenizer;

std::string g_tokenizer_dir = QWEN_BENCH_TOKENIZER_DIR;
std::string g_text_file;  // empty: the corpus

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Fixture {
  std::unique_ptr<Tokenizer> tokenizer;
  std::string text;
  std::vector<TokenId> ids;
  std::size_t decoded_bytes = 0;

  static Fixture& get() {
    static Fixture f = [] {
      Fixture x;
      x.tokenizer = std::make_unique<Tokenizer>(qwen::tokenizer::read_tokenizer_json(g_tokenizer_dir));
      if (g_text_file.empty()) {
        std::istringstream lines(read_file(QWEN_BENCH_CORPUS));
        for (std::string line; std::getline(lines, line);)
          if (!line.empty()) x.text += nlohmann::json::parse(line).get<std::string>() + "\n";
        if (!x.text.empty()) x.text.pop_back();
      } else {
        x.text = read_file(g_text_file);
      }
      x.ids = x.tokenizer->encode(x.text, qwen::tokenizer::Utf8Mode::Lenient);
      x.decoded_bytes = x.tokenizer->decode(x.ids).size();
      std::fprintf(stderr, "qwen-bench-tokenizer: %zu bytes of text, %zu tokens\n", x.text.size(), x.ids.size());
      return x;
    }();
    return f;
  }
};

void report(benchmark::State& state, std::size_t bytes, std::size_t tokens) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
  state.counters["tokens_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations() * tokens), benchmark::Counter::kIsRate);
}

void EncodeWarm(benchmark::State& state) {
  Fixture& f = Fixture::get();
  for (auto _ : state) benchmark::DoNotOptimize(f.tokenizer->encode(f.text, qwen::tokenizer::Utf8Mode::Lenient));
  report(state, f.text.size(), f.ids.size());
}

void EncodeCold(benchmark::State& state) {
  Fixture& f = Fixture::get();
  for (auto _ : state) {
    f.tokenizer->clear_cache();
    benchmark::DoNotOptimize(f.tokenizer->encode(f.text, qwen::tokenizer::Utf8Mode::Lenient));
  }
  report(state, f.text.size(), f.ids.size());
}

void Decode(benchmark::State& state) {
  Fixture& f = Fixture::get();
  for (auto _ : state) benchmark::DoNotOptimize(f.tokenizer->decode(f.ids));
  report(state, f.decoded_bytes, f.ids.size());
}

void StreamDecode(benchmark::State& state) {
  Fixture& f = Fixture::get();
  for (auto _ : state) {
    qwen::tokenizer::StreamDecoder stream(*f.tokenizer);
    std::size_t n = 0;
    for (const TokenId id : f.ids) n += stream.push(id).size();
    n += stream.finish().size();
    benchmark::DoNotOptimize(n);
  }
  report(state, f.decoded_bytes, f.ids.size());
}

BENCHMARK(EncodeWarm)->Name("Encode/warm")->Unit(benchmark::kMillisecond);
BENCHMARK(EncodeCold)->Name("Encode/cold")->Unit(benchmark::kMillisecond);
BENCHMARK(Decode)->Unit(benchmark::kMillisecond);
BENCHMARK(StreamDecode)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  // Our two flags first; the rest goes to Google Benchmark.
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--tokenizer=", 12) == 0) g_tokenizer_dir = argv[i] + 12;
    else if (std::strncmp(argv[i], "--text=", 7) == 0) g_text_file = argv[i] + 7;
    else rest.push_back(argv[i]);
  }
  int rest_count = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_count, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_count, rest.data())) return 1;
  try {
    (void)Fixture::get();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qwen-bench-tokenizer: %s\n", e.what());
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

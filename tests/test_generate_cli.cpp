// qwen-generate end to end on the golden checkpoints: its greedy tokens are transformers' and its
// log-probabilities are the log-softmax of transformers' logits; each sampling option reaches the
// sampler (checked by properties of the tokens it picks, against the raw logprobs the tool
// reports and transformers' logits); a seed replays a run; bad input exits 1 with a message.
// The text forms (--prompt, --chat, --input) are checked against the token-id form run on the
// prompt as the test itself encodes (the tokenizer) or renders (the chat template) it, and their
// text against the tokenizer's decoding and the reasoning parser run on the whole output.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <qwen/chat/chat_template.hpp>
#include <qwen/chat/reasoning_parser.hpp>
#include <qwen/io/safetensors.hpp>
#include <qwen/tokenizer/tokenizer.hpp>

#include "golden_fixtures.hpp"
#include "run_process.hpp"
#include "sanitized.hpp"
#include "scratch_dir.hpp"

using namespace qwen;
using testing::shell_quote;

namespace {

testing::ProcessResult generate(const std::string& args) { return testing::run_process(shell_quote(QWEN_GENERATE_EXE) + " " + args); }

template <class Id>
std::string join(const std::vector<Id>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

// The references below are transformers' fp32 runs, so the tool runs with an fp32 KV cache; the
// default (bf16) is checked against the bf16-KV references by its own test.
std::string model_arg(const std::filesystem::path& dir) { return " --model " + shell_quote(dir.string()) + " --kv-cache-dtype fp32"; }
std::string fixture_arg(std::string_view fixture) { return model_arg(testing::golden_checkpoint(fixture)); }

// transformers' record of prompt1 (11 tokens) for one golden checkpoint.
struct Reference {
  std::vector<std::int64_t> prompt;
  std::vector<std::int64_t> greedy;  // 32 greedy tokens, eos not stopping them
  std::vector<float> last_logits;    // [vocab]: the logits after the last prompt token
};

Reference reference(std::string_view fixture) {
  const auto file = io::SafetensorsFile::open(std::filesystem::path(QWEN_GOLDEN_DIR) / "reference" / (std::string(fixture) + ".safetensors"));
  const TensorView ids = file.view("prompt1.input_ids"), greedy = file.view("prompt1.greedy"), logits = file.view("prompt1.logits");
  const std::int64_t* id = ids.as<std::int64_t>(DType::I64);
  const std::int64_t* g = greedy.as<std::int64_t>(DType::I64);
  const float* last = logits.as<float>(DType::F32) + (ids.numel() - 1) * logits.shape[1];
  return {{id, id + ids.numel()}, {g, g + greedy.numel()}, {last, last + logits.shape[1]}};
}

using Alternatives = std::vector<std::pair<std::int64_t, double>>;  // [(id, raw logprob)], best first

struct Generation {
  std::vector<std::int64_t> ids;
  std::vector<Alternatives> logprobs;  // one list per generated token
  std::string err;
};

// Runs the tool with --json; it must succeed.
Generation run_json(const std::string& args) {
  const auto r = generate(args + " --json");
  INFO("args: " << args << "\nstderr: " << r.err);
  REQUIRE(r.exited);
  REQUIRE(r.status == 0);
  const auto out = nlohmann::json::parse(r.out);
  Generation g{out.at("token_ids").get<std::vector<std::int64_t>>(), {}, r.err};
  for (const auto& step : out.at("logprobs")) g.logprobs.push_back(step.get<Alternatives>());
  REQUIRE(g.logprobs.size() == g.ids.size());
  return g;
}

// The first step's alternatives are the `k` best of log-softmax(transformers' logits), in order.
void check_first_step_logprobs(const Generation& g, const Reference& ref, std::size_t k, double tolerance = 1e-4) {
  const auto& last = ref.last_logits;
  const double max = *std::max_element(last.begin(), last.end());
  double sum = 0;
  for (const float l : last) sum += std::exp(l - max);
  const Alternatives& first = g.logprobs.at(0);
  REQUIRE(first.size() == k);
  CHECK(first[0].first == ref.greedy[0]);
  for (const auto& [id, logprob] : first)
    CHECK(std::abs(logprob - (last.at(static_cast<std::size_t>(id)) - max - std::log(sum))) <= tolerance);
  for (std::size_t i = 1; i < first.size(); ++i) CHECK(first[i].second <= first[i - 1].second);
}

}  // namespace

TEST_CASE("generate: greedy tokens and logprobs equal transformers' on every golden checkpoint", "[generate]") {
  for (const auto& fixture : testing::golden_fixtures) {
    INFO("fixture " << fixture.name);
    const Reference ref = reference(fixture.name);
    const std::string args = fixture_arg(fixture.name) + " --prompt-ids " + join(ref.prompt) + " --max-tokens 32 --logprobs 5 --ignore-eos";
    const Generation g = run_json(args + " --temperature 0");
    CHECK(g.ids == ref.greedy);
    REQUIRE(g.logprobs.size() == 32);
    check_first_step_logprobs(g, ref, 5);
    // Greedy is also the default: no sampling option given.
    CHECK(run_json(args).ids == ref.greedy);
  }
}

// Without --kv-cache-dtype the cache is bf16: transformers' run with keys and values rounded to
// bf16 (reference/<name>.kv_bf16.safetensors) is the target. The first step's logprobs within
// twice the bf16 cache's logit tolerance (golden_fixtures.hpp; a logprob is a logit minus the
// log-sum-exp, each off by at most that), and its token the reference's where the top two
// reference logits are further apart than that (the forward-pass test checks the continuation,
// teacher-forced: a bf16 rounding that goes the other way may flip a close argmax later). The
// default is bf16 and not fp32: the same output as with --kv-cache-dtype bf16, other logprobs
// with fp32.
TEST_CASE("generate: the default bf16 KV cache gives transformers' tokens and logprobs with a bf16 cache", "[generate]") {
  int first_tokens_checked = 0;
  for (const auto& fixture : testing::golden_fixtures) {
    INFO("fixture " << fixture.name);
    const Reference ref = reference(std::string(fixture.name) + ".kv_bf16");
    const std::string model = " --model " + shell_quote(testing::golden_checkpoint(fixture.name).string());
    const std::string args = model + " --prompt-ids " + join(ref.prompt) + " --max-tokens 32 --logprobs 5 --ignore-eos";
    const Generation g = run_json(args);
    REQUIRE(g.logprobs.size() == 32);
    const auto [lo, hi] = std::minmax_element(ref.last_logits.begin(), ref.last_logits.end());
    const double tolerance = 2 * testing::bf16_kv_max_fraction * (*hi - *lo);
    check_first_step_logprobs(g, ref, 5, tolerance);
    std::vector<float> sorted = ref.last_logits;
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
    if (sorted[0] - sorted[1] > tolerance) {
      CHECK(g.ids.at(0) == ref.greedy.at(0));
      ++first_tokens_checked;
    }
    const Generation explicit_bf16 = run_json(args + " --kv-cache-dtype bf16");
    CHECK(explicit_bf16.ids == g.ids);
    CHECK(explicit_bf16.logprobs == g.logprobs);
    CHECK(run_json(args + " --kv-cache-dtype fp32").logprobs != g.logprobs);
  }
  CHECK(first_tokens_checked == 4);  // the reference's margin allows it on 4 of the 6 checkpoints
  const auto r = generate(" --model " + shell_quote(testing::golden_checkpoint("dense_tied").string()) + " --prompt-ids 1 --kv-cache-dtype fp16");
  CHECK(r.status != 0);
  CHECK(r.err.find("--kv-cache-dtype") != std::string::npos);
  CHECK(r.err.find("fp16") != std::string::npos);
}

TEST_CASE("generate: stops at an end-of-sequence token unless told not to", "[generate]") {
  // dense_tied's greedy continuation of prompt 2 (the chat prompt) contains <|im_end|> (480)?
  // Whatever it contains, the run without --ignore-eos must end at the first eos id.
  const auto r = generate(fixture_arg("dense_tied") + " --prompt-ids 479,459,256,198 --max-tokens 64 --json");
  REQUIRE(r.status == 0);
  const auto ids = nlohmann::json::parse(r.out)["token_ids"].get<std::vector<std::int64_t>>();
  for (std::size_t i = 0; i + 1 < ids.size(); ++i) CHECK((ids[i] != 480 && ids[i] != 478));
  CHECK((ids.size() == 64 || ids.back() == 480 || ids.back() == 478));
}

TEST_CASE("generate: a seed replays a sampled run, another seed gives another one", "[generate]") {
  const Reference ref = reference("dense_tied");
  const std::string args = fixture_arg("dense_tied") + " --prompt-ids " + join(ref.prompt) +
                           " --max-tokens 32 --ignore-eos --temperature 0.8 --logprobs 3";
  const Generation first = run_json(args + " --seed 7"), again = run_json(args + " --seed 7"), other = run_json(args + " --seed 8");
  CHECK(first.ids == again.ids);
  CHECK(first.logprobs == again.logprobs);
  CHECK(first.ids != other.ids);  // checked once: seeds 7 and 8 differ at the first token
  CHECK(first.ids != ref.greedy);
  CHECK(first.err.empty());  // a given seed is not reported
  for (const char* threads : {" --threads 1", " --threads 3"}) {
    INFO(threads);
    CHECK(run_json(args + " --seed 7" + threads).ids == first.ids);  // the draw does not depend on the thread count
  }

  // Without --seed the drawn seed is printed on stderr, and passing it replays the run.
  const Generation unseeded = run_json(args);
  const std::string prefix = "qwen-generate: seed ";
  REQUIRE(unseeded.err.rfind(prefix, 0) == 0);
  const std::string seed = unseeded.err.substr(prefix.size(), unseeded.err.find('\n') - prefix.size());
  CHECK(run_json(args + " --seed " + seed).ids == unseeded.ids);
}

TEST_CASE("generate: sampled runs report the raw distribution's logprobs", "[generate]") {
  for (const auto& fixture : testing::golden_fixtures) {
    INFO("fixture " << fixture.name);
    const Reference ref = reference(fixture.name);
    // Temperature, top_k and a penalty change the sampling distribution, not the reported one.
    const Generation g = run_json(fixture_arg(fixture.name) + " --prompt-ids " + join(ref.prompt) +
                                  " --max-tokens 8 --ignore-eos --temperature 1.7 --top-k 40 --repetition-penalty 1.3 --seed 3 --logprobs 4");
    check_first_step_logprobs(g, ref, 4);
  }
}

TEST_CASE("generate: filters that keep only the most likely token are greedy", "[generate]") {
  const Reference ref = reference("dense_tied");
  const std::string args = fixture_arg("dense_tied") + " --prompt-ids " + join(ref.prompt) + " --max-tokens 32 --ignore-eos --temperature 0.8 --seed 7";
  // The same run without a filter is not greedy (see the seed test), so each of these can fail.
  for (const std::string filter : {"--top-k 1", "--top-p 1e-6", "--min-p 1"}) {
    INFO(filter);
    CHECK(run_json(args + " " + filter).ids == ref.greedy);
  }
}

TEST_CASE("generate: sampled tokens stay inside the top_k, top_p and min_p sets of the raw distribution", "[generate]") {
  // At temperature 1 and without penalties the sampler filters the raw distribution the tool
  // reports, so each pick can be checked against the reported alternatives (20: enough to hold
  // every kept token, which the checks require).
  const Reference ref = reference("dense_tied");
  const std::string args = fixture_arg("dense_tied") + " --prompt-ids " + join(ref.prompt) +
                           " --max-tokens 32 --ignore-eos --temperature 1 --logprobs 20 --seed 11";
  const auto rank_of = [](const Alternatives& alternatives, std::int64_t id) {
    const auto it = std::find_if(alternatives.begin(), alternatives.end(), [&](const auto& a) { return a.first == id; });
    return static_cast<std::size_t>(it - alternatives.begin());
  };
  SECTION("top_k 3") {
    const Generation g = run_json(args + " --top-k 3");
    std::set<std::size_t> ranks;
    for (std::size_t t = 0; t < g.ids.size(); ++t) ranks.insert(rank_of(g.logprobs[t], g.ids[t]));
    CHECK(*ranks.rbegin() < 3);
    CHECK(ranks.size() > 1);  // it samples: not only the best token
  }
  SECTION("top_p 0.5") {
    const Generation g = run_json(args + " --top-p 0.5");
    std::set<std::size_t> ranks;
    for (std::size_t t = 0; t < g.ids.size(); ++t) {
      const std::size_t rank = rank_of(g.logprobs[t], g.ids[t]);
      REQUIRE(rank < 20);
      double before = 0;  // the mass ranked before the pick
      for (std::size_t i = 0; i < rank; ++i) before += std::exp(g.logprobs[t][i].second);
      INFO("step " << t << " rank " << rank);
      CHECK(before < 0.5 + 1e-5);
      ranks.insert(rank);
    }
    CHECK(ranks.size() > 1);
  }
  SECTION("min_p 0.5") {
    const Generation g = run_json(args + " --min-p 0.5");
    std::set<std::size_t> ranks;
    for (std::size_t t = 0; t < g.ids.size(); ++t) {
      const std::size_t rank = rank_of(g.logprobs[t], g.ids[t]);
      REQUIRE(rank < 20);
      INFO("step " << t << " rank " << rank);
      CHECK(g.logprobs[t][rank].second >= g.logprobs[t][0].second + std::log(0.5) - 1e-5);
      ranks.insert(rank);
    }
    CHECK(ranks.size() > 1);
  }
}

TEST_CASE("generate: presence and frequency penalties steer greedy decoding", "[generate]") {
  // dense_tied's greedy continuation of this prompt repeats tokens (161, 152), so penalties
  // change it. Each greedy pick must be the argmax of raw logprob - frequency * count -
  // presence * (count > 0) over the tokens generated before it; tokens outside the 20 reported
  // alternatives can score at most the 20th alternative's raw logprob.
  const std::string args = fixture_arg("dense_tied") + " --prompt-ids 479,459,256,198 --max-tokens 48 --ignore-eos --logprobs 20";
  const double presence = 1.5, frequency = 0.5;
  const Generation plain = run_json(args);
  const Generation g = run_json(args + " --presence-penalty 1.5 --frequency-penalty 0.5");
  CHECK(g.ids != plain.ids);
  std::map<std::int64_t, int> count;
  for (std::size_t t = 0; t < g.ids.size(); ++t) {
    INFO("step " << t);
    const auto score = [&](const std::pair<std::int64_t, double>& a) {
      const int n = count.contains(a.first) ? count.at(a.first) : 0;
      return a.second - frequency * n - (n > 0 ? presence : 0.0);
    };
    const Alternatives& alternatives = g.logprobs[t];
    const auto picked = std::find_if(alternatives.begin(), alternatives.end(), [&](const auto& a) { return a.first == g.ids[t]; });
    REQUIRE(picked != alternatives.end());
    for (const auto& a : alternatives) CHECK(score(*picked) >= score(a) - 1e-4);
    CHECK(score(*picked) >= alternatives.back().second - 1e-4);
    ++count[g.ids[t]];
  }
}

TEST_CASE("generate: repetition_penalty acts on the prompt's tokens", "[generate]") {
  // The first token of a greedy run with repetition_penalty 0.25 (< 1 favours repeats) is the
  // argmax of transformers' logits with each prompt token's l > 0 ? l / 0.25 : l * 0.25.
  int changed = 0;
  for (const auto& fixture : testing::golden_fixtures) {
    INFO("fixture " << fixture.name);
    const Reference ref = reference(fixture.name);
    std::vector<float> penalised = ref.last_logits;
    for (const std::int64_t id : std::set<std::int64_t>(ref.prompt.begin(), ref.prompt.end())) {
      float& l = penalised[static_cast<std::size_t>(id)];
      l = l > 0 ? l / 0.25f : l * 0.25f;
    }
    std::vector<float> sorted = penalised;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    REQUIRE(sorted[0] - sorted[1] > 1e-3f);  // no near tie that rounding could flip
    const auto expected = std::max_element(penalised.begin(), penalised.end()) - penalised.begin();
    const Generation g = run_json(fixture_arg(fixture.name) + " --prompt-ids " + join(ref.prompt) +
                                  " --max-tokens 1 --ignore-eos --repetition-penalty 0.25");
    CHECK(g.ids.at(0) == expected);
    changed += expected != ref.greedy[0];
  }
  CHECK(changed > 0);  // the penalty changed the pick somewhere: the check can fail
}

TEST_CASE("generate: min_tokens masks the end-of-sequence ids", "[generate]") {
  // dense_untied's greedy continuation of this prompt ends with <|im_end|> (480) at token 41.
  const std::string args = fixture_arg("dense_untied") + " --prompt-ids 479,459,256,198 --max-tokens 64";
  const Generation plain = run_json(args);
  REQUIRE(plain.ids.size() < 50);
  REQUIRE(plain.ids.back() == 480);
  const Generation g = run_json(args + " --min-tokens 50");
  REQUIRE(g.ids.size() >= 50);
  CHECK(std::equal(plain.ids.begin(), plain.ids.end() - 1, g.ids.begin()));  // the same until the masked eos
  for (std::size_t i = 0; i < 50; ++i) CHECK((g.ids[i] != 480 && g.ids[i] != 478));
  CHECK((g.ids.size() == 64 || g.ids.back() == 480 || g.ids.back() == 478));
}

TEST_CASE("generate: --use-generation-config takes the checkpoint's sampling parameters", "[generate]") {
  // The golden checkpoints' generation_config.json: do_sample true, temperature 0.6, top_k 20, top_p 0.95.
  const Reference ref = reference("dense_tied");
  const std::string run = " --prompt-ids " + join(ref.prompt) + " --max-tokens 32 --ignore-eos --seed 7";
  const Generation from_file = run_json(fixture_arg("dense_tied") + run + " --use-generation-config");
  CHECK(from_file.ids == run_json(fixture_arg("dense_tied") + run + " --temperature 0.6 --top-k 20 --top-p 0.95").ids);
  CHECK(from_file.ids != ref.greedy);
  // Options on the command line override the file.
  CHECK(run_json(fixture_arg("dense_tied") + run + " --use-generation-config --temperature 0").ids == ref.greedy);
  CHECK(from_file.ids != run_json(fixture_arg("dense_tied") + run + " --use-generation-config --top-p 0.5").ids);

  testing::ScratchDir copy("generate-config", testing::golden_checkpoint("dense_tied"));
  SECTION("do_sample false is greedy") {
    testing::write_file(copy / "generation_config.json",
                        R"({"do_sample": false, "temperature": 0.6, "top_k": 20, "top_p": 0.95, "eos_token_id": [480, 478]})");
    CHECK(run_json(model_arg(copy.path()) + run + " --use-generation-config").ids == ref.greedy);
  }
  SECTION("a checkpoint without the file") {
    std::filesystem::remove(copy / "generation_config.json");
    CHECK(run_json(model_arg(copy.path()) + run).ids == ref.greedy);  // not needed without the option
    const auto r = generate(model_arg(copy.path()) + run + " --use-generation-config");
    INFO("stderr: " << r.err);
    CHECK(r.status == 1);
    CHECK(r.err.find("--use-generation-config: " + (copy / "generation_config.json").string() + " does not exist") != std::string::npos);
  }
}

TEST_CASE("generate: --prompt-ids takes spaces around each id, as one rule", "[generate]") {
  const std::string run = " --max-tokens 4";
  const Generation plain = run_json(fixture_arg("dense_tied") + " --prompt-ids 479,459,256" + run);
  CHECK(run_json(fixture_arg("dense_tied") + " --prompt-ids ' 479 ,459, 256\t'" + run).ids == plain.ids);
  CHECK(run_json(fixture_arg("dense_tied") + " --prompt-ids '479 , 459 , 256'" + run).ids == plain.ids);
}

TEST_CASE("generate: bad input is an error with exit status 1", "[generate]") {
  const std::string model = fixture_arg("dense_tied");
  const std::pair<std::string, std::string> cases[] = {
      {model + " --prompt-ids 1,512,3 --max-tokens 2", "token id 512 at index 1 is outside the vocabulary [0, 512)"},
      {model + " --prompt-ids '' --max-tokens 2", "--prompt-ids: the prompt is empty"},
      {model + " --prompt-ids 1,x --max-tokens 2", "--prompt-ids: item 1 'x' is not a token id"},
      {model + " --prompt-ids 1,-4 --max-tokens 2", "--prompt-ids: item 1 '-4' is not a token id"},
      // One rule: no sign, no empty item anywhere, spaces only around an id.
      {model + " --prompt-ids +5 --max-tokens 2", "--prompt-ids: item 0 '+5' is not a token id"},
      {model + " --prompt-ids 1,2, --max-tokens 2", "--prompt-ids: item 2 '' is not a token id"},
      {model + " --prompt-ids ,1 --max-tokens 2", "--prompt-ids: item 0 '' is not a token id"},
      {model + " --prompt-ids 1,,2 --max-tokens 2", "--prompt-ids: item 1 '' is not a token id"},
      {model + " --prompt-ids '1 2' --max-tokens 2", "--prompt-ids: item 0 '1 2' is not a token id"},
      {model + " --prompt-ids 2147483648 --max-tokens 2", "--prompt-ids: item 0 '2147483648' is not a token id"},
      {model + " --prompt-ids ' , ' --max-tokens 2", "--prompt-ids: item 0 ' ' is not a token id"},
      {model + " --prompt-ids 1,2 --max-tokens 511", "plus --max-tokens 511 exceeds max_position_embeddings 512"},
      {" --model /nonexistent --prompt-ids 1 --max-tokens 2", "/nonexistent: not a directory"},
      {model + " --max-tokens 2", "--prompt-ids is required"},
      // Sampling parameters: the sampler's validation, naming the parameter and the value.
      {model + " --prompt-ids 1 --temperature -1", "sampling parameter 'temperature' is -1, must be in [0, 1e6]"},
      {model + " --prompt-ids 1 --temperature nan", "sampling parameter 'temperature' is nan"},
      {model + " --prompt-ids 1 --top-k -2", "sampling parameter 'top_k' is -2, must be >= -1"},
      {model + " --prompt-ids 1 --top-p 1.5", "sampling parameter 'top_p' is 1.5, must be in (0, 1]"},
      {model + " --prompt-ids 1 --top-p 0", "sampling parameter 'top_p' is 0, must be in (0, 1]"},
      {model + " --prompt-ids 1 --min-p 1.25", "sampling parameter 'min_p' is 1.25, must be in [0, 1]"},
      {model + " --prompt-ids 1 --presence-penalty 2.5", "sampling parameter 'presence_penalty' is 2.5, must be in [-2, 2]"},
      {model + " --prompt-ids 1 --frequency-penalty -3", "sampling parameter 'frequency_penalty' is -3, must be in [-2, 2]"},
      {model + " --prompt-ids 1 --temperature 1e300", "sampling parameter 'temperature' is 1e+300, must be in [0, 1e6]"},
      {model + " --prompt-ids 1 --repetition-penalty 1e-308", "sampling parameter 'repetition_penalty' is 1e-308, must be in [1e-06, 1e+06]"},
      {model + " --prompt-ids 1 --repetition-penalty 0", "sampling parameter 'repetition_penalty' is 0, must be in [1e-06, 1e+06]"},
      {model + " --prompt-ids 1 --min-tokens -1", "sampling parameter 'min_tokens' is -1, must be >= 0"},
      {model + " --prompt-ids 1 --logprobs 21", "sampling parameter 'logprobs' is 21, must be in [0, 20]"},
      {model + " --prompt-ids 1 --logprobs -1", "sampling parameter 'logprobs' is -1, must be in [0, 20]"},
      {model + " --prompt-ids 1 --seed -1", "--seed: '-1' is not a seed (expected an integer in [0, 2^64))"},
      {model + " --prompt-ids 1 --seed 18446744073709551616", "--seed: '18446744073709551616' is not a seed"},
      {model + " --prompt-ids 1 --seed 7x", "--seed: '7x' is not a seed"},
      {model + " --prompt-ids 1 --threads 5000", "ThreadPool: 5000 threads requested, at most 1024 are supported"},
  };
  for (const auto& [args, message] : cases) {
    INFO("args: " << args);
    const auto r = generate(args);
    INFO("stderr: " << r.err);
    REQUIRE(r.exited);
    CHECK(r.status == 1);
    CHECK(r.err.find(message) != std::string::npos);
    CHECK(r.out.empty());
  }
}

// ---- the text forms: --prompt, --chat, --input, --stop, the engine's options ----

namespace {

using ojson = nlohmann::ordered_json;

const tokenizer::Tokenizer& tiny_tokenizer() {
  static const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(testing::golden_checkpoint("dense_tied") / "tokenizer.json");
  return tok;
}

bool is_eos(std::int64_t id) { return id == 480 || id == 478; }  // config.json's <|im_end|>; generation_config.json adds 478

// The text the tool must show for generated ids: the tokenizer's decoding with special tokens
// skipped, without a final end-of-sequence id. Ids 504..511 of the padded vocabulary name no
// token (decode() refuses them) and add no text.
std::string expected_text(std::vector<std::int64_t> ids) {
  if (!ids.empty() && is_eos(ids.back())) ids.pop_back();
  std::vector<std::int32_t> known;
  for (const std::int64_t id : ids)
    if (tiny_tokenizer().has_token(static_cast<std::int32_t>(id))) known.push_back(static_cast<std::int32_t>(id));
  return tiny_tokenizer().decode(known, true);
}

// Runs the tool with --json; it must succeed. Its stdout is one JSON object.
ojson run_ok_json(const std::string& args) {
  const auto r = generate(args + " --json");
  INFO("args: " << args << "\nstderr: " << r.err);
  REQUIRE(r.exited);
  REQUIRE(r.status == 0);
  return ojson::parse(r.out);
}

std::vector<std::int64_t> ids_of(const ojson& j) { return j.at("token_ids").get<std::vector<std::int64_t>>(); }

// The JSON object of a chat request with one user message (and a system message when `system`
// is not empty), as the tool builds it from --chat, --system, --no-think.
ojson chat_request(const std::string& user, const std::string& system, bool no_think) {
  ojson messages = ojson::array();
  if (!system.empty()) messages.push_back({{"role", "system"}, {"content", system}});
  messages.push_back({{"role", "user"}, {"content", user}});
  ojson request = {{"messages", messages}};
  if (no_think) request["chat_template_kwargs"] = {{"enable_thinking", false}};
  return request;
}

std::vector<ojson> json_lines(const std::string& text) {
  std::vector<ojson> lines;
  std::size_t begin = 0;
  for (std::size_t end; (end = text.find('\n', begin)) != std::string::npos; begin = end + 1) lines.push_back(ojson::parse(text.substr(begin, end - begin)));
  CHECK(begin == text.size());  // every line ends with a newline
  return lines;
}

// A JSONL output line equals the same request run alone (its --json object): every field the
// alone run has, and its usage's token counts (cached prompt tokens depend on what ran before).
void check_same_result(const ojson& line, const ojson& alone) {
  for (const auto& [key, value] : alone.items()) {
    INFO("key " << key);
    if (key == "choices") {
      REQUIRE(line.at(key).size() == value.size());
      for (std::size_t i = 0; i < value.size(); ++i)
        for (const auto& [field, v] : value[i].items()) CHECK(line.at(key).at(i).at(field) == v);
    } else if (key == "usage") {
      CHECK(line.at("usage").at("prompt_tokens") == value.at("prompt_tokens"));
      CHECK(line.at("usage").at("completion_tokens") == value.at("completion_tokens"));
    } else {
      CHECK(line.at(key) == value);
    }
  }
}

}  // namespace

TEST_CASE("generate: --prompt runs the tokenizer's encoding of the text and prints the tokens' text", "[generate][text]") {
  const tokenizer::Tokenizer& tok = tiny_tokenizer();
  const std::string model = fixture_arg("dense_tied");
  int stopped = 0;
  // The first prompt's greedy continuation ends with <|im_end|> after 12 tokens; the others run to
  // --max-tokens. The third holds a special token and text outside the tiny vocabulary.
  for (const std::string text : {"The capital of France is", "def add(a, b):", "x <|im_start|> 你好\n"}) {
    INFO("prompt " << text);
    const std::vector<std::int32_t> prompt = tok.encode(text);
    const std::string args = " --max-tokens 40 --logprobs 3";
    const Generation by_ids = run_json(model + " --prompt-ids " + join(prompt) + args);
    const ojson j = run_ok_json(model + " --prompt " + shell_quote(text) + args);
    const std::vector<std::int64_t> ids = ids_of(j);
    CHECK(ids == by_ids.ids);
    CHECK(j.at("logprobs").get<std::vector<Alternatives>>() == by_ids.logprobs);
    CHECK(j.at("text") == expected_text(ids));
    CHECK(j.at("content") == j.at("text"));
    CHECK_FALSE(j.contains("reasoning_content"));
    CHECK(j.at("tool_calls") == ojson::array());
    CHECK(j.at("finish_reason") == (is_eos(ids.back()) ? "stop" : "length"));
    CHECK(j.at("usage").at("prompt_tokens") == prompt.size());
    CHECK(j.at("usage").at("completion_tokens") == ids.size());
    stopped += is_eos(ids.back());

    // Streamed: stdout is exactly the text; a greedy run reports nothing on stderr.
    const auto streamed = generate(model + " --prompt " + shell_quote(text) + " --max-tokens 40");
    REQUIRE(streamed.status == 0);
    CHECK(streamed.out == j.at("text").get<std::string>());
    CHECK(streamed.err.empty());
  }
  CHECK(stopped == 1);  // the eos is left out of the text in one case
  // Without --logprobs there is no "logprobs" field.
  CHECK_FALSE(run_ok_json(model + " --prompt hi --max-tokens 3").contains("logprobs"));
}

TEST_CASE("generate: --n gives choices sampled with seed + i, in order", "[generate][text]") {
  const std::string args = fixture_arg("dense_tied") + " --prompt 'def add(a, b):' --max-tokens 12 --temperature 0.8";
  const ojson both = run_ok_json(args + " --n 2 --seed 5");
  REQUIRE(both.at("choices").size() == 2);
  const ojson first = run_ok_json(args + " --seed 5"), second = run_ok_json(args + " --seed 6");
  for (int i = 0; i < 2; ++i) {
    const ojson& c = both["choices"][static_cast<std::size_t>(i)];
    const ojson& alone = i == 0 ? first : second;
    CHECK(c.at("index") == i);
    CHECK(c.at("token_ids") == alone.at("token_ids"));
    CHECK(c.at("text") == alone.at("text"));
  }
  CHECK(first.at("token_ids") != second.at("token_ids"));
  CHECK(both.at("usage").at("completion_tokens") == 24);
  // Streamed: the choices one after another, each under its header.
  const auto streamed = generate(args + " --n 2 --seed 5");
  REQUIRE(streamed.status == 0);
  std::string expected;
  for (const ojson* alone : {&first, &second}) {
    const std::string text = alone->at("text").get<std::string>();
    expected += "--- choice " + std::to_string(alone == &first ? 0 : 1) + " ---\n" + text + (text.ends_with("\n") ? "" : "\n");
  }
  CHECK(streamed.out == expected);
}

TEST_CASE("generate: --chat runs the rendered prompt and splits its text as the reasoning parser does", "[generate][text]") {
  const tokenizer::Tokenizer& tok = tiny_tokenizer();
  const auto chat_template = chat::ChatTemplate::from_directory(testing::golden_checkpoint("dense_tied"));
  const std::string model = fixture_arg("dense_tied");
  const std::string user = "What is 2 + 2?";
  // These biases push the random model to write <think> (502) and </think> (503), so that the
  // split has work to do.
  const std::string biased = " --logit-bias 502=12 --logit-bias 503=6 --presence-penalty 2 --frequency-penalty 2";
  int with_reasoning = 0, tag_without_reasoning = 0;
  for (const std::string system : {"", "You are terse."}) {
    for (const bool no_think : {false, true}) {
      for (const std::string& bias : {std::string(), biased}) {
        INFO("system '" << system << "' no_think " << no_think << " bias '" << bias << "'");
        const std::string rendered = chat::render(chat_request(user, system, no_think), chat_template);
        const std::string args = " --max-tokens 40" + bias;
        const Generation by_ids = run_json(model + " --prompt-ids " + join(tok.encode(rendered)) + args);
        const std::string chat_args =
            " --chat " + shell_quote(user) + (system.empty() ? "" : " --system " + shell_quote(system)) + (no_think ? " --no-think" : "");
        const ojson j = run_ok_json(model + chat_args + args);
        const std::vector<std::int64_t> ids = ids_of(j);
        CHECK(ids == by_ids.ids);
        const std::string text = j.at("text").get<std::string>();
        CHECK(text == expected_text(ids));
        chat::ReasoningParser whole(chat::reasoning_start_for(rendered));
        (void)whole.feed(text);
        (void)whole.finish();
        const std::optional<std::string> reasoning = whole.reasoning_content();
        CHECK(j.at("reasoning_content") == (reasoning ? ojson(*reasoning) : ojson()));
        CHECK(j.at("content") == whole.content());
        if (no_think) {
          CHECK(j.at("reasoning_content").is_null());
          tag_without_reasoning += text.find("<think>") != std::string::npos;
        }
        with_reasoning += !j.at("reasoning_content").is_null();

        // Streamed: content on stdout, reasoning (plain: stderr is no terminal here) on stderr.
        const auto streamed = generate(model + chat_args + args);
        REQUIRE(streamed.status == 0);
        CHECK(streamed.out == whole.content());
        CHECK(streamed.err == reasoning.value_or(""));
      }
    }
  }
  // Both cases happened: reasoning split off, and a think tag left in content with thinking off.
  CHECK(with_reasoning > 0);
  CHECK(tag_without_reasoning > 0);
}

TEST_CASE("generate: --input runs every good line as it runs alone, in input order, and reports each bad one", "[generate][text]") {
  const std::string model = fixture_arg("dense_tied");
  testing::ScratchDir dir("generate-input");
  const std::string input = (dir / "requests.jsonl").string();
  testing::write_file(dir / "requests.jsonl",
                      R"({"id": "first", "prompt": "The capital of France is", "max_tokens": 40})" "\n"
                      "\n"
                      R"({"prompt": "x", "temperature": "hot"})" "\n"
                      R"({"prompt": "def add(a, b):", "n": 2, "temperature": 0.8, "seed": 5})" "\n"
                      R"({"id": 12, "prompt": "Hello", "max_tokens": 9, "top_k": 3, "temperature": 1.5, "seed": 9, "ignore_eos": true, "stop": ["zz"], "logprobs": 2})" "\n"
                      R"({"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2 + 2?"}], "chat_template_kwargs": {"enable_thinking": false}, "max_tokens": 24, "temperature": null})" "\n"
                      R"({"prompt": [435, 69, 400], "max_tokens": 20})" "\n"
                      R"({"prompt": "a", "max_tokens": 0})" "\n"
                      R"({"prompt": "a")" "\n"
                      R"({"prompt": "a", "bogus": 1})" "\n");
  const auto r = generate(model + " --input " + shell_quote(input) + " --output " + shell_quote((dir / "out.jsonl").string()));
  INFO("stderr: " << r.err);
  REQUIRE(r.exited);
  CHECK(r.status == 1);  // some lines failed
  CHECK(r.out.empty());
  const std::vector<ojson> lines = json_lines(testing::read_file(dir / "out.jsonl"));
  REQUIRE(lines.size() == 9);  // the empty line is skipped
  const ojson ids = {"first", 3, 4, 12, 6, 7, 8, 9, 10};
  for (std::size_t i = 0; i < lines.size(); ++i) CHECK(lines[i].at("id") == ids[i]);

  // The good lines, each equal to the request alone.
  check_same_result(lines[0], run_ok_json(model + " --prompt 'The capital of France is' --max-tokens 40"));
  check_same_result(lines[2], run_ok_json(model + " --prompt 'def add(a, b):' --n 2 --temperature 0.8 --seed 5"));
  check_same_result(lines[3], run_ok_json(model + " --prompt Hello --max-tokens 9 --top-k 3 --temperature 1.5 --seed 9 --ignore-eos --stop zz --logprobs 2"));
  check_same_result(lines[4], run_ok_json(model + " --chat 'What is 2 + 2?' --system 'You are terse.' --no-think --max-tokens 24"));
  const Generation by_ids = run_json(model + " --prompt-ids 435,69,400 --max-tokens 20");
  CHECK(ids_of(lines[5]) == by_ids.ids);
  CHECK(lines[5].at("text") == expected_text(by_ids.ids));
  // Every output line has the same fields; reasoning_content is null but for chat.
  for (const std::size_t i : {0, 3, 5}) CHECK(lines[i].at("reasoning_content").is_null());
  CHECK(lines[2].at("choices").size() == 2);
  // The overrides took effect: 9 tokens (not the default 16), 2 alternatives per token.
  CHECK(ids_of(lines[3]).size() == 9);
  CHECK(lines[3].at("logprobs").size() == 9);
  CHECK(lines[3].at("logprobs").at(0).size() == 2);
  CHECK(ids_of(lines[5]).size() <= 20);
  CHECK(ids_of(lines[5]).size() > 16);  // by_ids did not stop early: the line's max_tokens, not the default

  // The bad lines: an error naming the line and the problem, in the output and on stderr.
  const std::pair<std::size_t, std::string> bad[] = {{1, "'temperature' must be a number, got \"hot\""},
                                                     {6, "request: 'max_tokens' is 0, must be >= 1"},
                                                     {7, "not valid JSON"},
                                                     {8, "unknown key 'bogus'"}};
  for (const auto& [index, problem] : bad) {
    const std::size_t number = lines[index].at("id").get<std::size_t>();
    INFO("line " << number);
    REQUIRE(lines[index].size() == 2);
    const std::string error = lines[index].at("error").get<std::string>();
    CHECK(error.starts_with("line " + std::to_string(number) + ": "));
    CHECK(error.find(problem) != std::string::npos);
    CHECK(r.err.find("qwen-generate: " + input + ":" + std::to_string(number) + ": error: " + problem) != std::string::npos);
  }
  CHECK(r.err.find("qwen-generate: 9 requests (4 failed), ") != std::string::npos);

  // Without --output the same lines go to stdout.
  const auto to_stdout = generate(model + " --input " + shell_quote(input));
  CHECK(to_stdout.status == 1);
  CHECK(to_stdout.out == testing::read_file(dir / "out.jsonl"));
}

TEST_CASE("generate: the engine's options change the schedule and the prefix cache, not the tokens", "[generate][text]") {
  const std::string model = fixture_arg("dense_tied");
  testing::ScratchDir dir("generate-engine-options");
  const std::string input = shell_quote((dir / "requests.jsonl").string());
  // Three lines with one 47-token prompt, and another prompt.
  const std::string prompt = "def add(a, b): def add(a, b): def add(a, b): def add(a, b):";
  REQUIRE(tiny_tokenizer().encode(prompt).size() == 47);
  std::string text;
  for (const char* p : {prompt.c_str(), "Hello", prompt.c_str(), prompt.c_str()})
    text += ojson{{"prompt", p}, {"max_tokens", 8}}.dump() + "\n";
  testing::write_file(dir / "requests.jsonl", text);
  const auto run = [&](const std::string& options) {
    const auto r = generate(model + " --input " + input + options);
    INFO("options: " << options << "\nstderr: " << r.err);
    REQUIRE(r.status == 0);
    std::pair<std::vector<ojson>, std::string> out{json_lines(r.out), r.err};
    REQUIRE(out.first.size() == 4);
    return out;
  };
  const auto tokens = [](const std::vector<ojson>& lines) {
    std::vector<std::vector<std::int64_t>> ids;
    for (const ojson& l : lines) ids.push_back(ids_of(l));
    return ids;
  };
  const auto cached = [](const std::vector<ojson>& lines) {
    std::vector<std::int64_t> c;
    for (const ojson& l : lines) c.push_back(l.at("usage").at("cached_prompt_tokens").get<std::int64_t>());
    return c;
  };
  const auto [together, together_err] = run("");
  // One at a time: each repeat of the prompt finds its first 32 positions (two full blocks of 16;
  // the last prompt token is always computed) in the prefix cache.
  const auto [one_by_one, one_err] = run(" --max-num-seqs 1");
  CHECK(tokens(one_by_one) == tokens(together));
  CHECK(cached(one_by_one) == std::vector<std::int64_t>{0, 0, 32, 32});
  CHECK(one_err.find(" prompt tokens (64 from the prefix cache: ") != std::string::npos);
  const auto [uncached, uncached_err] = run(" --max-num-seqs 1 --no-enable-prefix-caching");
  CHECK(tokens(uncached) == tokens(together));
  CHECK(cached(uncached) == std::vector<std::int64_t>{0, 0, 0, 0});
  CHECK(uncached_err.find(" prompt tokens (0 from the prefix cache: 0.0%)") != std::string::npos);
  // Prompts prefilled 5 tokens a step.
  CHECK(tokens(run(" --max-num-batched-tokens 5").first) == tokens(together));
  // The summary is the only thing on stderr, and counts every prompt token.
  CHECK(together_err.starts_with("qwen-generate: 4 requests (0 failed), " + std::to_string(47 * 3 + tiny_tokenizer().encode("Hello").size()) +
                                 " prompt tokens ("));
  CHECK(std::count(together_err.begin(), together_err.end(), '\n') == 1);
}

TEST_CASE("generate: --stop ends the text before the stop string, also across a token boundary", "[generate][text]") {
  const std::string args = fixture_arg("dense_tied") + " --prompt 'def add(a, b):' --max-tokens 32 --ignore-eos";
  const ojson greedy = run_ok_json(args);
  const std::vector<std::int64_t> ids = ids_of(greedy);
  const std::string text = greedy.at("text").get<std::string>();
  // A stop string of 4 printable bytes straddling the end of the k-th token's text, found first there.
  std::string stop;
  std::size_t at = 0;
  for (std::size_t k = 1; k < ids.size() && stop.empty(); ++k) {
    const std::string prefix = expected_text({ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k)});
    if (prefix.size() < 2 || prefix.size() + 2 > text.size() || !text.starts_with(prefix)) continue;
    const std::string candidate = text.substr(prefix.size() - 2, 4);
    if (std::all_of(candidate.begin(), candidate.end(), [](char c) { return c >= 0x20 && c < 0x7f && c != '\''; }) &&
        text.find(candidate) == prefix.size() - 2)
      stop = candidate, at = prefix.size() - 2;
  }
  INFO("text '" << text << "' stop '" << stop << "'");
  REQUIRE(!stop.empty());
  // The tokens run until the first one whose text completes the match.
  std::size_t needed = 1;
  while (expected_text({ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(needed)}).find(stop) == std::string::npos) ++needed;

  const ojson j = run_ok_json(args + " --stop=" + shell_quote(stop));
  CHECK(j.at("text") == text.substr(0, at));
  CHECK(j.at("finish_reason") == "stop");
  CHECK(ids_of(j) == std::vector<std::int64_t>(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(needed)));
  const auto streamed = generate(args + " --stop=" + shell_quote(stop));
  CHECK(streamed.out == text.substr(0, at));
  // Of two stop strings the earlier match wins, whatever the order given.
  const std::string later = text.substr(at + 4, 3);
  CHECK(run_ok_json(args + " --stop=" + shell_quote(later) + " --stop=" + shell_quote(stop)).at("text") == text.substr(0, at));
}

TEST_CASE("generate: --kv-cache-memory takes bytes and units, and caps the context", "[generate][text]") {
  // dense_tied keeps 2 layers x 2 (K, V) x 1 KV head x 128 x 4 bytes = 2048 bytes a position:
  // a block of 16 positions is 32768 bytes, and the context is capped at the pool's positions.
  const std::string run = fixture_arg("dense_tied") + " --prompt-ids 435,69,400,67,67,7,64,11,266,8,25 --max-tokens 32";
  const std::pair<std::string, std::string> capped[] = {{"64K", "context length 32"},
                                                        {"0.0625MiB", "context length 32"},
                                                        {"65536", "context length 32"},
                                                        {"64KB", "context length 16"},
                                                        {"40000", "context length 16"}};
  for (const auto& [size, message] : capped) {
    INFO("size " << size);
    const auto r = generate(run + " --kv-cache-memory " + size);
    CHECK(r.status == 1);
    CHECK(r.err.find("the prompt (11 tokens) plus max_tokens 32 exceed the " + message) != std::string::npos);
  }
  const Generation roomy = run_json(run + " --kv-cache-memory 96KiB --ignore-eos");  // 3 blocks: 48 positions
  CHECK(roomy.ids == run_json(run + " --ignore-eos").ids);
}

TEST_CASE("generate: bad text-form input is an error with exit status 1", "[generate][text]") {
  const std::string model = fixture_arg("dense_tied");
  testing::ScratchDir no_template("generate-no-template", testing::golden_checkpoint("dense_tied"));
  std::filesystem::remove(no_template / "tokenizer_config.json");
  testing::ScratchDir no_tokenizer("generate-no-tokenizer", testing::golden_checkpoint("dense_tied"));
  std::filesystem::remove(no_tokenizer / "tokenizer.json");
  const std::pair<std::string, std::string> cases[] = {
      {model + " --prompt x --prompt-ids 1", "give only one of --prompt-ids, --prompt, --chat and --input (2 given)"},
      {model + " --chat x --input /dev/null --prompt y", "(3 given)"},
      {model + " --prompt x --system s", "--system goes with --chat"},
      {model + " --prompt x --no-think", "--no-think goes with --chat"},
      {model + " --prompt x --output o.jsonl", "--output goes with --input"},
      {model + " --prompt x --kv-cache-memory 12Q", "--kv-cache-memory: '12Q' is not a size"},
      {model + " --prompt x --kv-cache-memory 1.5", "--kv-cache-memory: '1.5' is not a size"},
      {model + " --prompt x --kv-cache-memory -3", "--kv-cache-memory: '-3' is not a size"},
      {model + " --prompt x --kv-cache-memory 0", "--kv-cache-memory: '0' must be at least 1 byte"},
      {model + " --prompt x --kv-cache-memory 1000", "a KV cache of 1000 bytes holds no block of 16 positions"},
      {model + " --input /nonexistent/requests.jsonl", "/nonexistent/requests.jsonl: file not found"},
      {model + " --input /", "/: is a directory, not a JSONL file"},
      {model + " --prompt x --temperatur 0.5", "--temperatur"},  // CLI11's usage errors in the tool's form too
      {model + " --prompt x --max-tokens many", "many"},
      {"--model= --prompt-ids 1", "--model has an empty value"},
      {model + " --input /dev/zero", "/dev/zero: more than the limit of 268435456 bytes (256 MiB)"},
      {model + " --prompt x --n 0", "request: 'n' is 0, must be in [1, 128]"},
      {model + " --prompt x --stop ''", "request: 'stop[0]' is empty"},
      {model + " --prompt ''", "request: the prompt is empty"},
      {model + " --prompt x --max-num-seqs 0", "engine: max_num_seqs is 0, must be >= 1"},
      {model + " --prompt x --max-num-batched-tokens 0", "engine: max_num_batched_tokens is 0, must be >= 1"},
      {model + " --prompt x --max-model-len 600", "engine: max_model_len 600 exceeds the model's max_position_embeddings 512"},
      {model + " --prompt x --logit-bias 5", "--logit-bias: '5' is not ID=BIAS"},
      {model + " --prompt x --temperature 0.5 --top-p 2", "sampling parameter 'top_p' is 2, must be in (0, 1]"},
      {model_arg(no_template.path()) + " --chat hi",
       "--chat needs the checkpoint's chat template: " + (no_template / "tokenizer_config.json").string() + ": file not found"},
      {model_arg(no_tokenizer.path()) + " --prompt hi", "request: a text prompt needs a tokenizer, and this engine has none"},
  };
  for (const auto& [args, message] : cases) {
    INFO("args: " << args);
    const auto r = generate(args);
    INFO("stderr: " << r.err);
    REQUIRE(r.exited);
    CHECK(r.status == 1);
    CHECK(r.err.starts_with("qwen-generate: error: "));
    CHECK(r.err.find(message) != std::string::npos);
    CHECK(r.out.empty());
  }
  // Without a tokenizer the token-id form still runs (and prints no text).
  CHECK(run_json(model_arg(no_tokenizer.path()) + " --prompt-ids 435,69,400 --max-tokens 4").ids.size() == 4);
}

// The bundled demo model (models/demo) on the held-out items of tests/demo/heldout.json (written by
// models/demo/eval_reference.py: additions and cities never seen in training, with transformers'
// greedy output for each), all run together through qwen-generate --input: the figures are printed,
// issue 13's targets for the additions asserted, and the text must agree with transformers' item
// for item (at least 95 %: argmax ties can flip between two correct implementations). Under the sanitizers only the
// first 3 items of each kind run, and only the agreement with transformers is asserted.
TEST_CASE("generate: the demo model answers the held-out questions, as transformers does", "[generate][text][demo]") {
  const std::filesystem::path demo_dir = QWEN_DEMO_CHECKPOINT;
  const ojson doc = ojson::parse(testing::read_file(std::filesystem::path(QWEN_DEMO_TEST_DIR) / "heldout.json"));
  std::vector<ojson> items;
  std::map<std::string, int> per_kind;
  for (const ojson& it : doc.at("items"))
    if (!qwen_test::sanitized || per_kind[it.at("kind").get<std::string>()]++ < 3) items.push_back(it);
  REQUIRE(items.size() == (qwen_test::sanitized ? 15u : 160u));

  testing::ScratchDir dir("generate-demo");
  std::string input;
  for (const ojson& it : items) {
    ojson line = {{"messages", it.at("messages")},
                  {"chat_template_kwargs", {{"enable_thinking", it.at("enable_thinking")}}},
                  {"max_tokens", doc.at("max_new_tokens")},
                  {"skip_special_tokens", false}};  // transformers' text keeps <think> and </think>
    if (!it.at("tools").is_null()) line["tools"] = it.at("tools");
    input += line.dump() + "\n";
  }
  testing::write_file(dir / "heldout.jsonl", input);
  const auto r = generate(model_arg(demo_dir) + " --input " + shell_quote((dir / "heldout.jsonl").string()));
  INFO("stderr: " << r.err);
  REQUIRE(r.exited);
  REQUIRE(r.status == 0);
  const std::vector<ojson> lines = json_lines(r.out);
  REQUIRE(lines.size() == items.size());

  std::map<std::string, std::pair<int, int>> correct;  // kind -> (correct, total)
  int same_text = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const ojson& it = items[i];
    const ojson& out = lines[i];
    const std::string kind = it.at("kind").get<std::string>();
    const std::string content = out.at("content").get<std::string>();
    const ojson& calls = out.at("tool_calls");
    INFO("item " << i << " (" << kind << "): " << it.at("messages").dump() << " -> " << out.at("text").dump());
    CHECK(out.at("finish_reason") == "stop");
    // Thinking on: non-empty reasoning; off: none at all.
    const ojson& reasoning = out.at("reasoning_content");
    const bool reasoning_ok = it.at("enable_thinking").get<bool>() ? reasoning.is_string() && !reasoning.get<std::string>().empty()
                                                                   : reasoning.is_null();
    bool ok = reasoning_ok;
    if (kind.starts_with("tool_call")) {
      ok = ok && calls.size() == 1 && content.empty() && calls[0].at("function").at("name") == "get_weather" &&
           ojson::parse(calls[0].at("function").at("arguments").get<std::string>()) == ojson{{"city", it.at("expected_city")}};
    } else {
      ok = ok && calls.empty() && content == it.at("expected_answer").get<std::string>();
      if (kind.starts_with("add")) {  // the sum itself is in the content (implied by the exact answer; checked apart)
        const std::string sum = std::to_string(it.at("a").get<int>() + it.at("b").get<int>());
        ok = ok && std::regex_search(content, std::regex("(^|[^0-9])" + sum + "([^0-9]|$)"));
      }
    }
    auto& [good, total] = correct[kind];
    good += ok ? 1 : 0;
    ++total;
    const bool same = out.at("text") == it.at("reference").at("output_text");
    same_text += same ? 1 : 0;
    if (!same) WARN("differs from transformers: " << it.at("reference").at("output_text").dump());
  }
  for (const auto& [kind, figure] : correct) std::printf("demo held-out (qwen-generate, greedy): %-17s %d/%d\n", kind.c_str(), figure.first, figure.second);
  std::printf("demo held-out: text equal to transformers' on %d/%zu items\n", same_text, items.size());

  CHECK(same_text >= 0.95 * static_cast<double>(items.size()));
  if (!qwen_test::sanitized) {  // issue 13's targets for the additions
    const auto fraction = [&](const char* kind) { return static_cast<double>(correct[kind].first) / correct[kind].second; };
    CHECK(correct["add_think"].second == 50);
    CHECK(correct["add_nothink"].second == 50);
    CHECK(fraction("add_think") >= 0.90);
    CHECK(fraction("add_nothink") >= 0.90);
    // Its targets for the tool calls (>= 95 % of the 20 unseen cities named right) are NOT met by
    // the committed checkpoint: it copies unseen city names imprecisely (models/demo/README.md
    // has the figures; issue 13 stays open). The figures are printed above; the agreement with
    // transformers, checked for every item, holds for these items as for the others.
  }
}

TEST_CASE("generate: input lines force the demo model's tool call with tool_choice, following the tool's parameters", "[generate][text][demo]") {
  const std::filesystem::path demo_dir = QWEN_DEMO_CHECKPOINT;
  const ojson doc = ojson::parse(testing::read_file(std::filesystem::path(QWEN_DEMO_TEST_DIR) / "heldout.json"));
  std::vector<ojson> items;
  for (const ojson& it : doc.at("items"))
    if (it.at("kind").get<std::string>().starts_with("tool_call")) items.push_back(it);
  if (qwen_test::sanitized) items.resize(4);
  REQUIRE(items.size() >= 4);
  testing::ScratchDir dir("generate-forced");
  std::string input;
  for (const ojson& it : items) {
    ojson line = {{"messages", it.at("messages")},
                  {"tools", it.at("tools")},
                  {"tool_choice", {{"type", "function"}, {"function", {{"name", "get_weather"}}}}},
                  {"chat_template_kwargs", {{"enable_thinking", it.at("enable_thinking")}}},
                  {"max_tokens", doc.at("max_new_tokens")}};
    input += line.dump() + "\n";
  }
  // A bad tool_choice or schema is an error naming the line and the field; the other lines run.
  input += ojson{{"messages", items[0].at("messages")}, {"tools", items[0].at("tools")},
                 {"tool_choice", {{"type", "function"}, {"function", {{"name", "get_time"}}}}}}.dump() + "\n";
  input += ojson{{"messages", items[0].at("messages")}, {"response_format", {{"type", "json_schema"}, {"json_schema",
                 {{"schema", {{"type", "object"}, {"properties", {{"n", {{"type", "integer"}, {"maximum", 3}}}}}}}}}}}}.dump() + "\n";
  testing::write_file(dir / "forced.jsonl", input);
  const auto r = generate(model_arg(demo_dir) + " --input " + shell_quote((dir / "forced.jsonl").string()));
  INFO("stderr: " << r.err);
  REQUIRE(r.exited);
  CHECK(r.status == 1);  // some lines were bad
  CHECK_THAT(r.err, Catch::Contains("'tool_choice.function.name' is \"get_time\", which is not among the request's tools"));
  CHECK_THAT(r.err, Catch::Contains("'response_format.json_schema.schema.properties.n' keyword 'maximum' is not supported"));
  const std::vector<ojson> lines = json_lines(r.out);
  REQUIRE(lines.size() == items.size() + 2);  // the bad lines are error lines, in input order
  CHECK(lines[items.size()].contains("error"));
  CHECK(lines[items.size() + 1].contains("error"));
  int named_right = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const ojson& out = lines[i];
    INFO("item " << i << ": " << out.at("text").dump());
    // Whatever the model would rather write, the output is one call with {"city": <a string>}.
    CHECK(out.at("finish_reason") == "stop");
    REQUIRE(out.at("tool_calls").size() == 1);
    const ojson& call = out.at("tool_calls")[0];
    CHECK(call.at("function").at("name") == "get_weather");
    const ojson args = ojson::parse(call.at("function").at("arguments").get<std::string>());
    REQUIRE(args.size() == 1);
    REQUIRE(args.at("city").is_string());
    named_right += args.at("city") == items[i].at("expected_city") ? 1 : 0;
  }
  std::printf("demo forced tool calls (qwen-generate, greedy): well-formed %zu/%zu, the expected city %d/%zu\n", items.size(),
              items.size(), named_right, items.size());
}

// qwen-generate end to end on the golden checkpoints: its greedy tokens are transformers' and its
// log-probabilities are the log-softmax of transformers' logits; each sampling option reaches the
// sampler (checked by properties of the tokens it picks, against the raw logprobs the tool
// reports and transformers' logits); a seed replays a run; bad input exits 1 with a message.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <qwen/io/safetensors.hpp>

#include "golden_fixtures.hpp"
#include "run_process.hpp"
#include "scratch_dir.hpp"

using namespace qwen;
using testing::shell_quote;

namespace {

testing::ProcessResult generate(const std::string& args) { return testing::run_process(shell_quote(QWEN_GENERATE_EXE) + " " + args); }

std::string join(const std::vector<std::int64_t>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

std::string model_arg(const std::filesystem::path& dir) { return " --model " + shell_quote(dir.string()); }
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
void check_first_step_logprobs(const Generation& g, const Reference& ref, std::size_t k) {
  const auto& last = ref.last_logits;
  const double max = *std::max_element(last.begin(), last.end());
  double sum = 0;
  for (const float l : last) sum += std::exp(l - max);
  const Alternatives& first = g.logprobs.at(0);
  REQUIRE(first.size() == k);
  CHECK(first[0].first == ref.greedy[0]);
  for (const auto& [id, logprob] : first) CHECK(std::abs(logprob - (last.at(static_cast<std::size_t>(id)) - max - std::log(sum))) <= 1e-4);
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

TEST_CASE("generate: bad input is an error with exit status 1", "[generate]") {
  const std::string model = fixture_arg("dense_tied");
  const std::pair<std::string, std::string> cases[] = {
      {model + " --prompt-ids 1,512,3 --max-tokens 2", "token id 512 at index 1 is outside the vocabulary [0, 512)"},
      {model + " --prompt-ids '' --max-tokens 2", "--prompt-ids: the prompt is empty"},
      {model + " --prompt-ids 1,x --max-tokens 2", "--prompt-ids: 'x' is not a token id"},
      {model + " --prompt-ids 1,-4 --max-tokens 2", "--prompt-ids: '-4' is not a token id"},
      {model + " --prompt-ids 1,2 --max-tokens 511", "plus --max-tokens 511 exceeds max_position_embeddings 512"},
      {" --model /nonexistent --prompt-ids 1 --max-tokens 2", "/nonexistent: not a directory"},
      {model + " --max-tokens 2", "--prompt-ids is required"},
      // Sampling parameters: the sampler's validation, naming the parameter and the value.
      {model + " --prompt-ids 1 --temperature -1", "sampling parameter 'temperature' is -1, must be a finite number >= 0"},
      {model + " --prompt-ids 1 --temperature nan", "sampling parameter 'temperature' is nan"},
      {model + " --prompt-ids 1 --top-k -2", "sampling parameter 'top_k' is -2, must be >= -1"},
      {model + " --prompt-ids 1 --top-p 1.5", "sampling parameter 'top_p' is 1.5, must be in (0, 1]"},
      {model + " --prompt-ids 1 --top-p 0", "sampling parameter 'top_p' is 0, must be in (0, 1]"},
      {model + " --prompt-ids 1 --min-p 1.25", "sampling parameter 'min_p' is 1.25, must be in [0, 1]"},
      {model + " --prompt-ids 1 --presence-penalty 2.5", "sampling parameter 'presence_penalty' is 2.5, must be in [-2, 2]"},
      {model + " --prompt-ids 1 --frequency-penalty -3", "sampling parameter 'frequency_penalty' is -3, must be in [-2, 2]"},
      {model + " --prompt-ids 1 --repetition-penalty 0", "sampling parameter 'repetition_penalty' is 0, must be a finite number > 0"},
      {model + " --prompt-ids 1 --min-tokens -1", "sampling parameter 'min_tokens' is -1, must be >= 0"},
      {model + " --prompt-ids 1 --logprobs 21", "sampling parameter 'logprobs' is 21, must be in [0, 20]"},
      {model + " --prompt-ids 1 --logprobs -1", "sampling parameter 'logprobs' is -1, must be in [0, 20]"},
      {model + " --prompt-ids 1 --seed -1", "--seed: '-1' is not a seed (expected an integer in [0, 2^64))"},
      {model + " --prompt-ids 1 --seed 18446744073709551616", "--seed: '18446744073709551616' is not a seed"},
      {model + " --prompt-ids 1 --seed 7x", "--seed: '7x' is not a seed"},
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

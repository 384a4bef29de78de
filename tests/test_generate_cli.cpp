// qwen-generate end to end on the golden checkpoints: its greedy tokens are transformers' and its
// log-probabilities are the log-softmax of transformers' logits; bad input exits 1 with a message.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <qwen/io/safetensors.hpp>

#include "golden_fixtures.hpp"
#include "run_process.hpp"

using namespace qwen;
using testing::shell_quote;

namespace {

testing::ProcessResult generate(const std::string& args) { return testing::run_process(shell_quote(QWEN_GENERATE_EXE) + " " + args); }

std::string join(const std::vector<std::int64_t>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

}  // namespace

TEST_CASE("generate: greedy tokens and logprobs equal transformers' on every golden checkpoint", "[generate]") {
  for (const auto& fixture : testing::golden_fixtures) {
    INFO("fixture " << fixture.name);
    const auto ref = io::SafetensorsFile::open(std::filesystem::path(QWEN_GOLDEN_DIR) / "reference" /
                                               (std::string(fixture.name) + ".safetensors"));
    const TensorView ids_view = ref.view("prompt1.input_ids"), greedy_view = ref.view("prompt1.greedy"),
                     logits_view = ref.view("prompt1.logits");
    const std::vector<std::int64_t> ids(ids_view.as<std::int64_t>(DType::I64), ids_view.as<std::int64_t>(DType::I64) + ids_view.numel());
    const std::vector<std::int64_t> greedy(greedy_view.as<std::int64_t>(DType::I64),
                                           greedy_view.as<std::int64_t>(DType::I64) + greedy_view.numel());
    const auto r = generate("--model " + shell_quote(testing::golden_checkpoint(fixture.name).string()) + " --prompt-ids " +
                            join(ids) + " --max-tokens 32 --temperature 0 --logprobs 5 --json --ignore-eos");
    INFO("stderr: " << r.err);
    REQUIRE(r.exited);
    REQUIRE(r.status == 0);
    const auto out = nlohmann::json::parse(r.out);
    CHECK(out["token_ids"].get<std::vector<std::int64_t>>() == greedy);
    REQUIRE(out["logprobs"].size() == 32);

    // The first step's alternatives against log-softmax of transformers' last prompt logits.
    const std::int64_t vocab = logits_view.shape[1];
    const float* last = logits_view.as<float>(DType::F32) + (ids_view.numel() - 1) * vocab;
    double max = *std::max_element(last, last + vocab), sum = 0;
    for (std::int64_t i = 0; i < vocab; ++i) sum += std::exp(last[i] - max);
    const auto& first = out["logprobs"][0];
    REQUIRE(first.size() == 5);
    CHECK(first[0][0].get<std::int64_t>() == greedy[0]);
    for (const auto& pair : first) {
      const double expected = last[pair[0].get<std::int64_t>()] - max - std::log(sum);
      CHECK(std::abs(pair[1].get<double>() - expected) <= 1e-4);
    }
    for (std::size_t i = 1; i < first.size(); ++i) CHECK(first[i][1].get<double>() <= first[i - 1][1].get<double>());
  }
}

TEST_CASE("generate: stops at an end-of-sequence token unless told not to", "[generate]") {
  // dense_tied's greedy continuation of prompt 2 (the chat prompt) contains <|im_end|> (480)?
  // Whatever it contains, the run without --ignore-eos must end at the first eos id.
  const auto r = generate("--model " + shell_quote(testing::golden_checkpoint("dense_tied").string()) +
                          " --prompt-ids 479,459,256,198 --max-tokens 64 --json");
  REQUIRE(r.status == 0);
  const auto ids = nlohmann::json::parse(r.out)["token_ids"].get<std::vector<std::int64_t>>();
  for (std::size_t i = 0; i + 1 < ids.size(); ++i) CHECK((ids[i] != 480 && ids[i] != 478));
  CHECK((ids.size() == 64 || ids.back() == 480 || ids.back() == 478));
}

TEST_CASE("generate: bad input is an error with exit status 1", "[generate]") {
  const std::string model = " --model " + shell_quote(testing::golden_checkpoint("dense_tied").string());
  const std::pair<std::string, std::string> cases[] = {
      {model + " --prompt-ids 1,512,3 --max-tokens 2", "token id 512 at index 1 is outside the vocabulary [0, 512)"},
      {model + " --prompt-ids '' --max-tokens 2", "--prompt-ids: the prompt is empty"},
      {model + " --prompt-ids 1,x --max-tokens 2", "--prompt-ids: 'x' is not a token id"},
      {model + " --prompt-ids 1,-4 --max-tokens 2", "--prompt-ids: '-4' is not a token id"},
      {model + " --prompt-ids 1,2 --max-tokens 511", "plus --max-tokens 511 exceeds max_position_embeddings 512"},
      {model + " --prompt-ids 1 --max-tokens 2 --temperature 0.7", "only 0 (greedy) is supported"},
      {model + " --prompt-ids 1 --max-tokens 2 --logprobs 21", "--logprobs"},
      {" --model /nonexistent --prompt-ids 1 --max-tokens 2", "/nonexistent: not a directory"},
      {model + " --max-tokens 2", "--prompt-ids is required"},
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

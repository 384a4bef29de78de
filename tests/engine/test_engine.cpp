// The engine (include/qwen/engine/) on the dense tied golden checkpoint (random weights written by
// transformers, a tiny byte-level BPE with Qwen3's special tokens, the official chat template):
//   - greedy continuations of the golden prompts inside a crowd of other requests equal
//     transformers' (an oracle outside the project);
//   - every request of a crowd (chunked prefills, queueing, n > 1, seeds) gets exactly the
//     tokens and logprobs it gets alone;
//   - prefix caching: same tokens as with the cache off, fewer prompt tokens computed;
//   - preemption on a pool of a few blocks: same tokens as with a large pool;
//   - cancel frees the blocks; a random stress keeps every invariant after every step and leaks
//     no block;
//   - stop ids, ignore_eos, max_tokens, the context length; chat with thinking on and off.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <qwen/chat/reasoning_parser.hpp>
#include <qwen/chat/tool_call_parser.hpp>
#include <qwen/engine/llm.hpp>
#include <qwen/io/safetensors.hpp>
#include <qwen/model/qwen3.hpp>

#include "engine_test_model.hpp"

#include "../forward_reference.hpp"

using namespace qwen;
using namespace qwen::engine;
using json = nlohmann::ordered_json;

namespace {

using Model = qwen_test::EngineTestModel;
const std::filesystem::path kCheckpoint = qwen_test::engine_test_checkpoint;

// transformers' golden prompts and greedy continuations for the checkpoint.
using Golden = testing::Reference;
std::vector<Golden> golden_prompts() {
  return testing::read_reference(std::filesystem::path(QWEN_GOLDEN_DIR) / "reference" / "dense_tied.safetensors", 4);
}

LLMOptions options(int max_num_seqs = 8, std::int64_t batched = 64, std::int64_t kv_bytes = 0, bool prefix = true) {
  LLMOptions o;
  o.threads = 2;
  o.kv_cache_dtype = KVCacheDType::fp32;  // the golden references are transformers' fp32 runs
  o.engine.max_num_seqs = max_num_seqs;
  o.engine.max_num_batched_tokens = batched;
  o.engine.kv_cache_bytes = kv_bytes;
  o.engine.enable_prefix_caching = prefix;
  return o;
}

std::vector<std::int32_t> ids_of(const Choice& c) {
  std::vector<std::int32_t> ids;
  for (const TokenOutput& t : c.tokens) ids.push_back(t.id);
  return ids;
}

// Runs every request to the end with check_invariants after every step.
std::vector<RequestResult> run_checked(LLM<Model>& llm, std::vector<Request> requests) {
  auto& engine = llm.engine();
  std::vector<RequestResult> results(requests.size());
  for (std::size_t i = 0; i < requests.size(); ++i)
    engine.submit(std::move(requests[i]), [&results, i](const RequestOutput& o) {
      if (o.result) results[i] = *o.result;
    });
  while (engine.step()) engine.check_invariants();
  engine.check_invariants();
  return results;
}

std::vector<std::int32_t> random_ids(std::mt19937& rng, int n) {
  std::uniform_int_distribution<std::int32_t> token(0, 477);  // ordinary tokens
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (auto& t : ids) t = token(rng);
  return ids;
}

// 16 requests of different lengths: the four golden prompts (greedy, 32 tokens, eos ignored)
// and twelve random ones, half sampled with seeds, some with n = 2 and logprobs.
std::vector<Request> crowd(const std::vector<Golden>& golden) {
  std::vector<Request> out;
  for (const Golden& g : golden) {
    GenerationParams p;
    p.sampling.temperature = 0;
    p.max_tokens = 32;
    p.ignore_eos = true;
    p.sampling.logprobs = 2;
    out.push_back(token_request(g.ids, p));
  }
  std::mt19937 rng(11);
  for (int i = 0; i < 12; ++i) {
    GenerationParams p;
    p.max_tokens = 3 + static_cast<int>(rng() % 40);
    p.ignore_eos = i % 3 == 0;
    if (i % 2) {
      p.sampling.temperature = 0.9;
      p.sampling.top_k = i % 4 == 1 ? 20 : 0;
      p.sampling.top_p = 0.9;
      p.sampling.seed = 1000 + i;
      p.n = i % 3 == 1 ? 2 : 1;
    } else {
      p.sampling.temperature = 0;
      p.sampling.presence_penalty = i % 4 == 0 ? 0.5 : 0.0;
    }
    p.sampling.logprobs = i % 5;
    out.push_back(token_request(random_ids(rng, 1 + static_cast<int>(rng() % 150)), p));
  }
  return out;
}

void require_same(const RequestResult& a, const RequestResult& b) {
  REQUIRE(a.choices.size() == b.choices.size());
  for (std::size_t c = 0; c < a.choices.size(); ++c) {
    const Choice &x = a.choices[c], &y = b.choices[c];
    REQUIRE(ids_of(x) == ids_of(y));
    REQUIRE(x.finish_reason == y.finish_reason);
    REQUIRE(x.text == y.text);
    for (std::size_t t = 0; t < x.tokens.size(); ++t) {
      // Bit-identical logprobs (NaN when not asked for, on both sides).
      REQUIRE(std::memcmp(&x.tokens[t].logprob, &y.tokens[t].logprob, sizeof(float)) == 0);
      REQUIRE(x.tokens[t].top.size() == y.tokens[t].top.size());
      for (std::size_t k = 0; k < x.tokens[t].top.size(); ++k) {
        REQUIRE(x.tokens[t].top[k].token == y.tokens[t].top[k].token);
        REQUIRE(x.tokens[t].top[k].logprob == y.tokens[t].top[k].logprob);
      }
    }
  }
}

}  // namespace

TEST_CASE("engine: a crowd of 16 requests gets transformers' greedy tokens and exactly each request's tokens alone", "[engine]") {
  const auto golden = golden_prompts();
  LLM<Model> crowded(kCheckpoint, options(/*max_num_seqs=*/6, /*batched=*/48));
  const auto together = run_checked(crowded, crowd(golden));
  REQUIRE(together.size() == 16);
  for (std::size_t g = 0; g < golden.size(); ++g) {
    INFO("golden prompt " << g);
    REQUIRE(ids_of(together[g].choices[0]) == golden[g].greedy);
    REQUIRE(together[g].choices[0].finish_reason == FinishReason::length);
  }
  const auto stats = crowded.engine().stats();
  CHECK(stats.steps > 0);
  CHECK(stats.kv_blocks_free == stats.kv_blocks_total);  // nothing leaked

  LLM<Model> single(kCheckpoint, options(1, 512, 0, /*prefix=*/false));
  auto requests = crowd(golden);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    INFO("request " << i);
    const auto alone = run_checked(single, {requests[i]});
    require_same(together[i], alone[0]);
  }
  // Sampled n = 2 choices differ from each other (seed + index), and the sampled requests differ
  // from greedy: the comparison above compared sampling, not just argmax.
  bool choices_differ = false;
  for (const auto& r : together)
    if (r.choices.size() == 2 && ids_of(r.choices[0]) != ids_of(r.choices[1])) choices_differ = true;
  CHECK(choices_differ);
}

TEST_CASE("engine: a cached prefix gives the same tokens as the cache off and computes fewer prompt tokens", "[engine]") {
  std::mt19937 rng(5);
  const auto shared = random_ids(rng, 100);
  auto second = std::vector<std::int32_t>(shared.begin(), shared.begin() + 80);
  const auto tail = random_ids(rng, 30);
  second.insert(second.end(), tail.begin(), tail.end());
  GenerationParams p;
  p.sampling.temperature = 0;
  p.max_tokens = 20;
  p.ignore_eos = true;

  std::map<bool, std::vector<RequestResult>> results;
  std::map<bool, EngineStats> stats;
  for (const bool prefix : {true, false}) {
    LLM<Model> llm(kCheckpoint, options(4, 64, 0, prefix));
    auto first = run_checked(llm, {token_request(shared, p)});
    auto then = run_checked(llm, {token_request(second, p)});
    results[prefix] = {first[0], then[0]};
    stats[prefix] = llm.engine().stats();
  }
  require_same(results[true][0], results[false][0]);
  require_same(results[true][1], results[false][1]);
  CHECK(results[true][1].usage.cached_prompt_tokens == 80);  // five full blocks of 16
  CHECK(results[false][1].usage.cached_prompt_tokens == 0);
  CHECK(stats[true].prompt_tokens_computed == stats[false].prompt_tokens_computed - 80);
  CHECK(stats[true].prompt_tokens_cached == 80);
}

TEST_CASE("engine: the choices of an n > 1 request compute their shared prompt once", "[engine]") {
  std::mt19937 rng(8);
  GenerationParams p;
  p.n = 3;
  p.max_tokens = 12;
  p.ignore_eos = true;
  p.sampling.temperature = 1.0;
  p.sampling.seed = 99;
  const auto prompt = random_ids(rng, 50);
  std::map<bool, RequestResult> result;
  std::map<bool, EngineStats> stats;
  for (const bool prefix : {true, false}) {
    LLM<Model> llm(kCheckpoint, options(8, 256, 0, prefix));
    result[prefix] = run_checked(llm, {token_request(prompt, p)})[0];
    stats[prefix] = llm.engine().stats();
  }
  require_same(result[true], result[false]);
  // 50 prompt tokens once, then each other choice takes 48 from the cache and computes 2.
  CHECK(stats[true].prompt_tokens_computed == 50 + 2 * 2);
  CHECK(stats[false].prompt_tokens_computed == 3 * 50);
  CHECK(ids_of(result[true].choices[0]) != ids_of(result[true].choices[1]));
}

TEST_CASE("engine: preemption on a pool of a few blocks finishes every request with the tokens of a large pool", "[engine]") {
  std::mt19937 rng(9);
  std::vector<Request> requests;
  for (int i = 0; i < 6; ++i) {
    GenerationParams p;
    p.max_tokens = 40 + 5 * i;
    p.ignore_eos = true;
    p.sampling.temperature = i % 2 ? 0.8 : 0.0;
    p.sampling.seed = 77 + i;
    requests.push_back(token_request(random_ids(rng, 20 + 7 * i), p));
  }
  // 8 blocks of 16 positions: one request alone needs up to 6.
  const std::int64_t block_bytes = kv_bytes_per_token<Model>(4) * 16;
  LLM<Model> tight(kCheckpoint, options(6, 64, 8 * block_bytes));
  REQUIRE(tight.engine().kv_blocks() == 8);
  const auto squeezed = run_checked(tight, requests);
  LLM<Model> roomy(kCheckpoint, options(6, 64));
  const auto reference = run_checked(roomy, requests);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    INFO("request " << i);
    REQUIRE(ids_of(squeezed[i].choices[0]).size() == static_cast<std::size_t>(*requests[i].params.max_tokens));
    require_same(squeezed[i], reference[i]);
  }
  CHECK(tight.engine().stats().preemptions > 0);
  CHECK(roomy.engine().stats().preemptions == 0);
  CHECK(tight.engine().stats().kv_blocks_free == 8);
}

TEST_CASE("engine: cancel in the middle ends the request with abort and frees its blocks before the next step", "[engine]") {
  LLM<Model> llm(kCheckpoint, options(4, 64));
  auto& engine = llm.engine();
  std::mt19937 rng(3);
  GenerationParams p;
  p.max_tokens = 200;
  p.ignore_eos = true;
  std::vector<RequestOutput> outputs;
  std::optional<RequestResult> cancelled;
  const RequestId victim = engine.submit(token_request(random_ids(rng, 40), p), [&](const RequestOutput& o) {
    if (o.result) cancelled = *o.result;
  });
  const RequestId other = engine.submit(token_request(random_ids(rng, 30), p));
  for (int i = 0; i < 5; ++i) REQUIRE(engine.step());
  const int free_before = engine.books().num_free_blocks();
  engine.cancel(victim);
  engine.cancel(victim);  // twice: ignored
  engine.cancel(12345);   // unknown: ignored
  REQUIRE(engine.step());
  engine.check_invariants();
  REQUIRE(cancelled);
  CHECK(cancelled->choices[0].finish_reason == FinishReason::abort);
  CHECK(cancelled->choices[0].tokens.size() >= 4);
  // The victim held ceil(44 / 16) = 3 blocks (its full ones stay cached, and cached blocks are free).
  CHECK(engine.books().num_free_blocks() >= free_before + 2);
  CHECK(engine.books().num_sequences() == 1);
  engine.cancel(other);
  CHECK_FALSE(engine.step());
  CHECK(engine.books().num_free_blocks() == engine.kv_blocks());
}

TEST_CASE("engine: stop ids, ignore_eos, max_tokens and min_tokens", "[engine]") {
  const auto golden = golden_prompts();
  LLM<Model> llm(kCheckpoint, options());
  GenerationParams p;
  p.sampling.temperature = 0;
  p.max_tokens = 64;
  // The golden prompts and random ones: some greedy runs meet an end-of-sequence id.
  std::vector<std::vector<std::int32_t>> prompts;
  for (const Golden& g : golden) prompts.push_back(g.ids);
  std::mt19937 rng(21);
  for (int i = 0; i < 28; ++i) prompts.push_back(random_ids(rng, 1 + static_cast<int>(rng() % 30)));
  std::vector<Request> requests;
  for (const auto& prompt : prompts) requests.push_back(token_request(prompt, p));
  auto results = run_checked(llm, requests);
  int stopped = 0;
  for (std::size_t g = 0; g < prompts.size(); ++g) {
    INFO("prompt " << g);
    const Choice& c = results[g].choices[0];
    const auto ids = ids_of(c);
    // The greedy tokens up to the stop equal transformers' (as far as the reference goes).
    if (g < golden.size())
      for (std::size_t t = 0; t < std::min(ids.size(), golden[g].greedy.size()); ++t) REQUIRE(ids[t] == golden[g].greedy[t]);
    if (c.finish_reason == FinishReason::stop) {
      ++stopped;
      REQUIRE(c.stop_token);
      CHECK((ids.back() == 480 || ids.back() == 478));
      CHECK(*c.stop_token == ids.back());
      for (std::size_t t = 0; t + 1 < ids.size(); ++t) CHECK((ids[t] != 480 && ids[t] != 478));
      // ignore_eos runs past it; min_tokens too; a stop id given explicitly stops there.
      GenerationParams q = p;
      q.ignore_eos = true;
      const auto past = llm.generate({token_request(prompts[g], q)});
      CHECK(past[0].choices[0].tokens.size() == 64);
      CHECK(past[0].choices[0].finish_reason == FinishReason::length);
      GenerationParams m = p;
      m.sampling.min_tokens = static_cast<int>(ids.size()) + 1;
      const auto later = llm.generate({token_request(prompts[g], m)});
      CHECK(later[0].choices[0].tokens.size() > ids.size());
      GenerationParams s = q;
      s.sampling.stop_token_ids = {ids[2]};
      const auto early = llm.generate({token_request(prompts[g], s)});
      const auto early_ids = ids_of(early[0].choices[0]);
      const auto first = static_cast<std::size_t>(std::find(ids.begin(), ids.end(), ids[2]) - ids.begin());
      CHECK(early_ids.size() == first + 1);
      CHECK(early[0].choices[0].finish_reason == FinishReason::stop);
    } else {
      CHECK(c.finish_reason == FinishReason::length);
      CHECK(ids.size() == 64);
    }
  }
  CHECK(stopped > 0);  // some greedy run does meet an eos: the checks above ran
  // The context length ends a request that asked for nothing shorter.
  LLMOptions short_context = options();
  short_context.engine.max_model_len = 40;
  LLM<Model> small(kCheckpoint, short_context);
  GenerationParams unlimited;
  unlimited.ignore_eos = true;
  unlimited.sampling.seed = 1;
  const auto r = small.generate({token_request(golden[0].ids, unlimited)});
  CHECK(static_cast<std::int64_t>(golden[0].ids.size() + r[0].choices[0].tokens.size()) == 40);
  CHECK(r[0].choices[0].finish_reason == FinishReason::length);
}

TEST_CASE("engine: bad requests are refused at submit naming the field, and queue nothing", "[engine]") {
  LLMOptions o = options();
  o.engine.max_model_len = 100;
  LLM<Model> llm(kCheckpoint, o);
  auto& engine = llm.engine();
  const auto refused = [&](Request r, const std::string& message) {
    INFO(message);
    REQUIRE_THROWS_WITH(engine.submit(std::move(r)), Catch::Contains(message));
  };
  GenerationParams p;
  p.max_tokens = 0;
  refused(token_request({1, 2}, p), "'max_tokens' is 0");
  p = {};
  p.n = 0;
  refused(token_request({1, 2}, p), "'n' is 0");
  p = {};
  p.stop = {"a", ""};
  refused(text_request("hi", p), "'stop[1]' is empty");
  p = {};
  p.sampling.top_p = 1.5;
  refused(token_request({1, 2}, p), "'top_p' is 1.5");
  p = {};
  p.max_tokens = 5;
  p.sampling.min_tokens = 6;
  refused(token_request({1, 2}, p), "'min_tokens' is 6, more than max_tokens 5");
  refused(token_request({1, 999}), "prompt token [1] is 999, outside the vocabulary [0, 512)");
  refused(token_request({}), "exactly one of");
  refused(text_request(""), "the prompt is empty");
  refused(text_request("\xff"), "UTF-8");
  refused(token_request(std::vector<std::int32_t>(100, 5)), "the prompt has 100 tokens, the context length is 100");
  p = {};
  p.max_tokens = 60;
  refused(token_request(std::vector<std::int32_t>(50, 5), p), "plus max_tokens 60 exceed the context length 100");
  refused(chat_request(json{{"messages", json::array()}}), "messages: the list is empty");
  refused(chat_request(json{{"messages", {{{"role", "robot"}, {"content", "x"}}}}}), "unknown role \"robot\"");
  CHECK_FALSE(engine.has_work());
}

TEST_CASE("engine: an error in one request ends it and nothing else", "[engine]") {
  LLM<Model> llm(kCheckpoint, options());
  std::mt19937 rng(2);
  GenerationParams good;
  good.sampling.temperature = 0;
  good.max_tokens = 10;
  good.ignore_eos = true;
  GenerationParams bad = good;
  // Valid parameters that leave nothing to sample: every token is a stop token, masked for the
  // first 5 (min_tokens). The failure comes from the sampler in the middle of a step.
  bad.sampling.min_tokens = 5;
  for (std::int32_t id = 0; id < Model::vocab_size; ++id) bad.sampling.stop_token_ids.push_back(id);
  const auto prompt = random_ids(rng, 12);
  auto results = llm.generate({token_request(prompt, good), token_request(prompt, bad), token_request(prompt, good)});
  CHECK(results[0].choices[0].finish_reason == FinishReason::length);
  CHECK(results[2].choices[0].finish_reason == FinishReason::length);
  CHECK(ids_of(results[0].choices[0]) == ids_of(results[2].choices[0]));
  CHECK(results[1].choices[0].finish_reason == FinishReason::error);
  CHECK_THAT(results[1].choices[0].error, Catch::Contains("every logit is -inf: no token can be sampled"));
  CHECK(llm.engine().books().num_free_blocks() == llm.engine().kv_blocks());
  // A callback that throws ends its own request only.
  auto& engine = llm.engine();
  std::optional<RequestResult> ok;
  engine.submit(token_request(prompt, good), [](const RequestOutput&) { throw std::runtime_error("client went away"); });
  engine.submit(token_request(prompt, good), [&](const RequestOutput& o) {
    if (o.result) ok = *o.result;
  });
  while (engine.step()) engine.check_invariants();
  REQUIRE(ok);
  CHECK(ok->choices[0].tokens.size() == 10);
  CHECK(engine.books().num_free_blocks() == engine.kv_blocks());
}

TEST_CASE("engine: random stress of requests, n, stops, seeds, cancels and bad parameters leaks nothing", "[engine]") {
#ifdef QWEN_TEST_SANITIZED
  const int total = 150;
#else
  const int total = 1000;
#endif
  const std::int64_t block_bytes = kv_bytes_per_token<Model>(4) * 16;
  LLM<Model> llm(kCheckpoint, options(8, 96, 24 * block_bytes));  // 24 blocks: preemption happens
  auto& engine = llm.engine();
  std::mt19937 rng(2024);
  std::map<RequestId, int> finished;  // results per request
  std::vector<RequestId> live;
  int submitted = 0, refused = 0;
  const std::vector<std::string> stops = {"e", "th", " the", "\n", "ing", "a b"};
  while (submitted + refused < total || engine.has_work()) {
    for (int k = static_cast<int>(rng() % 4); k > 0 && submitted + refused < total; --k) {
      GenerationParams p;
      p.n = 1 + static_cast<int>(rng() % 3);
      p.max_tokens = 1 + static_cast<int>(rng() % 30);
      p.ignore_eos = rng() % 2;
      p.sampling.temperature = rng() % 3 ? 0.7 : 0.0;
      p.sampling.top_k = static_cast<int>(rng() % 30);
      if (rng() % 2) p.sampling.seed = rng();
      if (rng() % 3 == 0) p.stop = {stops[rng() % stops.size()]};
      if (rng() % 4 == 0) p.include_stop_str_in_output = true;
      p.sampling.logprobs = static_cast<int>(rng() % 3);
      const int kind = static_cast<int>(rng() % 20);
      if (kind == 0) p.sampling.top_p = 0;              // bad
      if (kind == 1) p.max_tokens = 500;                // longer than the context
      Request r = rng() % 2 ? token_request(random_ids(rng, 1 + static_cast<int>(rng() % 120)), p)
                            : text_request("stress " + std::to_string(rng() % 1000) + " the thing is", p);
      try {
        const RequestId id = engine.submit(std::move(r), [&finished, n = p.n](const RequestOutput& o) {
          if (o.result) {
            ++finished[o.id];
            REQUIRE(static_cast<int>(o.result->choices.size()) == n);
          }
        });
        live.push_back(id);
        ++submitted;
      } catch (const InvalidArgument&) {
        ++refused;
      }
    }
    if (!live.empty() && rng() % 10 == 0) engine.cancel(live[rng() % live.size()]);
    engine.step();
    engine.check_invariants();
  }
  CHECK(refused > 0);
  CHECK(submitted + refused == total);
  CHECK(static_cast<int>(finished.size()) == submitted);
  for (const auto& [id, count] : finished) REQUIRE(count == 1);
  CHECK(engine.books().num_free_blocks() == engine.kv_blocks());
  CHECK(engine.books().num_sequences() == 0);
  CHECK(engine.stats().preemptions > 0);
}

TEST_CASE("engine: submit and cancel from other threads while the loop thread runs", "[engine]") {
  LLM<Model> llm(kCheckpoint, options(8, 64));
  auto& engine = llm.engine();
  std::jthread loop([&](std::stop_token stop) { engine.run(stop); });
  std::atomic<int> done{0};
  std::vector<std::jthread> clients;
  for (int c = 0; c < 4; ++c)
    clients.emplace_back([&, c] {
      std::mt19937 rng(c);
      for (int i = 0; i < 10; ++i) {
        GenerationParams p;
        p.max_tokens = 5;
        p.ignore_eos = true;
        const RequestId id = engine.submit(token_request(random_ids(rng, 10), p), [&](const RequestOutput& o) {
          if (o.result) ++done;
        });
        if (i % 3 == 0) engine.cancel(id);
      }
    });
  clients.clear();  // joined
  for (int wait = 0; wait < 2000 && done < 40; ++wait) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  loop.request_stop();
  loop.join();
  CHECK(done == 40);
  CHECK(engine.books().num_free_blocks() == engine.kv_blocks());
}

TEST_CASE("engine: chat deltas equal the parsers on the whole text; thinking off never yields reasoning", "[engine]") {
  LLM<Model> llm(kCheckpoint, options());
  auto& engine = llm.engine();
  const std::int32_t think = 502, think_end = 503, tool_open = 492, tool_close = 493;
  int with_reasoning = 0, with_content = 0, with_think_tag_off = 0;
  for (const bool thinking : {true, false}) {
    for (int seed = 0; seed < 6; ++seed) {
      INFO("thinking " << thinking << " seed " << seed);
      json request = {{"messages", {{{"role", "user"}, {"content", "What is 2 + 2?"}}}},
                      {"chat_template_kwargs", {{"enable_thinking", thinking}}}};
      if (seed % 2) request["tools"] = json::array({{{"type", "function"}, {"function", {{"name", "get_weather"}}}}});
      GenerationParams p;
      p.max_tokens = 40;
      p.sampling.temperature = 1.0;
      p.sampling.seed = seed;
      // Push the random model towards the structure tokens so the parsers have work to do.
      p.sampling.logit_bias = {{think, 9.0f}, {think_end, 7.0f}, {tool_open, 5.0f}, {tool_close, 5.0f}};
      std::string reasoning, content, text;
      std::vector<chat::ParsedToolCall> calls;
      std::optional<RequestResult> result;
      engine.submit(chat_request(request, p), [&](const RequestOutput& o) {
        reasoning += o.delta.reasoning;
        content += o.delta.content;
        text += o.delta.text;
        for (const auto& piece : o.delta.tool_calls) chat::append_fragment(calls, piece);
        if (o.result) result = *o.result;
      });
      while (engine.step()) {
      }
      REQUIRE(result);
      const Choice& c = result->choices[0];
      CHECK(text == c.text);
      // The same text parsed whole.
      const std::string prompt = llm.chat_template()->render(chat::parse_chat_request(request));
      chat::ReasoningParser whole(chat::reasoning_start_for(prompt));
      (void)whole.feed(c.text);
      (void)whole.finish();
      CHECK(reasoning == whole.reasoning_content().value_or(""));
      CHECK(c.reasoning_content == whole.reasoning_content());
      std::string expected_content = whole.content();
      std::vector<chat::ParsedToolCall> expected_calls;
      if (seed % 2) {
        chat::ToolCallParser tools("call_" + std::to_string(result->id) + "_0_");
        (void)tools.feed(whole.content());
        (void)tools.finish();
        expected_content = tools.content();
        expected_calls = tools.tool_calls();
      }
      CHECK(content == expected_content);
      CHECK(c.content == expected_content);
      CHECK(calls == expected_calls);
      CHECK(c.tool_calls == expected_calls);
      if (!thinking) {
        CHECK(reasoning.empty());
        CHECK_FALSE(c.reasoning_content);
        with_think_tag_off += c.text.find("<think>") != std::string::npos;
      }
      with_reasoning += !reasoning.empty();
      with_content += !content.empty();
    }
  }
  // The cases above did exercise the split (the random model was pushed to write the tags).
  CHECK(with_reasoning > 0);
  CHECK(with_content > 0);
  CHECK(with_think_tag_off > 0);  // thinking off: a "<think>" in the output is content
}

// The KV pool is sized in the backend's own element (its kv_element_bytes()): the same
// kv_cache_bytes holds twice the blocks in bf16 (the CPU default, and CudaBackend's) as in fp32.
TEST_CASE("the KV bytes per token follow the backend's KV element", "[engine]") {
  constexpr std::int64_t per_token = std::int64_t{Model::num_layers} * 2 * Model::num_kv_heads * Model::head_dim;
  STATIC_REQUIRE(kv_bytes_per_token<Model>(4) == per_token * 4);
  STATIC_REQUIRE(kv_bytes_per_token<Model>(2) == per_token * 2);
  CHECK(LLMOptions{}.kv_cache_dtype == KVCacheDType::bf16);
  for (const auto& [dtype, bytes, blocks] : {std::tuple{KVCacheDType::fp32, 4, 10}, std::tuple{KVCacheDType::bf16, 2, 20}}) {
    INFO(to_string(dtype));
    LLMOptions o = options(4, 64, 10 * per_token * 4 * 16);  // ten fp32 blocks of 16 positions
    o.kv_cache_dtype = dtype;
    LLM<Model> llm(kCheckpoint, o);
    CHECK(llm.engine().kv_blocks() == blocks);
    CHECK(llm.engine().kv_cache_bytes() == llm.engine().kv_tokens() * per_token * bytes);
  }
}

// Loads a checkpoint, runs the forward pass over a prompt and samples greedily, one token at a
// time, until an end-of-sequence id or MAX_NEW tokens; prints the new ids, comma-separated.
//   consumer_forward CHECKPOINT_DIR PROMPT_IDS MAX_NEW      (PROMPT_IDS: comma-separated)
// Built twice from this file: consumer_forward gets the model from the qwen::cpu_models library
// through the light header, consumer_forward_header_only (QWEN_CONSUMER_HEADER_ONLY) compiles the
// model code itself. bench/consumer_compile_time times the two.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <qwen/kv/block_manager.hpp>
#include <qwen/sampling/sampler.hpp>
#ifdef QWEN_CONSUMER_HEADER_ONLY
#include <qwen/model/cpu_model_of.hpp>
#else
#include <qwen/model/cpu_model.hpp>
#endif

namespace {

std::unique_ptr<qwen::CpuModel> load(const char* dir, const qwen::CpuModelOptions& options) {
#ifdef QWEN_CONSUMER_HEADER_ONLY
  return qwen::load_cpu_model_as<qwen::DemoModels>(dir, options);
#else
  return qwen::load_cpu_model(dir, options);
#endif
}

std::vector<std::int32_t> parse_ids(const std::string& text) {
  std::vector<std::int32_t> ids;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    const std::size_t end = std::min(text.find(',', begin), text.size());
    ids.push_back(static_cast<std::int32_t>(std::stol(text.substr(begin, end - begin))));
    begin = end + 1;
  }
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: consumer_forward CHECKPOINT_DIR PROMPT_IDS MAX_NEW\n");
    return 2;
  }
  try {
    const std::vector<std::int32_t> prompt = parse_ids(argv[2]);
    const int max_new = std::atoi(argv[3]);
    auto model = load(argv[1], {.forward = {.max_tokens = 256, .max_sequences = 1, .kv_blocks = 32, .max_logit_rows = 1}});
    qwen::BlockManager<qwen::cpu_model_block_size> books(model->kv_blocks());
    const int seq = books.add_sequence();
    qwen::sampling::SamplingParams greedy;
    greedy.temperature = 0;
    greedy.stop_token_ids.assign(model->eos_token_ids().begin(), model->eos_token_ids().end());
    qwen::sampling::Sampler sampler;
    qwen::StepPlan plan;
    std::vector<float> logits;
    std::vector<std::int32_t> chunk = prompt, output;
    int position = 0;
    for (int step = 0; step < max_new; ++step) {
      const qwen::SequenceChunk batch[] = {{seq, position, chunk, qwen::Logits::last}};
      qwen::plan_step(books, batch, model->limits(), plan);
      model->run(plan, logits);
      position += static_cast<int>(chunk.size());
      const qwen::sampling::RowRequest rows[] = {{&greedy, qwen::sampling::Sampler::admit_seed(greedy), prompt, output}};
      qwen::sampling::SampleResult result[1];
      sampler.sample_batch(logits, model->limits().vocab_size, rows, result, model->pool());
      output.push_back(result[0].token);
      if (result[0].stop) break;
      chunk = {result[0].token};
    }
    const std::string_view name = model->name(), isa = model->isa();
    std::printf("%.*s (%.*s kernels):", static_cast<int>(name.size()), name.data(), static_cast<int>(isa.size()), isa.data());
    for (std::size_t i = 0; i < output.size(); ++i) std::printf("%s%d", i ? "," : " ", output[i]);
    std::printf("\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer_forward: %s\n", e.what());
    return 1;
  }
  return 0;
}

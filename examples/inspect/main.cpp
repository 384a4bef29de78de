// qwen-inspect DIR: loads a Qwen3 checkpoint directory as downloaded from Hugging Face,
// validates everything (config.json against the compiled types, every tensor's name, dtype,
// shape and byte span), and prints what it found. Exit 0 when the checkpoint is usable,
// 1 with the error on any problem.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <string>

#include <qwen/io/checkpoint_config.hpp>
#include <qwen/io/path_status.hpp>
#include <qwen/qwen.hpp>

#include "../common/tool_model_list.hpp"

namespace {

void print_usage(std::ostream& out) {
  out << "usage: qwen-inspect DIR\n"
         "  Validates the Hugging Face Qwen3 checkpoint in DIR (config.json, safetensors files or\n"
         "  model.safetensors.index.json + shards, generation_config.json, tokenizer_config.json)\n"
         "  and prints the matched model type. Exit status 0 if usable, 1 otherwise.\n";
}

std::string mib(std::uint64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

template <class Model>
void report(const std::filesystem::path& dir, const qwen::io::ModelConfig& config) {
  const auto loaded = qwen::load_checkpoint<Model>(dir, config);
  const auto& c = loaded.config;
  std::cout << "checkpoint:  " << dir.string() << "\n"
            << "type:        " << Model::name() << "\n"
            << "shape:       vocab " << c.vocab_size << ", hidden " << c.hidden_size << ", layers " << c.num_hidden_layers
            << ", heads " << c.num_attention_heads << " (kv " << c.num_key_value_heads << "), head_dim " << c.head_dim;
  if (c.is_moe)
    std::cout << ", experts " << c.num_experts << " (top " << c.num_experts_per_tok << ", width " << c.moe_intermediate_size
              << (c.norm_topk_prob ? ", renormalised" : "") << ")";
  else
    std::cout << ", intermediate " << c.intermediate_size;
  std::cout << (c.tie_word_embeddings ? ", tied embeddings" : ", separate lm_head") << "\n"
            << "rope:        theta " << c.rope_theta;
  if (c.yarn)
    std::cout << ", YaRN factor " << c.yarn->factor << " over " << c.yarn->original_max_position_embeddings << " positions";
  std::cout << "\ncontext:     max_position_embeddings " << c.max_position_embeddings << "\n"
            << "weights:     " << c.dtype.value_or("(dtype not stated)")
            << (c.dtype_inferred ? " (not in config.json: inferred from model.embed_tokens.weight)" : "");
  if (c.fp8) std::cout << ", FP8 e4m3 in " << c.fp8->block_rows << "x" << c.fp8->block_cols << " blocks";
  std::cout << "\ntensors:     " << loaded.checkpoint.tensor_count() << " in " << loaded.checkpoint.files().size() << " file(s), "
            << loaded.checkpoint.total_bytes() << " bytes (" << mib(loaded.checkpoint.total_bytes()) << ")\n";
  if (loaded.generation) {
    std::cout << "generation:  eos [";
    for (std::size_t i = 0; i < loaded.generation->eos_token_ids.size(); ++i)
      std::cout << (i ? ", " : "") << loaded.generation->eos_token_ids[i];
    std::cout << "]";
    if (loaded.generation->temperature) std::cout << ", temperature " << *loaded.generation->temperature;
    if (loaded.generation->top_p) std::cout << ", top_p " << *loaded.generation->top_p;
    if (loaded.generation->top_k) std::cout << ", top_k " << *loaded.generation->top_k;
    std::cout << "\n";
  } else {
    std::cout << "generation:  no generation_config.json\n";
  }
  if (loaded.tokenizer) {
    const auto& t = *loaded.tokenizer;
    std::cout << "tokenizer:   chat template " << t.chat_template.size() << " bytes";
    if (!t.chat_template_source.empty())
      std::cout << " (from " << t.chat_template_source << ")";
    std::cout << ", " << t.added_tokens.size() << " added tokens, eos " << t.eos_token.value_or("(none)") << "\n";
  } else {
    std::cout << "tokenizer:   no tokenizer_config.json\n";
  }
  std::cout << "cpu kernels: " << qwen::CpuBackend::isa() << " (this binary's compile target)\n";
  std::cout << "status:      OK\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    print_usage(std::cout);
    return 0;
  }
  if (argc != 2) {
    print_usage(std::cerr);
    return 1;
  }
  const std::filesystem::path dir = argv[1];
  try {
    if (qwen::io::file_type_at(dir) != std::filesystem::file_type::directory)
      throw qwen::IoError(dir.string() + ": not a directory");
    // Takes the dtype from the tensors when config.json states none.
    const qwen::io::ModelConfig config = qwen::io::read_checkpoint_config(dir);
    qwen::dispatch_model<qwen_tools::ToolModelList>(config, [&]<class Model>() { report<Model>(dir, config); });
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "qwen-inspect: error: " << e.what() << "\n";
    return 1;
  }
}

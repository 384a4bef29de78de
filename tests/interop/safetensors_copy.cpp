// safetensors_copy IN OUT: reads IN with qwen's reader and writes every tensor (in file order,
// metadata kept) to OUT with qwen's writer. Driven by check_safetensors_interop.py, which
// compares the result with what the Python safetensors library reads and writes.
#include <cstdio>
#include <exception>
#include <vector>

#include <qwen/io/safetensors.hpp>
#include <qwen/io/safetensors_writer.hpp>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: safetensors_copy IN OUT\n");
    return 2;
  }
  try {
    const auto in = qwen::io::SafetensorsFile::open(argv[1]);
    std::vector<qwen::io::NamedTensor> tensors;
    for (const auto& info : in.tensors()) tensors.emplace_back(info.name, in.view(info));
    qwen::io::write_safetensors(argv[2], tensors, in.metadata());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "safetensors_copy: %s\n", e.what());
    return 1;
  }
}

// A safetensors file (checkpoints, generate shards): the header check that SafetensorsFile::open runs on the mapping.
#include "fuzz/fuzz_util.h"
#include "io/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace draftalign;
  fuzz::expect_only_errors([&] {
    const io::SafetensorsHeader h = io::parse_safetensors_header(data, size, "model.safetensors");
    // What the checks promise the reader that follows: every tensor's bytes lie inside the file.
    for (const io::TensorEntry& e : h.entries)
      if (e.begin > e.end || h.data_start + e.end > size) __builtin_trap();
  });
  return 0;
}

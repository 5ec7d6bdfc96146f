// config.json of a Hugging Face checkpoint (the target, a drafter, a checkpoint): the architecture read from it.
#include "fuzz/fuzz_util.h"
#include "io/hf_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace draftalign;
  const auto file = fuzz::input_file("config.json", fuzz::text(data, size));
  fuzz::expect_only_errors([&] { io::read_hf_config(file); });
  return 0;
}

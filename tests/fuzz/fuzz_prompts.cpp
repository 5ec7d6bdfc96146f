// A prompt JSONL file (generate.prompts, evaluate.prompts) in every shape load_prompts reads, strict and with bad
// lines skipped; and each line as a conversation for `data import`.
#include <sstream>

#include "data/prompts.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace draftalign;
  const std::string_view bytes = fuzz::text(data, size);
  const auto file = fuzz::input_file("prompts.jsonl", bytes);
  fuzz::expect_only_errors([&] { data::load_prompts({file.string()}, /*skip_bad=*/false); });
  fuzz::expect_only_errors([&] { data::load_prompts({file.string()}, /*skip_bad=*/true, 3); });
  std::istringstream in{std::string(bytes)};
  std::string line;
  for (int n = 1; std::getline(in, line); ++n)
    fuzz::expect_only_errors([&] { data::parse_conversation(line, "chat.jsonl:" + std::to_string(n)); });
  return 0;
}

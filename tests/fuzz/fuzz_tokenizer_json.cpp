// A Hugging Face tokenizer.json (byte-level BPE or its SentencePiece-style variants): load it, then encode and decode
// a text that holds ASCII, multi-byte UTF-8, digits, spaces and special-token text.
#include "fuzz/fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace draftalign;
  const auto file = fuzz::input_file("tokenizer.json", fuzz::text(data, size));
  fuzz::expect_only_errors([&] {
    const auto tok = tok::load_bpe(file);
    const std::vector<int64_t> ids = tok->encode("Hello, world! 12345  naïve café 日本語 <|im_end|>\n\tdone.");
    for (int64_t id : ids)
      if (id < 0 || id >= tok->vocab_size()) __builtin_trap();  // encode promises ids inside the vocabulary
    tok->decode(ids);
  });
  return 0;
}

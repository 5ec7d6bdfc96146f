// tokenizer.h: one interface over the two tokenizer families of chat LLMs, loaded from a Hugging Face directory.
//   BpeTokenizer            BPE from tokenizer.json: byte-level (GPT-2, SmolLM2, Llama 3, Qwen2, GPT-4o) or Metaspace
//                           with byte fallback (Llama 2 / Mistral exports); normalizers (NFC, NFKC, ...), pre-tokenizer
//                           regexes (PCRE2), ranked merges, decoders, added and special tokens.
//   SentencePieceTokenizer  tokenizer.model (Llama 2) through libsentencepiece.
// Both encode exactly as Hugging Face does with add_special_tokens=False: special tokens written in the text
// ("<|im_start|>", "<s>") become their ids, and nothing is added around the text. decode(encode(x)) == x.
// Torch-free: prepare-data and the CLI use it without LibTorch.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace draftalign::tok {

// Token ids the stages need by name; -1 where the tokenizer has none.
struct SpecialTokens {
  int64_t bos = -1, eos = -1, pad = -1, unk = -1;
  std::string bos_text, eos_text;  // as written in chat templates ("<|im_start|>", "<s>", ...)
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Throws Error for text that is not valid UTF-8 (naming the byte offset).
  virtual std::vector<int64_t> encode(std::string_view text) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  // One more than the largest id (vocabulary and added tokens).
  virtual int64_t vocab_size() const = 0;
  // The stored token string of an id ("Ġthe", "▁the", "<|im_end|>"); "" for an id that has none.
  virtual std::string piece(int64_t id) const = 0;
  // The id of a token string, or -1.
  virtual int64_t id_of(std::string_view piece) const = 0;

  const SpecialTokens& special() const { return special_; }
  void set_special(const SpecialTokens& s) { special_ = s; }
  const std::filesystem::path& file() const { return file_; }  // the file it was loaded from, for messages
  virtual std::string kind() const = 0;                        // "byte-level BPE" / "SentencePiece"

 protected:
  SpecialTokens special_;
  std::filesystem::path file_;
};

// Loads the tokenizer of a Hugging Face directory: tokenizer.json when present, else tokenizer.model; special tokens
// from tokenizer_config.json (bos_token, eos_token, pad_token, unk_token). Errors name the file and the key.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir);
std::unique_ptr<Tokenizer> load_bpe(const std::filesystem::path& tokenizer_json);
std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& tokenizer_model);

// Error unless `a` and `b` can be paired as target and drafter: the same vocabulary size, the same token string for
// every id, the same special tokens. The message names both and the first difference.
void check_vocab_compatible(const Tokenizer& target, const Tokenizer& drafter);

// Byte offset of the first invalid UTF-8 sequence in `text`, or -1 when it is valid.
int64_t invalid_utf8_offset(std::string_view text);

// `text` as Hugging Face's decode gives it (errors="replace"): every byte where invalid_utf8_offset finds a bad sequence
// becomes U+FFFD. A token sequence cut anywhere (a greedy answer at its token limit, a weak model's byte tokens) need
// not decode to whole characters; this is text that encode accepts again.
std::string replace_invalid_utf8(std::string_view text);

}  // namespace draftalign::tok

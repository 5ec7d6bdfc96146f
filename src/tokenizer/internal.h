// internal.h: what both tokenizer backends share (the added-token splitter, the special tokens of
// tokenizer_config.json, UTF-8 helpers) and the text stages of a tokenizer.json around its BPE model (normalizer,
// pre-tokenizer, decoder; pipeline.cpp). Not part of the public interface.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace draftalign::tok {

struct AddedToken {
  std::string content;
  int64_t id = -1;
  bool lstrip = false, rstrip = false;  // the match swallows whitespace on that side
  bool special = true;
};

// One piece of text between added tokens, or one added token (id >= 0).
struct Segment {
  std::string_view text;
  int64_t id = -1;
};

// Splits text on added tokens, leftmost-longest, as HF tokenizers does before any normalisation.
class AddedTokenSplitter {
 public:
  void add(AddedToken t);
  std::vector<Segment> split(std::string_view text) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  std::vector<AddedToken> tokens_;  // longest first
  bool first_byte_[256] = {};       // bytes some token starts with: the scan skips the others
};

// The token string of a tokenizer_config.json key ("bos_token": "<s>" or {"content": "<s>", ...}); nullopt when the
// key is absent or null; an Error naming `file` and the key for any other value.
std::optional<std::string> special_token_text(const nlohmann::json& config, const char* key, const std::filesystem::path& file);

// Fills `t`'s special tokens from tokenizer_config.json in `dir` (when present): a token given there that the
// vocabulary lacks is an Error naming the file and key.
void read_special_tokens(const std::filesystem::path& dir, const Tokenizer& t, SpecialTokens& out);

// UTF-8 check with the file in the message: Error "<what>: not valid UTF-8 at byte N".
void check_utf8(std::string_view text, const std::string& what);

// UTF-8 of one code point, and the code point of valid UTF-8 at s[i] (advancing i).
std::string utf8_of(uint32_t cp);
uint32_t next_code_point(std::string_view s, size_t& i);

// The stages of a tokenizer.json around its model, each built from its JSON value (`where` names that place in
// messages) and applied as Hugging Face tokenizers applies it. A type that is not supported is an Error naming the
// type, the place and what is supported. A null value is the identity (for Decoder: tokenizers' join with spaces).

// "normalizer": NFC, NFD, NFKC, NFKD (utf8proc), Lowercase, Strip, StripAccents, Replace, Prepend, Sequence.
class Normalizer {
 public:
  Normalizer() = default;
  Normalizer(const nlohmann::json& j, const std::string& where);
  std::string operator()(std::string text) const;
  bool empty() const { return steps_.empty(); }

 private:
  void parse(const nlohmann::json& j, const std::string& where);
  std::vector<std::function<std::string(std::string)>> steps_;
};

// "pre_tokenizer": ByteLevel (GPT-2's regex and byte-to-unicode alphabet), Split (any regex: Llama 3's, Qwen2's,
// GPT-4o's), Digits, Metaspace, Sequence. split() cuts one normalized piece of text into the words the model encodes;
// `at_text_start` says the piece begins the original text (Metaspace's prepend_scheme "first").
class PreTokenizer {
 public:
  PreTokenizer() = default;
  PreTokenizer(const nlohmann::json& j, const std::string& where);
  std::vector<std::string> split(std::string piece, bool at_text_start) const;
  bool byte_level() const { return byte_level_; }  // a ByteLevel step maps bytes to GPT-2's alphabet

 private:
  using Step = std::function<void(std::vector<std::string>& pieces, bool first_at_text_start)>;
  void parse(const nlohmann::json& j, const std::string& where);
  std::vector<Step> steps_;
  bool byte_level_ = false;
};

// "decoder": ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence. Token strings in, text out.
class Decoder {
 public:
  Decoder() = default;
  Decoder(const nlohmann::json& j, const std::string& where);
  std::string operator()(std::vector<std::string> tokens) const;

 private:
  using Step = std::function<std::vector<std::string>(std::vector<std::string>)>;
  void parse(const nlohmann::json& j, const std::string& where);
  std::vector<Step> steps_;
  bool null_ = true;
};

// GPT-2's byte-to-unicode alphabet: printable Latin-1 bytes stand for themselves, the others for U+0100 + n.
const std::string& byte_level_char(uint8_t b);

}  // namespace draftalign::tok

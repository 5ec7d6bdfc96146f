// internal.h: what both tokenizer backends share: the added-token splitter and the special tokens of
// tokenizer_config.json. Not part of the public interface.
#pragma once

#include <cstdint>
#include <filesystem>
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

}  // namespace draftalign::tok

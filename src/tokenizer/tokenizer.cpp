#include "tokenizer/tokenizer.h"

#include <algorithm>

#include "common/error.h"
#include "io/hf_config.h"
#include "tokenizer/internal.h"

namespace draftalign::tok {

int64_t invalid_utf8_offset(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return static_cast<int64_t>(i);
    }
    if (i + len > n) return static_cast<int64_t>(i);
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return static_cast<int64_t>(i);
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return static_cast<int64_t>(i);
    i += len;
  }
  return -1;
}

std::string replace_invalid_utf8(std::string_view text) {
  std::string out;
  for (int64_t bad; (bad = invalid_utf8_offset(text)) >= 0; text.remove_prefix(static_cast<size_t>(bad) + 1))
    out.append(text.substr(0, static_cast<size_t>(bad))).append("\xEF\xBF\xBD");
  return out.append(text);
}

void check_utf8(std::string_view text, const std::string& what) {
  const int64_t bad = invalid_utf8_offset(text);
  DA_CHECK(bad < 0, what, ": not valid UTF-8 at byte ", bad);
}

void AddedTokenSplitter::add(AddedToken t) {
  DA_CHECK(!t.content.empty(), "added token ", t.id, " is empty");
  first_byte_[static_cast<unsigned char>(t.content[0])] = true;
  tokens_.push_back(std::move(t));
  std::stable_sort(tokens_.begin(), tokens_.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
}

namespace {
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
}  // namespace

std::vector<Segment> AddedTokenSplitter::split(std::string_view text) const {
  std::vector<Segment> out;
  size_t plain = 0;  // start of the text not yet emitted
  size_t i = 0;
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    if (!first_byte_[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    for (const AddedToken& t : tokens_) {  // longest first: the first hit at i is the longest
      if (text.compare(i, t.content.size(), t.content) == 0) {
        hit = &t;
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t begin = i, end = i + hit->content.size();
    if (hit->lstrip)
      while (begin > plain && is_space(text[begin - 1])) --begin;
    if (hit->rstrip)
      while (end < text.size() && is_space(text[end])) ++end;
    if (begin > plain) out.push_back({text.substr(plain, begin - plain), -1});
    out.push_back({text.substr(i, hit->content.size()), hit->id});
    plain = i = end;
  }
  if (plain < text.size()) out.push_back({text.substr(plain), -1});
  return out;
}

std::optional<std::string> special_token_text(const nlohmann::json& j, const char* key,
                                              const std::filesystem::path& file) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  throw Error(str_cat(file.string(), ": key '", key, "': expected a token string, got ", it->dump()));
}

void read_special_tokens(const std::filesystem::path& dir, const Tokenizer& t, SpecialTokens& out) {
  const std::filesystem::path file = dir / "tokenizer_config.json";
  if (!std::filesystem::exists(file)) return;
  const nlohmann::json j = io::read_json_file(file);
  DA_CHECK(j.is_object(), file.string(), ": not a JSON object");
  auto lookup = [&](const char* key, int64_t& id, std::string* text) {
    const std::optional<std::string> given = special_token_text(j, key, file);
    if (!given) return;
    const std::string& content = *given;
    id = t.id_of(content);
    DA_CHECK(id >= 0, file.string(), ": key '", key, "': token '", content, "' is not in the vocabulary of ",
             t.file().string());
    if (text) *text = content;
  };
  lookup("bos_token", out.bos, &out.bos_text);
  lookup("eos_token", out.eos, &out.eos_text);
  lookup("pad_token", out.pad, nullptr);
  lookup("unk_token", out.unk, nullptr);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir) {
  if (std::filesystem::exists(dir / "tokenizer.json")) return load_bpe(dir / "tokenizer.json");
  if (std::filesystem::exists(dir / "tokenizer.model")) return load_sentencepiece(dir / "tokenizer.model");
  throw Error(str_cat(dir.string(), ": no tokenizer.json or tokenizer.model"));
}

void check_vocab_compatible(const Tokenizer& target, const Tokenizer& drafter) {
  const std::string names = str_cat("target ", target.file().string(), " and drafter ", drafter.file().string());
  DA_CHECK(target.vocab_size() == drafter.vocab_size(), names, " have different vocabulary sizes (",
           target.vocab_size(), " vs ", drafter.vocab_size(), "): a drafter must share the target's vocabulary");
  for (int64_t id = 0; id < target.vocab_size(); ++id) {
    const std::string a = target.piece(id), b = drafter.piece(id);
    DA_CHECK(a == b, names, " differ at token id ", id, ": '", a, "' vs '", b, "'");
  }
  const SpecialTokens &s = target.special(), &d = drafter.special();
  auto same = [&](const char* what, int64_t x, int64_t y) {
    DA_CHECK(x == y, names, " have different ", what, " tokens (", x, " vs ", y, ")");
  };
  same("BOS", s.bos, d.bos);
  same("EOS", s.eos, d.eos);
  same("padding", s.pad, d.pad);
  same("unknown", s.unk, d.unk);
}

}  // namespace draftalign::tok

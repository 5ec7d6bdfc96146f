// The text stages of a tokenizer.json around its BPE model: normalizer -> pre-tokenizer -> (model) -> decoder, each
// a list of small steps parsed once from the JSON and applied as Hugging Face tokenizers (the Rust crate) applies
// them. Normal forms come from utf8proc, regexes from PCRE2 in UTF + Unicode-property mode (what the crate's
// Oniguruma patterns mean). Parity with the crate on every configuration here is tests/tokenizer's job.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <cstdlib>
#include <memory>

#include "common/error.h"
#include "tokenizer/internal.h"

namespace draftalign::tok {

using nlohmann::json;

std::string utf8_of(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

uint32_t next_code_point(std::string_view s, size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
  uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

namespace {

// The regex of tokenizers' ByteLevel pre-tokenizer (GPT-2's).
constexpr const char* kByteLevelPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct ByteAlphabet {
  std::string text[256];
  std::unordered_map<uint32_t, uint8_t> byte_of;  // code point -> byte
  ByteAlphabet() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      text[b] = utf8_of(cp);
      byte_of[cp] = static_cast<uint8_t>(b);
    }
  }
};
const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

// A compiled PCRE2 pattern in UTF + Unicode-properties mode.
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    int err = 0;
    PCRE2_SIZE at = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                          &at, nullptr);
    if (code_ == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw Error(str_cat(where, ": regex does not compile at offset ", at, " (", reinterpret_cast<char*>(msg), ")"));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // optional speed-up; the interpreter is used when it fails
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // [begin, end) of every non-overlapping non-empty match, left to right.
  std::vector<std::pair<size_t, size_t>> matches(std::string_view s) const {
    std::vector<std::pair<size_t, size_t>> out;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t start = 0;
    while (start <= s.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, PCRE2_NO_UTF_CHECK,
                                 md, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      if (ov[1] == ov[0]) {  // an empty match: step over one character
        if (ov[0] >= s.size()) break;
        size_t i = ov[0];
        next_code_point(s, i);
        start = i;
        continue;
      }
      out.emplace_back(ov[0], ov[1]);
      start = ov[1];
    }
    pcre2_match_data_free(md);
    return out;
  }

  // `s` with every match replaced by `content`.
  std::string replace(std::string_view s, const std::string& content) const {
    std::string out;
    size_t last = 0;
    for (auto [b, e] : matches(s)) out.append(s.substr(last, b - last)).append(content), last = e;
    return out.append(s.substr(last));
  }

 private:
  pcre2_code* code_ = nullptr;
};

// A tokenizers "pattern" object: {"String": literal} or {"Regex": pattern}.
std::shared_ptr<Regex> pattern_of(const json& pattern, const std::string& where) {
  if (pattern.contains("Regex")) return std::make_shared<Regex>(pattern["Regex"].get<std::string>(), where);
  DA_CHECK(pattern.contains("String"), where, ": expected {\"String\": ...} or {\"Regex\": ...}");
  return std::make_shared<Regex>("\\Q" + pattern["String"].get<std::string>() + "\\E", where);
}

enum class Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext };

Behavior behavior_of(const std::string& name, const std::string& where) {
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  throw Error(str_cat(where, ": split behavior '", name,
                      "' is not supported (Isolated, Removed, MergedWithPrevious, MergedWithNext)"));
}

// Appends the pieces of `piece` cut at the matches of `re` to `out`, each match kept as `behavior` says.
void split_into(const std::string& piece, const Regex& re, Behavior behavior, std::vector<std::string>& out) {
  size_t last = 0;
  std::string pending;  // MergedWithNext: a match waiting for the text after it
  for (auto [b, e] : re.matches(piece)) {
    std::string gap = piece.substr(last, b - last), match = piece.substr(b, e - b);
    switch (behavior) {
      case Behavior::kIsolated:
        if (!gap.empty()) out.push_back(gap);
        out.push_back(match);
        break;
      case Behavior::kRemoved:
        if (!gap.empty()) out.push_back(gap);
        break;
      case Behavior::kMergedWithPrevious:
        out.push_back(gap + match);
        break;
      case Behavior::kMergedWithNext:
        if (!(pending + gap).empty()) out.push_back(pending + gap);
        pending = match;
        break;
    }
    last = e;
  }
  std::string tail = pending + piece.substr(last);
  if (!tail.empty()) out.push_back(tail);
}

// Rust's char::is_whitespace (Unicode White_Space), which tokenizers' Strip uses.
bool is_white_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// (byte offset, code point) of each character of valid UTF-8.
std::vector<std::pair<size_t, uint32_t>> code_points(std::string_view s) {
  std::vector<std::pair<size_t, uint32_t>> out;
  for (size_t i = 0; i < s.size();) {
    const size_t at = i;
    out.emplace_back(at, next_code_point(s, i));
  }
  return out;
}

std::string map_code_points(std::string_view s, const std::function<void(uint32_t, std::string&)>& f) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) f(next_code_point(s, i), out);
  return out;
}

// One Unicode normal form through utf8proc (options: UTF8PROC_COMPOSE / DECOMPOSE, with or without COMPAT).
std::string normal_form(const std::string& s, int options) {
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                          static_cast<utf8proc_ssize_t>(s.size()), &out,
                                          static_cast<utf8proc_option_t>(UTF8PROC_STABLE | options));
  DA_CHECK(n >= 0, "Unicode normalisation failed: ", utf8proc_errmsg(n));
  std::string r(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  std::free(out);
  return r;
}

const std::string& type_of(const json& j, const std::string& where) {
  DA_CHECK(j.is_object() && j.contains("type") && j["type"].is_string(), where, ": expected an object with a \"type\"");
  return j["type"].get_ref<const std::string&>();
}

// A one-character string field ("replacement": "▁", Strip's "content": " ") as its code point.
uint32_t one_char(const json& j, const char* key, const std::string& where, const char* fallback) {
  const std::string s = j.value(key, std::string(fallback));
  size_t i = 0;
  const uint32_t cp = s.empty() ? 0 : next_code_point(s, i);
  DA_CHECK(!s.empty() && i == s.size(), where, ".", key, ": expected one character, got '", s, "'");
  return cp;
}

}  // namespace

const std::string& byte_level_char(uint8_t b) { return alphabet().text[b]; }

// --- normalizer ------------------------------------------------------------------------------------------------------

Normalizer::Normalizer(const json& j, const std::string& where) {
  if (!j.is_null()) parse(j, where);
}

void Normalizer::parse(const json& j, const std::string& where) {
  const std::string& type = type_of(j, where);
  if (type == "Sequence") {
    const json& list = j.at("normalizers");
    for (size_t i = 0; i < list.size(); ++i) parse(list[i], str_cat(where, ".normalizers[", i, "]"));
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    const int options = (type[type.size() - 1] == 'C' ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE) |
                        (type.size() == 4 ? UTF8PROC_COMPAT : 0);
    steps_.push_back([options](std::string s) { return normal_form(s, options); });
  } else if (type == "Lowercase") {
    // Rust's char::to_lowercase: the simple mapping, except U+0130 (İ), which becomes "i" + U+0307.
    steps_.push_back([](std::string s) {
      return map_code_points(s, [](uint32_t c, std::string& out) {
        out += c == 0x130 ? std::string("i\xCC\x87") : utf8_of(static_cast<uint32_t>(utf8proc_tolower(c)));
      });
    });
  } else if (type == "Strip") {
    const bool left = j.value("strip_left", true), right = j.value("strip_right", true);
    steps_.push_back([left, right](std::string s) {
      const std::vector<std::pair<size_t, uint32_t>> cps = code_points(s);
      size_t b = 0, e = cps.size();
      while (left && b < e && is_white_space(cps[b].second)) ++b;
      while (right && e > b && is_white_space(cps[e - 1].second)) --e;
      const size_t from = b < cps.size() ? cps[b].first : s.size(), to = e < cps.size() ? cps[e].first : s.size();
      return s.substr(from, to - from);
    });
  } else if (type == "StripAccents") {  // drops every mark (categories Mn, Mc, Me), as tokenizers does
    steps_.push_back([](std::string s) {
      return map_code_points(s, [](uint32_t c, std::string& out) {
        const utf8proc_category_t cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
        if (cat != UTF8PROC_CATEGORY_MN && cat != UTF8PROC_CATEGORY_MC && cat != UTF8PROC_CATEGORY_ME) out += utf8_of(c);
      });
    });
  } else if (type == "Replace") {
    auto re = pattern_of(j.at("pattern"), where + ".pattern");
    const std::string content = j.at("content").get<std::string>();
    steps_.push_back([re, content](std::string s) { return re->replace(s, content); });
  } else if (type == "Prepend") {
    const std::string prepend = j.at("prepend").get<std::string>();
    steps_.push_back([prepend](std::string s) { return s.empty() ? s : prepend + s; });
  } else {
    throw Error(str_cat(where, ": normalizer type '", type,
                        "' is not supported (NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Replace, Prepend, "
                        "Sequence)"));
  }
}

std::string Normalizer::operator()(std::string text) const {
  for (const auto& step : steps_) text = step(std::move(text));
  return text;
}

// --- pre-tokenizer ---------------------------------------------------------------------------------------------------

PreTokenizer::PreTokenizer(const json& j, const std::string& where) {
  if (!j.is_null()) parse(j, where);
}

void PreTokenizer::parse(const json& j, const std::string& where) {
  const std::string& type = type_of(j, where);
  if (type == "Sequence") {
    const json& list = j.at("pretokenizers");
    for (size_t i = 0; i < list.size(); ++i) parse(list[i], str_cat(where, ".pretokenizers[", i, "]"));
  } else if (type == "ByteLevel") {
    // Each piece: a space in front (add_prefix_space), GPT-2's regex (use_regex), then its bytes as GPT-2's alphabet.
    const bool prefix = j.value("add_prefix_space", false);
    std::shared_ptr<Regex> re;
    if (j.value("use_regex", true)) re = std::make_shared<Regex>(kByteLevelPattern, where);
    byte_level_ = true;
    steps_.push_back([prefix, re](std::vector<std::string>& pieces, bool) {
      std::vector<std::string> split;
      for (std::string& p : pieces) {
        if (prefix && p[0] != ' ') p.insert(0, " ");
        if (re) split_into(p, *re, Behavior::kIsolated, split);
        else split.push_back(std::move(p));
      }
      for (std::string& p : split) {
        std::string mapped;
        for (unsigned char b : p) mapped += alphabet().text[b];
        p.swap(mapped);
      }
      pieces.swap(split);
    });
  } else if (type == "Split" || type == "Digits") {
    std::shared_ptr<Regex> re;
    Behavior behavior = Behavior::kIsolated;
    if (type == "Digits") {
      re = std::make_shared<Regex>(j.value("individual_digits", false) ? "\\p{N}" : "\\p{N}+", where);
    } else {
      re = pattern_of(j.at("pattern"), where + ".pattern");
      behavior = behavior_of(j.value("behavior", "Isolated"), where);
      DA_CHECK(!j.value("invert", false), where, ": inverted splits are not supported");
    }
    steps_.push_back([re, behavior](std::vector<std::string>& pieces, bool) {
      std::vector<std::string> split;
      for (const std::string& p : pieces) split_into(p, *re, behavior, split);
      pieces.swap(split);
    });
  } else if (type == "Metaspace") {
    // Spaces become the replacement character (U+2581 in practice); one goes in front of a piece that lacks it
    // (prepend_scheme always, or first: only the piece that begins the text); split: each word keeps its own in front.
    const std::string rep = utf8_of(one_char(j, "replacement", where, "\xE2\x96\x81"));
    std::string scheme = j.value("prepend_scheme", std::string());
    if (scheme.empty()) scheme = j.value("add_prefix_space", true) ? "always" : "never";
    DA_CHECK(scheme == "always" || scheme == "first" || scheme == "never", where, ": prepend_scheme '", scheme,
             "' is not one of always, first, never");
    const bool split = j.value("split", true);
    auto on_rep = std::make_shared<Regex>("\\Q" + rep + "\\E", where);
    steps_.push_back([rep, scheme, split, on_rep](std::vector<std::string>& pieces, bool first_at_text_start) {
      std::vector<std::string> out;
      for (size_t i = 0; i < pieces.size(); ++i) {
        std::string p;
        for (char c : pieces[i]) c == ' ' ? p += rep : p += c;
        const bool prepend = scheme == "always" || (scheme == "first" && i == 0 && first_at_text_start);
        if (prepend && p.rfind(rep, 0) != 0) p.insert(0, rep);
        if (split) split_into(p, *on_rep, Behavior::kMergedWithNext, out);
        else out.push_back(std::move(p));
      }
      pieces.swap(out);
    });
  } else {
    throw Error(str_cat(where, ": pre-tokenizer type '", type,
                        "' is not supported (Sequence, ByteLevel, Split, Digits, Metaspace)"));
  }
}

std::vector<std::string> PreTokenizer::split(std::string piece, bool at_text_start) const {
  std::vector<std::string> pieces;
  if (!piece.empty()) pieces.push_back(std::move(piece));
  for (const Step& step : steps_) step(pieces, at_text_start);
  return pieces;
}

// --- decoder ---------------------------------------------------------------------------------------------------------

Decoder::Decoder(const json& j, const std::string& where) {
  if (j.is_null()) return;
  null_ = false;
  parse(j, where);
}

void Decoder::parse(const json& j, const std::string& where) {
  using Tokens = std::vector<std::string>;
  const std::string& type = type_of(j, where);
  if (type == "Sequence") {
    const json& list = j.at("decoders");
    for (size_t i = 0; i < list.size(); ++i) parse(list[i], str_cat(where, ".decoders[", i, "]"));
  } else if (type == "ByteLevel") {
    // A token whose every character is in GPT-2's alphabet becomes those bytes, any other token its own bytes; all
    // in one string. (The bytes are returned as they are; replace_invalid_utf8 is the caller's choice.)
    steps_.push_back([](Tokens tokens) {
      std::string out;
      for (const std::string& t : tokens) {
        std::string bytes;
        bool all = true;
        for (size_t i = 0; i < t.size() && all;) {
          auto it = alphabet().byte_of.find(next_code_point(t, i));
          all = it != alphabet().byte_of.end();
          if (all) bytes += static_cast<char>(it->second);
        }
        out += all ? bytes : t;
      }
      return Tokens{out};
    });
  } else if (type == "Metaspace") {
    // The replacement character becomes a space, except in the first token (where it was prepended), unless
    // prepend_scheme is never.
    const uint32_t rep = one_char(j, "replacement", where, "\xE2\x96\x81");
    std::string scheme = j.value("prepend_scheme", std::string());
    if (scheme.empty()) scheme = j.value("add_prefix_space", true) ? "always" : "never";
    const bool strip_first = scheme != "never";
    steps_.push_back([rep, strip_first](Tokens tokens) {
      for (size_t k = 0; k < tokens.size(); ++k) {
        tokens[k] = map_code_points(tokens[k], [&](uint32_t c, std::string& out) {
          if (c != rep) out += utf8_of(c);
          else if (!(k == 0 && strip_first)) out += ' ';
        });
      }
      return tokens;
    });
  } else if (type == "Replace") {
    auto re = pattern_of(j.at("pattern"), where + ".pattern");
    const std::string content = j.at("content").get<std::string>();
    steps_.push_back([re, content](Tokens tokens) {
      for (std::string& t : tokens) t = re->replace(t, content);
      return tokens;
    });
  } else if (type == "ByteFallback") {
    // Runs of "<0xNN>" tokens become their bytes when those are valid UTF-8, else one U+FFFD per byte.
    steps_.push_back([](Tokens tokens) {
      Tokens out;
      std::string bytes;
      size_t n_bytes = 0;
      auto flush = [&] {
        if (n_bytes == 0) return;
        if (invalid_utf8_offset(bytes) < 0) out.push_back(bytes);
        else
          for (size_t k = 0; k < n_bytes; ++k) out.push_back("\xEF\xBF\xBD");
        bytes.clear(), n_bytes = 0;
      };
      for (std::string& t : tokens) {
        const bool is_byte = t.size() == 6 && t.rfind("<0x", 0) == 0 && t[5] == '>' && std::isxdigit(t[3]) &&
                             std::isxdigit(t[4]);
        if (is_byte) {
          bytes += static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)), ++n_bytes;
        } else {
          flush();
          out.push_back(std::move(t));
        }
      }
      flush();
      return out;
    });
  } else if (type == "Fuse") {
    steps_.push_back([](Tokens tokens) {
      std::string all;
      for (const std::string& t : tokens) all += t;
      return Tokens{all};
    });
  } else if (type == "Strip") {
    // Up to `start` leading and `stop` trailing copies of `content` come off each token.
    const uint32_t content = one_char(j, "content", where, " ");
    const size_t start = j.value("start", 0), stop = j.value("stop", 0);
    steps_.push_back([content, start, stop](Tokens tokens) {
      for (std::string& t : tokens) {
        const std::vector<std::pair<size_t, uint32_t>> cps = code_points(t);
        size_t b = 0, e = cps.size();
        while (b < start && b < cps.size() && cps[b].second == content) ++b;
        for (size_t k = 0; k < stop && e > 0 && cps[e - 1].second == content; ++k) --e;
        if (e < b) e = b;
        const size_t from = b < cps.size() ? cps[b].first : t.size(), to = e < cps.size() ? cps[e].first : t.size();
        t = t.substr(from, to - from);
      }
      return tokens;
    });
  } else {
    throw Error(str_cat(where, ": decoder type '", type,
                        "' is not supported (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence)"));
  }
}

std::string Decoder::operator()(std::vector<std::string> tokens) const {
  std::string out;
  if (null_) {  // tokenizers without a decoder joins the tokens with spaces
    for (size_t k = 0; k < tokens.size(); ++k) out += (k ? " " : "") + tokens[k];
    return out;
  }
  for (const Step& step : steps_) tokens = step(std::move(tokens));
  for (const std::string& t : tokens) out += t;
  return out;
}

}  // namespace draftalign::tok

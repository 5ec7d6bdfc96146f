// Byte-level BPE from a Hugging Face tokenizer.json: the GPT-2 / SmolLM2 / Llama-3 family.
// encode: split on added tokens -> pre-tokenizer steps (Split regexes, Digits, ByteLevel) -> each piece's bytes mapped
// to the GPT-2 byte-to-unicode alphabet -> merges applied lowest rank first -> ids.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <climits>
#include <unordered_map>

#include "common/error.h"
#include "io/hf_config.h"
#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"

namespace draftalign::tok {
namespace {

using nlohmann::json;

// The regex of tokenizers' ByteLevel pre-tokenizer (GPT-2's).
constexpr const char* kByteLevelPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

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

// Decodes one code point of valid UTF-8 at s[i], advancing i.
uint32_t next_code_point(std::string_view s, size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
  uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

// A compiled PCRE2 pattern in UTF + Unicode-properties mode (what the tokenizers crate's regexes mean).
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

  // [begin, end) of every non-overlapping match, left to right.
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

 private:
  pcre2_code* code_ = nullptr;
};

// One step of the pre-tokenizer (a Sequence is a list of them).
struct PreStep {
  enum Kind { kSplit, kByteLevel } kind = kSplit;
  std::shared_ptr<Regex> regex;
  std::string behavior = "Isolated";  // for kSplit: Isolated, Removed, MergedWithPrevious, MergedWithNext
  bool add_prefix_space = false;      // for kByteLevel
};

std::vector<std::string> split_pieces(const std::string& piece, const Regex& re, const std::string& behavior) {
  std::vector<std::string> out;
  size_t last = 0;
  std::string pending;  // MergedWithNext: a match waiting for the text after it
  for (auto [b, e] : re.matches(piece)) {
    std::string gap = piece.substr(last, b - last), match = piece.substr(b, e - b);
    if (behavior == "Isolated") {
      if (!gap.empty()) out.push_back(gap);
      out.push_back(match);
    } else if (behavior == "Removed") {
      if (!gap.empty()) out.push_back(gap);
    } else if (behavior == "MergedWithPrevious") {
      out.push_back(gap + match);
    } else {  // MergedWithNext
      if (!(pending + gap).empty()) out.push_back(pending + gap);
      pending = match;
    }
    last = e;
  }
  std::string tail = pending + piece.substr(last);
  if (!tail.empty()) out.push_back(tail);
  return out;
}

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(const std::filesystem::path& path);

  std::vector<int64_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  std::string piece(int64_t id) const override {
    return id >= 0 && id < vocab_size() ? pieces_[static_cast<size_t>(id)] : std::string();
  }
  int64_t id_of(std::string_view piece) const override {
    auto it = ids_.find(std::string(piece));
    return it == ids_.end() ? -1 : it->second;
  }
  std::string kind() const override { return "byte-level BPE"; }

 private:
  void parse_pre_tokenizer(const json& j, const std::string& where);
  void bpe(std::string_view bytes, std::vector<int64_t>& out) const;

  std::vector<std::string> pieces_;                  // id -> token string
  std::unordered_map<std::string, int64_t> ids_;     // token string -> id
  std::vector<bool> is_added_;                       // id -> decoded as its content, not through the byte map
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (left id, right id) -> (rank, merged id)
  int32_t byte_ids_[256] = {};
  std::unordered_map<uint32_t, uint8_t> byte_of_code_point_;
  std::string byte_text_[256];
  bool ignore_merges_ = false;
  std::vector<PreStep> steps_;
  AddedTokenSplitter added_;
};

void BpeTokenizer::parse_pre_tokenizer(const json& j, const std::string& where) {
  const std::string type = j.value("type", "");
  if (type == "Sequence") {
    const json& list = j.at("pretokenizers");
    for (size_t i = 0; i < list.size(); ++i) parse_pre_tokenizer(list[i], str_cat(where, ".pretokenizers[", i, "]"));
  } else if (type == "ByteLevel") {
    PreStep s;
    s.kind = PreStep::kByteLevel;
    s.add_prefix_space = j.value("add_prefix_space", false);
    if (j.value("use_regex", true)) s.regex = std::make_shared<Regex>(kByteLevelPattern, where);
    steps_.push_back(s);
  } else if (type == "Split") {
    PreStep s;
    const json& pattern = j.at("pattern");
    if (pattern.contains("Regex")) {
      s.regex = std::make_shared<Regex>(pattern["Regex"].get<std::string>(), where + ".pattern.Regex");
    } else {
      // A literal: quote it for PCRE2.
      s.regex = std::make_shared<Regex>("\\Q" + pattern.at("String").get<std::string>() + "\\E", where);
    }
    s.behavior = j.value("behavior", "Isolated");
    DA_CHECK(s.behavior == "Isolated" || s.behavior == "Removed" || s.behavior == "MergedWithPrevious" ||
                 s.behavior == "MergedWithNext",
             where, ": split behavior '", s.behavior, "' is not supported");
    DA_CHECK(!j.value("invert", false), where, ": inverted splits are not supported");
    steps_.push_back(s);
  } else if (type == "Digits") {
    PreStep s;
    s.regex = std::make_shared<Regex>(j.value("individual_digits", false) ? "\\p{N}" : "\\p{N}+", where);
    steps_.push_back(s);
  } else {
    throw Error(str_cat(where, ": pre-tokenizer type '", type,
                        "' is not supported (Sequence, ByteLevel, Split, Digits)"));
  }
}

BpeTokenizer::BpeTokenizer(const std::filesystem::path& path) {
  file_ = path;
  const std::string f = path.string();
  const json j = io::read_json_file(path);
  try {
    const json& model = j.at("model");
    DA_CHECK(model.value("type", "") == "BPE", f, ": model.type '", model.value("type", ""),
             "' is not supported: draftalign reads byte-level BPE tokenizer.json files (SentencePiece models are "
             "read from tokenizer.model)");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      DA_CHECK(!model.contains(key) || model[key].is_null() || model[key].get<std::string>().empty(), f, ": model.",
               key, " is not supported by byte-level BPE");
    }
    ignore_merges_ = model.value("ignore_merges", false);
    DA_CHECK(j.contains("normalizer") && j["normalizer"].is_null(), f, ": normalizer ",
             j.contains("normalizer") ? j["normalizer"].dump().substr(0, 80) : std::string("(missing)"),
             " is not supported (byte-level BPE tokenizers have none)");

    for (const auto& [tok, id] : model.at("vocab").items()) {
      DA_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0, f, ": model.vocab['", tok, "'] is not an id");
      ids_[tok] = id.get<int64_t>();
    }
    for (const json& a : j.value("added_tokens", json::array())) {
      AddedToken t;
      t.content = a.at("content").get<std::string>();
      t.id = a.at("id").get<int64_t>();
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      t.special = a.value("special", false);
      DA_CHECK(!a.value("single_word", false), f, ": added token '", t.content, "': single_word is not supported");
      ids_[t.content] = t.id;
      added_.add(t);
    }
    int64_t size = 0;
    for (const auto& [tok, id] : ids_) size = std::max(size, id + 1);
    pieces_.assign(static_cast<size_t>(size), "");
    is_added_.assign(static_cast<size_t>(size), false);
    for (const auto& [tok, id] : ids_) pieces_[static_cast<size_t>(id)] = tok;
    for (const AddedToken& t : added_.tokens()) is_added_[static_cast<size_t>(t.id)] = true;

    // GPT-2's byte-to-unicode alphabet: printable Latin-1 bytes stand for themselves, the others for 256 + n.
    int n = 0, bytes_known = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      byte_text_[b] = utf8_of(cp);
      byte_of_code_point_[cp] = static_cast<uint8_t>(b);
      // A byte without a token is dropped when encoded, as HF tokenizers does (SmolLM2 lacks most control bytes).
      auto it = ids_.find(byte_text_[b]);
      byte_ids_[b] = it == ids_.end() ? -1 : static_cast<int32_t>(it->second);
      bytes_known += it != ids_.end();
    }
    DA_CHECK(bytes_known >= 128, f, ": the vocabulary has tokens for only ", bytes_known,
             " of the 256 byte symbols: not a byte-level BPE vocabulary");

    const json& merges = model.at("merges");
    for (size_t r = 0; r < merges.size(); ++r) {
      std::string left, right;
      if (merges[r].is_string()) {  // the older "a b" form
        const std::string m = merges[r].get<std::string>();
        const size_t sp = m.find(' ', 1);
        DA_CHECK(sp != std::string::npos, f, ": model.merges[", r, "] '", m, "' is not 'left right'");
        left = m.substr(0, sp), right = m.substr(sp + 1);
      } else {
        DA_CHECK(merges[r].is_array() && merges[r].size() == 2, f, ": model.merges[", r, "] is not a pair");
        left = merges[r][0].get<std::string>(), right = merges[r][1].get<std::string>();
      }
      const int64_t a = id_of(left), b = id_of(right), c = id_of(left + right);
      DA_CHECK(a >= 0 && b >= 0 && c >= 0, f, ": model.merges[", r, "] ('", left, "', '", right,
               "') names a token the vocabulary lacks");
      const uint64_t key = (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b);
      merges_.emplace(key, std::make_pair(static_cast<int32_t>(r), static_cast<int32_t>(c)));
    }

    DA_CHECK(j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null(), f,
             ": pre_tokenizer is missing: not a byte-level BPE tokenizer");
    parse_pre_tokenizer(j["pre_tokenizer"], f + ": pre_tokenizer");
    bool byte_level = false;
    for (const PreStep& s : steps_) byte_level = byte_level || s.kind == PreStep::kByteLevel;
    DA_CHECK(byte_level, f, ": pre_tokenizer has no ByteLevel step: not a byte-level BPE tokenizer");
  } catch (const json::exception& e) {
    throw Error(str_cat(f, ": unexpected tokenizer.json structure (", e.what(), ")"));
  }
}

void BpeTokenizer::bpe(std::string_view bytes, std::vector<int64_t>& out) const {
  if (ignore_merges_) {  // Llama 3: a piece that is a whole token is taken as it is
    std::string mapped;
    for (unsigned char b : bytes) mapped += byte_text_[b];
    if (auto it = ids_.find(mapped); it != ids_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> sym;
  sym.reserve(bytes.size());
  for (unsigned char b : bytes)
    if (byte_ids_[b] >= 0) sym.push_back(byte_ids_[b]);
  std::vector<int32_t> next;
  while (sym.size() > 1) {
    int32_t best_rank = INT32_MAX;
    uint64_t best_key = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      const uint64_t key = (static_cast<uint64_t>(sym[i]) << 32) | static_cast<uint32_t>(sym[i + 1]);
      auto it = merges_.find(key);
      if (it != merges_.end() && it->second.first < best_rank) best_rank = it->second.first, best_key = key;
    }
    if (best_rank == INT32_MAX) break;
    const int32_t merged = merges_.at(best_key).second;
    next.clear();
    for (size_t i = 0; i < sym.size(); ++i) {
      if (i + 1 < sym.size() && ((static_cast<uint64_t>(sym[i]) << 32) | static_cast<uint32_t>(sym[i + 1])) == best_key) {
        next.push_back(merged);
        ++i;
      } else {
        next.push_back(sym[i]);
      }
    }
    sym.swap(next);
  }
  out.insert(out.end(), sym.begin(), sym.end());
}

std::vector<int64_t> BpeTokenizer::encode(std::string_view text) const {
  check_utf8(text, "text to encode");
  std::vector<int64_t> out;
  for (const Segment& seg : added_.split(text)) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
      continue;
    }
    std::vector<std::string> pieces = {std::string(seg.text)};
    for (const PreStep& step : steps_) {
      std::vector<std::string> next;
      for (std::string& p : pieces) {
        if (step.kind == PreStep::kByteLevel && step.add_prefix_space && !p.empty() && p[0] != ' ') p = " " + p;
        if (!step.regex) {
          next.push_back(std::move(p));
          continue;
        }
        for (std::string& q : split_pieces(p, *step.regex, step.behavior)) next.push_back(std::move(q));
      }
      pieces.swap(next);
    }
    for (const std::string& p : pieces) bpe(p, out);
  }
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) {
    DA_CHECK(id >= 0 && id < vocab_size(), "decode: token id ", id, " is outside the vocabulary of ", file_.string(),
             " (", vocab_size(), " tokens)");
    const std::string& p = pieces_[static_cast<size_t>(id)];
    if (is_added_[static_cast<size_t>(id)]) {
      out += p;
      continue;
    }
    for (size_t i = 0; i < p.size();) {
      const size_t at = i;
      const uint32_t cp = next_code_point(p, i);
      auto it = byte_of_code_point_.find(cp);
      if (it != byte_of_code_point_.end()) out += static_cast<char>(it->second);
      else out.append(p, at, i - at);
    }
  }
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> load_bpe(const std::filesystem::path& tokenizer_json) {
  auto t = std::make_unique<BpeTokenizer>(tokenizer_json);
  SpecialTokens s;
  read_special_tokens(tokenizer_json.parent_path(), *t, s);
  t->set_special(s);
  return t;
}

}  // namespace draftalign::tok

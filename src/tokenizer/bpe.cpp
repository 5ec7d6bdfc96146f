// BPE from a Hugging Face tokenizer.json: byte-level (GPT-2, SmolLM2, Llama 3, Qwen2, GPT-4o) and Metaspace with
// byte fallback (Llama 2 and Mistral exports).
// encode: split on added tokens -> normalizer -> split on normalized added tokens -> pre-tokenizer -> each word's
// characters looked up (unknown: its "<0xNN>" byte tokens, else <unk>) -> merges applied lowest rank first -> ids.
// decode: token strings -> decoder. The stages around the model are in pipeline.cpp.
#include <climits>
#include <queue>
#include <unordered_map>

#include "common/error.h"
#include "io/hf_config.h"
#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"

namespace draftalign::tok {
namespace {

using nlohmann::json;

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
  std::string kind() const override { return pre_.byte_level() ? "byte-level BPE" : "BPE"; }

 private:
  void read_model(const json& model, const std::string& f);
  void bpe(std::string_view word, std::vector<int64_t>& out) const;

  std::vector<std::string> pieces_;                  // id -> token string
  std::unordered_map<std::string, int64_t> ids_;     // token string -> id
  std::unordered_map<uint32_t, int32_t> char_ids_;   // code point -> id of the one-character token
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (left id, right id) -> (rank, merged id)
  int32_t byte_fallback_ids_[256] = {};  // byte -> id of "<0xNN>" when byte_fallback, else -1
  int64_t unk_ = -1;                     // model.unk_token's id, or -1
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  AddedTokenSplitter added_raw_;         // added tokens matched in the text as given ("normalized": false)
  AddedTokenSplitter added_normalized_;  // ... and in the normalized text ("normalized": true)
  Normalizer normalizer_;
  PreTokenizer pre_;
  Decoder decoder_;
};

BpeTokenizer::BpeTokenizer(const std::filesystem::path& path) {
  file_ = path;
  const std::string f = path.string();
  const json j = io::read_json_file(path);
  try {
    const json& model = j.at("model");
    read_model(model, f);
    normalizer_ = Normalizer(j.value("normalizer", json()), f + ": normalizer");
    pre_ = PreTokenizer(j.value("pre_tokenizer", json()), f + ": pre_tokenizer");
    decoder_ = Decoder(j.value("decoder", json()), f + ": decoder");
    for (size_t k = 0; k < j.value("added_tokens", json::array()).size(); ++k) {
      const json& a = j["added_tokens"][k];
      AddedToken t;
      t.content = a.at("content").get<std::string>();
      t.id = a.at("id").get<int64_t>();
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      t.special = a.value("special", false);
      DA_CHECK(t.id >= 0, f, ": added_tokens[", k, "]: id ", t.id, " is negative");
      DA_CHECK(!a.value("single_word", false), f, ": added token '", t.content, "': single_word is not supported");
      ids_[t.content] = t.id;
      // tokenizers' default: special tokens are matched before normalisation, the others after it, in the
      // normalized form of their content.
      if (a.value("normalized", !t.special)) {
        t.content = normalizer_(t.content);
        added_normalized_.add(t);
      } else {
        added_raw_.add(t);
      }
    }
    int64_t size = 0;
    for (const auto& [tok, id] : ids_) size = std::max(size, id + 1);
    pieces_.assign(static_cast<size_t>(size), "");
    for (const auto& [tok, id] : ids_) pieces_[static_cast<size_t>(id)] = tok;

    if (pre_.byte_level()) {  // byte-level BPE: the vocabulary spells every byte in GPT-2's alphabet
      int bytes_known = 0;
      for (int b = 0; b < 256; ++b) bytes_known += ids_.count(byte_level_char(static_cast<uint8_t>(b))) > 0;
      DA_CHECK(bytes_known >= 128, f, ": the vocabulary has tokens for only ", bytes_known,
               " of the 256 byte symbols: not a byte-level BPE vocabulary");
    }
  } catch (const json::exception& e) {
    throw Error(str_cat(f, ": unexpected tokenizer.json structure (", e.what(), ")"));
  }
}

void BpeTokenizer::read_model(const json& model, const std::string& f) {
  DA_CHECK(model.value("type", "") == "BPE", f, ": model.type '", model.value("type", ""),
           "' is not supported: draftalign reads BPE tokenizer.json files (SentencePiece models are read from "
           "tokenizer.model)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    DA_CHECK(!model.contains(key) || model[key].is_null() || model[key].get<std::string>().empty(), f, ": model.", key,
             " is not supported");
  }
  ignore_merges_ = model.value("ignore_merges", false);
  fuse_unk_ = model.value("fuse_unk", false);
  for (const auto& [tok, id] : model.at("vocab").items()) {
    DA_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0, f, ": model.vocab['", tok, "'] is not an id");
    ids_[tok] = id.get<int64_t>();
    size_t i = 0;
    const uint32_t cp = tok.empty() ? 0 : next_code_point(tok, i);
    if (!tok.empty() && i == tok.size()) char_ids_[cp] = static_cast<int32_t>(id.get<int64_t>());
  }
  if (model.contains("unk_token") && !model["unk_token"].is_null()) {
    const std::string unk = model["unk_token"].get<std::string>();
    DA_CHECK(ids_.count(unk), f, ": model.unk_token '", unk, "' is not in model.vocab");
    unk_ = ids_[unk];
  }
  const bool byte_fallback = model.value("byte_fallback", false);
  for (int b = 0; b < 256; ++b) {
    static const char* hex = "0123456789ABCDEF";
    auto it = ids_.find(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">");
    byte_fallback_ids_[b] = byte_fallback && it != ids_.end() ? static_cast<int32_t>(it->second) : -1;
  }

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
}

// One pre-tokenized word -> ids, as tokenizers' BPE::merge_word: characters (or their byte tokens, or <unk>), then
// the pair of lowest merge rank merged first (leftmost among equals) until no pair has a merge. The symbols form a
// linked list and the candidate pairs a heap, so a long word (Metaspace without split) costs O(n log n).
void BpeTokenizer::bpe(std::string_view word, std::vector<int64_t>& out) const {
  if (ignore_merges_) {  // Llama 3: a word that is a whole token is taken as it is
    if (auto it = ids_.find(std::string(word)); it != ids_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> sym;
  sym.reserve(word.size());
  bool last_unk = false;
  for (size_t i = 0; i < word.size();) {
    const size_t at = i;
    auto it = char_ids_.find(next_code_point(word, i));
    if (it != char_ids_.end()) {
      sym.push_back(it->second), last_unk = false;
      continue;
    }
    bool bytes = true;
    for (size_t k = at; k < i; ++k) bytes = bytes && byte_fallback_ids_[static_cast<uint8_t>(word[k])] >= 0;
    if (bytes) {
      for (size_t k = at; k < i; ++k) sym.push_back(byte_fallback_ids_[static_cast<uint8_t>(word[k])]);
      continue;  // (tokenizers does not end an <unk> run here either)
    }
    if (unk_ < 0) continue;  // no <unk>: the character is dropped, as tokenizers does
    if (!(fuse_unk_ && last_unk)) sym.push_back(static_cast<int32_t>(unk_));
    last_unk = true;
  }

  const size_t n = sym.size();
  std::vector<int32_t> prev(n), next(n);
  for (size_t i = 0; i < n; ++i)
    prev[i] = static_cast<int32_t>(i) - 1, next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  auto merge_of = [&](int32_t a, int32_t b) -> const std::pair<int32_t, int32_t>* {
    auto it = merges_.find((static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  using Candidate = std::tuple<int32_t, int32_t, int32_t>;  // (rank, position of the left symbol, merged id)
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  for (size_t i = 0; i + 1 < n; ++i)
    if (auto m = merge_of(sym[i], sym[i + 1])) heap.emplace(m->first, static_cast<int32_t>(i), m->second);
  std::vector<bool> gone(n, false);
  while (!heap.empty()) {
    const auto [rank, pos, merged] = heap.top();
    heap.pop();
    if (gone[pos] || next[pos] < 0) continue;
    const int32_t right = next[pos];
    const auto* m = merge_of(sym[pos], sym[right]);
    if (m == nullptr || m->second != merged) continue;  // a stale candidate: one of its symbols has changed
    sym[pos] = merged;
    gone[right] = true;
    next[pos] = next[right];
    if (next[pos] >= 0) prev[next[pos]] = pos;
    if (prev[pos] >= 0)
      if (auto l = merge_of(sym[prev[pos]], sym[pos])) heap.emplace(l->first, prev[pos], l->second);
    if (next[pos] >= 0)
      if (auto r = merge_of(sym[pos], sym[next[pos]])) heap.emplace(r->first, pos, r->second);
  }
  for (size_t i = 0; i < n; ++i)
    if (!gone[i]) out.push_back(sym[i]);
}

std::vector<int64_t> BpeTokenizer::encode(std::string_view text) const {
  check_utf8(text, "text to encode");
  std::vector<int64_t> out;
  for (const Segment& seg : added_raw_.split(text)) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
      continue;
    }
    const bool at_text_start = seg.text.data() == text.data();
    const std::string normalized = normalizer_(std::string(seg.text));
    for (const Segment& part : added_normalized_.split(normalized)) {
      if (part.id >= 0) {
        out.push_back(part.id);
        continue;
      }
      const bool first = at_text_start && part.text.data() == normalized.data();
      for (const std::string& word : pre_.split(std::string(part.text), first)) bpe(word, out);
    }
  }
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) {
    DA_CHECK(id >= 0 && id < vocab_size(), "decode: token id ", id, " is outside the vocabulary of ", file_.string(),
             " (", vocab_size(), " tokens)");
    tokens.push_back(pieces_[static_cast<size_t>(id)]);
  }
  return decoder_(std::move(tokens));
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

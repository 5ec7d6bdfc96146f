// SentencePiece (tokenizer.model: Llama 2, TinyLlama, Mistral v0.1) through libsentencepiece.
// Text is split on the special tokens first (HF treats "<s>" written in a chat template as the BOS id; SentencePiece
// alone would spell it out). Each piece between them is encoded by SentencePiece. With "legacy": true in
// tokenizer_config.json (the default, and what Meta's reference code does) every piece gets SentencePiece's dummy
// prefix "▁"; with "legacy": false only a piece at the start of the text does, as transformers' LlamaTokenizer then does.
#include <sentencepiece_processor.h>

#include "common/error.h"
#include "io/hf_config.h"
#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"

namespace draftalign::tok {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::filesystem::path& path, bool legacy) : legacy_(legacy) {
    file_ = path;
    const auto status = sp_.Load(path.string());
    DA_CHECK(status.ok(), path.string(), ": not a SentencePiece model (", status.ToString(), ")");
    for (int id = 0; id < sp_.GetPieceSize(); ++id) {
      if (sp_.IsControl(id) || sp_.IsUnknown(id)) {
        AddedToken t;
        t.content = sp_.IdToPiece(id);
        t.id = id;
        if (!t.content.empty()) added_.add(t);
      }
    }
  }

  std::vector<int64_t> encode(std::string_view text) const override {
    check_utf8(text, "text to encode");
    std::vector<int64_t> out;
    std::vector<int> ids;
    for (const Segment& seg : added_.split(text)) {
      if (seg.id >= 0) {
        out.push_back(seg.id);
        continue;
      }
      const bool prefix = legacy_ || seg.text.data() == text.data();
      if (prefix) {
        sp_.Encode(seg.text, &ids);
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        // No dummy prefix: encode behind the unknown piece and drop what it became (transformers' trick).
        const std::string unk = sp_.IdToPiece(sp_.unk_id());
        std::vector<int> unk_ids;
        sp_.Encode(unk, &unk_ids);
        sp_.Encode(unk + std::string(seg.text), &ids);
        out.insert(out.end(), ids.begin() + static_cast<std::ptrdiff_t>(unk_ids.size()), ids.end());
      }
    }
    return out;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string out;
    bool run_start = true, first_run = true;
    for (int64_t id : ids) {
      DA_CHECK(id >= 0 && id < vocab_size(), "decode: token id ", id, " is outside the vocabulary of ",
               file_.string(), " (", vocab_size(), " tokens)");
      const int i = static_cast<int>(id);
      if (sp_.IsControl(i) || sp_.IsUnknown(i)) {
        out += sp_.IdToPiece(i);
        run_start = true;
        first_run = false;
        continue;
      }
      std::string piece = sp_.IdToPiece(i);
      std::string text;
      if (sp_.IsByte(i)) {
        text = std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
      } else {
        for (size_t k = 0; k < piece.size();) {
          if (piece.compare(k, 3, "\xE2\x96\x81") == 0) text += ' ', k += 3;
          else text += piece[k++];
        }
      }
      // The dummy prefix encode added: at the start of the text, and (legacy) after every special token.
      if (run_start && (legacy_ || first_run) && !text.empty() && text[0] == ' ') text.erase(0, 1);
      out += text;
      run_start = false;
      first_run = false;
    }
    return out;
  }

  int64_t vocab_size() const override { return sp_.GetPieceSize(); }
  std::string piece(int64_t id) const override {
    return id >= 0 && id < vocab_size() ? sp_.IdToPiece(static_cast<int>(id)) : std::string();
  }
  int64_t id_of(std::string_view piece) const override {
    const int id = sp_.PieceToId(piece);
    return id == sp_.unk_id() && piece != sp_.IdToPiece(id) ? -1 : id;
  }
  std::string kind() const override { return "SentencePiece"; }

  SpecialTokens model_specials() const {
    SpecialTokens s;
    s.bos = sp_.bos_id(), s.eos = sp_.eos_id(), s.pad = sp_.pad_id(), s.unk = sp_.unk_id();
    if (s.bos >= 0) s.bos_text = sp_.IdToPiece(static_cast<int>(s.bos));
    if (s.eos >= 0) s.eos_text = sp_.IdToPiece(static_cast<int>(s.eos));
    return s;
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  AddedTokenSplitter added_;
  bool legacy_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& tokenizer_model) {
  const std::filesystem::path config = tokenizer_model.parent_path() / "tokenizer_config.json";
  bool legacy = true;
  if (std::filesystem::exists(config)) {
    const nlohmann::json j = io::read_json_file(config);
    if (j.is_object() && j.contains("legacy") && !j["legacy"].is_null()) {
      DA_CHECK(j["legacy"].is_boolean(), config.string(), ": key 'legacy': expected true or false");
      legacy = j["legacy"].get<bool>();
    }
  }
  auto t = std::make_unique<SentencePieceTokenizer>(tokenizer_model, legacy);
  SpecialTokens s = t->model_specials();
  read_special_tokens(tokenizer_model.parent_path(), *t, s);
  t->set_special(s);
  return t;
}

}  // namespace draftalign::tok

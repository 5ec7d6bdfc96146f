#include "trainers/prepare_data.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/checksum.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "config/fingerprint.h"
#include "data/shards.h"
#include "tokenizer/tokenizer.h"

namespace draftalign::train {
namespace {

namespace stdfs = std::filesystem;
using data::DatasetIndex;
using data::ShardWriter;

using json = nlohmann::json;

struct Document {
  std::string text;
  std::string where;  // "file:line" for error messages
};

// Reads documents from the inputs in order, a batch of about `batch_bytes` at a time.
class DocumentReader {
 public:
  DocumentReader(std::vector<std::string> inputs, std::string text_field)
      : inputs_(std::move(inputs)), field_(std::move(text_field)) {}

  // Appends the next documents to `out` until about batch_bytes are read; false when the inputs are exhausted.
  bool next_batch(size_t batch_bytes, std::vector<Document>& out, int64_t& bytes_read) {
    size_t got = 0;
    while (got < batch_bytes) {
      if (!in_.is_open() && !open_next()) return !out.empty();
      std::string line;
      if (!std::getline(in_, line)) {
        if (jsonl_ == false && !paragraph_.empty()) emit(out, got);
        in_.close();
        continue;
      }
      ++line_no_;
      bytes_read += static_cast<int64_t>(line.size()) + 1;
      if (jsonl_) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        json j;
        try {
          j = json::parse(line);
        } catch (const json::exception& e) {
          throw Error(str_cat(where(), ": not valid JSON (", e.what(), ")"));
        }
        DA_CHECK(j.is_object() && j.contains(field_), where(), ": no \"", field_,
                 "\" field (prepare.text_field names the field that holds the text)");
        DA_CHECK(j[field_].is_string(), where(), ": \"", field_, "\" is not a string");
        paragraph_ = j[field_].get<std::string>();
        para_line_ = line_no_;
        emit(out, got);
      } else if (line.find_first_not_of(" \t\r") == std::string::npos) {
        if (!paragraph_.empty()) emit(out, got);
      } else {
        if (paragraph_.empty()) para_line_ = line_no_;
        paragraph_ += line;
        paragraph_ += '\n';
      }
    }
    return true;
  }

 private:
  bool open_next() {
    if (next_ >= inputs_.size()) return false;
    file_ = inputs_[next_++];
    const std::string ext = stdfs::path(file_).extension().string();
    DA_CHECK(ext == ".jsonl" || ext == ".txt", file_, ": unsupported input type '", ext,
             "' (prepare.inputs takes .jsonl and .txt files)");
    jsonl_ = ext == ".jsonl";
    in_.open(file_, std::ios::binary);
    DA_CHECK(in_.is_open(), file_, ": cannot open for reading");
    line_no_ = 0;
    paragraph_.clear();
    return true;
  }
  std::string where() const { return str_cat(file_, ":", line_no_); }
  void emit(std::vector<Document>& out, size_t& got) {
    if (!jsonl_ && !paragraph_.empty() && paragraph_.back() == '\n') paragraph_.pop_back();
    got += paragraph_.size();
    out.push_back({std::move(paragraph_), str_cat(file_, ":", para_line_)});
    paragraph_.clear();
  }

  std::vector<std::string> inputs_;
  std::string field_, file_, paragraph_;
  size_t next_ = 0;
  bool jsonl_ = true;
  std::ifstream in_;
  int64_t line_no_ = 0, para_line_ = 0;
};

// What the dataset is made from: the prepare options (config/fingerprint.h: the input files by content) and the
// tokenizer file's content.
std::string fingerprint(const config::Config& cfg, const tok::Tokenizer& t) {
  for (const auto& in : cfg.prepare.inputs)
    DA_CHECK(stdfs::is_regular_file(in), in, ": input file not found (prepare.inputs)");
  return config::stage_fingerprint(cfg, "prepare-data/v2", {"prepare"}, {{"tokenizer", file_checksum_hex(t.file())}});
}

// Validation documents: every `period`-th one (0 = none).
int64_t val_period(double fraction) { return fraction > 0 ? std::max<int64_t>(2, std::llround(1.0 / fraction)) : 0; }

}  // namespace

std::string tokenizer_dir(const config::Config& cfg) {
  return cfg.prepare.tokenizer.empty() ? cfg.target.dir : cfg.prepare.tokenizer;
}

namespace {

// The index of prepare.output_dir when it holds a dataset made from `source` (the fingerprint); nullopt when it holds
// none, another, or a broken one.
std::optional<DatasetIndex> up_to_date(const stdfs::path& out_dir, const std::string& source) {
  if (!stdfs::exists(out_dir / data::kIndexFile)) return std::nullopt;
  try {
    DatasetIndex index = data::read_index(out_dir);
    if (index.source == source) return index;
  } catch (const Error& e) {
    log::warn("prepare-data: rebuilding ", out_dir.string(), ": ", e.what());
  }
  return std::nullopt;
}

}  // namespace

bool prepare_data_complete(const config::Config& cfg) {
  return up_to_date(cfg.prepare.output_dir, fingerprint(cfg, *tok::load_tokenizer(tokenizer_dir(cfg)))).has_value();
}

int prepare_data(const config::Config& cfg) {
  const config::PrepareSection& p = cfg.prepare;
  DA_CHECK(!p.inputs.empty(), "prepare.inputs is empty: name at least one .jsonl or .txt file");
  const auto tokenizer = tok::load_tokenizer(tokenizer_dir(cfg));
  const int64_t eos = tokenizer->special().eos;
  DA_CHECK(eos >= 0, tokenizer->file().string(), ": the tokenizer has no eos_token to end documents with");

  const std::string source = fingerprint(cfg, *tokenizer);
  const stdfs::path out_dir = p.output_dir;
  if (const std::optional<DatasetIndex> done = up_to_date(out_dir, source)) {
    log::info("prepare-data: ", out_dir.string(), " is up to date (", done->tokens("train"), " train tokens)");
    return 0;
  }

  DatasetIndex index;
  index.vocab_size = tokenizer->vocab_size();
  index.eos_id = eos;
  index.token_bytes = index.vocab_size <= 65536 ? 2 : 4;
  index.tokenizer = tokenizer->file().string();
  index.source = source;

  int64_t total_bytes = 0;
  for (const auto& in : p.inputs) total_bytes += static_cast<int64_t>(stdfs::file_size(in));
  const int workers = p.workers > 0 ? static_cast<int>(p.workers)
                                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t period = val_period(p.val_fraction);

  fs::AtomicDir dir(out_dir);
  ShardWriter train(dir.path(), "train", index.token_bytes, p.shard_tokens);
  ShardWriter val(dir.path(), "val", index.token_bytes, p.shard_tokens);
  DocumentReader reader(p.inputs, p.text_field);
  log::Progress progress("prepare-data", total_bytes, "B", stdout, -1, cfg.run.progress_interval_s);
  int64_t doc_index = 0, bytes_read = 0;
  std::vector<Document> docs;
  std::vector<std::vector<int64_t>> ids;
  while (true) {
    docs.clear();
    if (!reader.next_batch(8u << 20, docs, bytes_read)) break;
    ids.assign(docs.size(), {});
    // Each worker tokenizes every workers-th document; a failure is reported for the earliest failing document.
    std::vector<std::pair<size_t, std::string>> errors(workers, {docs.size(), ""});
    auto work = [&](int w) {
      for (size_t i = w; i < docs.size(); i += workers) {
        try {
          ids[i] = tokenizer->encode(docs[i].text);
        } catch (const Error& e) {
          errors[w] = {i, e.what()};
          return;
        }
      }
    };
    std::vector<std::thread> threads;
    for (int w = 1; w < workers; ++w) threads.emplace_back(work, w);
    work(0);
    for (auto& t : threads) t.join();
    const auto first = *std::min_element(errors.begin(), errors.end());
    DA_CHECK(first.first == docs.size(), docs[std::min(first.first, docs.size() - 1)].where, ": ", first.second);
    for (size_t i = 0; i < docs.size(); ++i) {
      if (ids[i].empty()) {
        ++index.skipped_empty;
        continue;
      }
      ids[i].push_back(eos);
      const bool is_val = period > 0 && doc_index % period == period - 1;
      (is_val ? val : train).add_document(ids[i]);
      ++doc_index;
    }
    progress.update(bytes_read);
  }
  index.splits["train"] = train.finish();
  index.splits["val"] = val.finish();
  if (index.splits["val"].empty()) index.splits.erase("val");
  progress.finish(str_cat(doc_index, " documents"));
  DA_CHECK(!index.splits["train"].empty(), "prepare-data: the inputs hold no documents (",
           index.skipped_empty, " empty ones skipped)");
  data::write_index(dir.path(), index);
  dir.commit();
  log::info("prepare-data: ", index.docs("train"), " train documents (", index.tokens("train"), " tokens), ",
            index.docs("val"), " validation documents (", index.tokens("val"), " tokens) in ", out_dir.string());
  return 0;
}

cli::Stage prepare_data_stage() {
  return {
      .name = "prepare-data",
      .summary = "tokenize a text/JSONL corpus into binary shards",
      .description =
          "Tokenizes text (.txt, documents separated by blank lines) or JSONL files with the target's tokenizer into\n"
          "binary token shards (magic, version, count, checksum) with index.json and a held-out validation split.\n"
          "Deterministic whatever the number of workers; an up-to-date dataset is left as it is.",
      .sections = {"run", "target", "prepare"},
      .run = prepare_data,
      .outputs = [](const config::Config& c) { return std::vector<std::string>{c.prepare.output_dir}; },
      .is_complete = prepare_data_complete};
}

}  // namespace draftalign::train

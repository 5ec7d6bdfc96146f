// prepare-data and the token shard format: the stream read back is the documents' tokens, each followed by EOS, in
// order, split deterministically whatever the worker count; a bad input line or a damaged shard is an error that names
// the file and the place, and a failed run leaves the previous dataset as it was.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "common/checksum.h"
#include "common/fs.h"
#include "data/shards.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "trainers/prepare_data.h"

namespace draftalign::data {
namespace {

namespace fsys = std::filesystem;
using testing::ScratchDir;
using testing::error_of;

using testing::kSmolDir;

// 300 JSONL documents of varied length (one empty, skipped) and a text file of 3 paragraphs.
std::vector<std::string> write_inputs(const ScratchDir& d, std::string& jsonl, std::string& txt) {
  std::vector<std::string> docs;
  std::string lines;
  for (int i = 0; i < 300; ++i) {
    std::string text = str_cat("Document ", i, ": ");
    for (int w = 0; w < (i * 7) % 40; ++w) text += str_cat("word", (i * w) % 97, w % 5 == 4 ? ".\n" : " ");
    if (i == 17) text.clear();
    lines += nlohmann::json({{"text", text}, {"id", i}}).dump() + "\n";
    if (i == 50) lines += "\n";  // blank lines are allowed
    docs.push_back(text);
  }
  jsonl = (d / "corpus.jsonl").string();
  testing::write_text(jsonl, lines);
  txt = (d / "notes.txt").string();
  testing::write_text(txt, "First paragraph,\nstill the first.\n\n\nSecond one.\n  \nThird ends the file\n");
  docs.insert(docs.end(), {"First paragraph,\nstill the first.", "Second one.", "Third ends the file"});
  return docs;
}

config::Config prepare_config(const std::vector<std::string>& inputs, const fsys::path& out, int workers) {
  config::Config cfg;
  cfg.target.dir = kSmolDir.string();
  cfg.prepare.inputs = inputs;
  cfg.prepare.output_dir = out.string();
  cfg.prepare.shard_tokens = 1024;
  cfg.prepare.val_fraction = 0.1;
  cfg.prepare.workers = workers;
  return cfg;
}

// The stage, then the index it wrote.
DatasetIndex prepare_data(const config::Config& cfg) {
  EXPECT_EQ(train::prepare_data(cfg), 0);
  return read_index(cfg.prepare.output_dir);
}

std::vector<int64_t> read_all(const fsys::path& dir, const std::string& split) {
  const DatasetIndex index = read_index(dir);
  TokenStream s(dir, index, split);
  std::vector<int64_t> out(s.size());
  s.read(0, s.size(), out.data());
  return out;
}

TEST(PrepareData, StreamIsTheDocumentsWithEosAndDoesNotDependOnWorkers) {
  ScratchDir d;
  std::string jsonl, txt;
  const auto docs = write_inputs(d, jsonl, txt);
  const auto one = prepare_data(prepare_config({jsonl, txt}, d / "w1", 1));
  const auto two = prepare_data(prepare_config({jsonl, txt}, d / "w2", 2));
  EXPECT_EQ(one.skipped_empty, 1);
  ASSERT_GT(one.splits.at("train").size(), 2u) << "shard_tokens=1024 should cut several shards";
  for (const auto& split : {"train", "val"}) {
    ASSERT_EQ(one.splits.at(split).size(), two.splits.at(split).size());
    for (const auto& s : one.splits.at(split))
      EXPECT_EQ(testing::read_text(d / "w1" / s.file), testing::read_text(d / "w2" / s.file)) << s.file;
  }

  auto tok = tok::load_tokenizer(kSmolDir);
  const int64_t eos = tok->special().eos;
  std::vector<int64_t> want_train, want_val;
  int64_t k = 0;
  for (const auto& text : docs) {
    if (text.empty()) continue;
    auto ids = tok->encode(text);
    ids.push_back(eos);
    auto& dst = k % 10 == 9 ? want_val : want_train;  // val_fraction 0.1: every 10th document
    dst.insert(dst.end(), ids.begin(), ids.end());
    ++k;
  }
  EXPECT_EQ(read_all(d / "w1", "train"), want_train);
  EXPECT_EQ(read_all(d / "w1", "val"), want_val);
  EXPECT_EQ(one.docs("train") + one.docs("val"), k);

  // Same inputs and options: nothing is rewritten.
  const auto written = fsys::last_write_time(d / "w1" / "index.json");
  prepare_data(prepare_config({jsonl, txt}, d / "w1", 2));
  EXPECT_EQ(fsys::last_write_time(d / "w1" / "index.json"), written) << "an up-to-date dataset is left as it is";
}

TEST(PrepareData, BadInputNamesFileAndLineAndKeepsThePreviousDataset) {
  ScratchDir d;
  std::string jsonl, txt;
  write_inputs(d, jsonl, txt);
  prepare_data(prepare_config({jsonl}, d / "out", 2));
  const std::string index_before = testing::read_text(d / "out" / "index.json");

  const std::string bad = (d / "bad.jsonl").string();
  testing::write_text(bad, "{\"text\": \"fine\"}\n{\"text\": \"also fine\"}\n{\"text\": \"broken\n");
  std::string e = error_of([&] { prepare_data(prepare_config({bad}, d / "out", 2)); });
  EXPECT_HAS(e, bad + ":3");
  EXPECT_HAS(e, "not valid JSON");
  testing::write_text(bad, "{\"text\": \"fine\"}\n{\"body\": \"x\"}\n");
  e = error_of([&] { prepare_data(prepare_config({bad}, d / "out", 2)); });
  EXPECT_HAS(e, bad + ":2");
  EXPECT_HAS(e, "prepare.text_field");
  testing::write_text(bad, "{\"text\": \"fine\"}\n{\"text\": \"caf\\u00e9\"}\n{\"text\": 7}\n");
  e = error_of([&] { prepare_data(prepare_config({bad}, d / "out", 2)); });
  EXPECT_HAS(e, bad + ":3");
  const std::string latin1 = (d / "latin1.txt").string();
  testing::write_text(latin1, "ok\n\ncaf\xe9 au lait\n");
  e = error_of([&] { prepare_data(prepare_config({latin1}, d / "out", 1)); });
  EXPECT_HAS(e, latin1 + ":3");
  EXPECT_HAS(e, "UTF-8");
  e = error_of([&] { prepare_data(prepare_config({(d / "missing.jsonl").string()}, d / "out", 1)); });
  EXPECT_HAS(e, "missing.jsonl: input file not found");

  EXPECT_EQ(testing::read_text(d / "out" / "index.json"), index_before);
  EXPECT_EQ(read_index(d / "out").tokens("train"), prepare_data(prepare_config({jsonl}, d / "out", 1)).tokens("train"));
}

TEST(TokenShards, DamageIsNamedWithTheFile) {
  ScratchDir d;
  std::string jsonl, txt;
  write_inputs(d, jsonl, txt);
  const DatasetIndex index = prepare_data(prepare_config({jsonl}, d / "out", 2));
  const ShardInfo info = index.splits.at("train")[1];
  const fsys::path shard = d / "out" / info.file;
  const std::string good = testing::read_text(shard);
  auto open_error = [&](const std::string& bytes) {
    testing::write_text(shard, bytes);
    return error_of([&] { TokenStream(d / "out", read_index(d / "out"), "train"); });
  };
  EXPECT_EQ(open_error(good), "");
  // The checksum is XXH3-64 of the token bytes, as Debian's xxhsum computes it, and index.json names it.
  const auto xxh =
      testing::run_command(str_cat("tail -c +", kShardHeaderBytes + 1, " ", shard.string(), " | xxhsum -H3"));
  ASSERT_EQ(xxh.exit_code, 0) << xxh.output;
  EXPECT_HAS(xxh.output, checksum_hex(info.checksum));
  EXPECT_HAS(testing::read_text(d / "out" / "index.json"), "\"checksum\": \"xxh3-64\"");
  // A version-1 shard (an older build: the legacy checksum in the header and in index.json) is still read.
  {
    std::string v1 = good;
    const uint32_t one = 1;
    const uint64_t legacy = legacy_checksum(good.data() + kShardHeaderBytes, good.size() - kShardHeaderBytes);
    std::memcpy(v1.data() + 8, &one, 4);
    std::memcpy(v1.data() + 32, &legacy, 8);
    ShardInfo old_info = info;
    old_info.checksum = legacy;
    testing::write_text(shard, v1);
    EXPECT_EQ(error_of([&] { Shard(shard, old_info, index.token_bytes, index.vocab_size); }), "");
    std::memcpy(v1.data() + 8, &kShardVersion, 4);  // version 2 with a legacy checksum: a mismatch
    testing::write_text(shard, v1);
    EXPECT_HAS(error_of([&] { Shard(shard, old_info, index.token_bytes, index.vocab_size); }), "checksum mismatch");
    testing::write_text(shard, good);
  }

  std::string flipped = good;
  flipped[kShardHeaderBytes + 10] ^= 0x01;
  std::string e = open_error(flipped);
  EXPECT_HAS(e, shard.string());
  EXPECT_HAS(e, "checksum mismatch");
  e = open_error(good.substr(0, good.size() - 2));
  EXPECT_HAS(e, shard.string());
  EXPECT_HAS(e, "bytes");
  std::string magic = good;
  magic[0] = 'X';
  EXPECT_HAS(open_error(magic), "bad magic");
  EXPECT_HAS(open_error(good.substr(0, 10)), "shorter than the header");
  testing::write_text(shard, good);

  // index.json: a wrong count, a missing key, broken JSON.
  const std::string idx = testing::read_text(d / "out" / "index.json");
  std::string changed = idx;
  const std::string count = str_cat("\"tokens\": ", info.tokens);
  changed.replace(changed.find(count), count.size(), str_cat("\"tokens\": ", info.tokens + 1));
  testing::write_text(d / "out" / "index.json", changed);
  e = error_of([&] { TokenStream(d / "out", read_index(d / "out"), "train"); });
  EXPECT_HAS(e, shard.string());
  EXPECT_HAS(e, "index.json says");
  std::string no_vocab = idx;
  no_vocab.replace(no_vocab.find("\"vocab_size\""), 12, "\"vocab\"");
  testing::write_text(d / "out" / "index.json", no_vocab);
  EXPECT_HAS(error_of([&] { read_index(d / "out"); }), "missing key 'vocab_size'");
  testing::write_text(d / "out" / "index.json", idx.substr(0, idx.size() / 2));
  e = error_of([&] { read_index(d / "out"); });
  EXPECT_HAS(e, (d / "out" / "index.json").string());
  EXPECT_HAS(e, "not valid JSON");
}

}  // namespace
}  // namespace draftalign::data

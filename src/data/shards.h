// shards.h: tokenized corpora on disk, as written by `draftalign prepare-data` and read by pretraining.
//
// A shard is one file of token ids, documents back to back, each ending with the end-of-document token:
//   offset  0  magic    "DATOKENS"                       8 bytes
//          8  version  2 (1: an older build's shard)     u32
//         12  dtype    bytes per token: 2 (u16) or 4     u32
//         16  tokens   number of tokens                  u64
//         24  docs     number of documents               u64
//         32  checksum XXH3-64 of the token bytes        u64  (version 1: common/checksum.h's legacy one)
//         40  reserved zero                              24 bytes
//         64  tokens   little-endian ids
// A dataset directory holds the shards of each split ("train", "val") and index.json, which lists them with their
// token counts and checksums and records the tokenizer, vocabulary size and end-of-document id they were made with.
// Readers check everything (magic, version, size, checksum, ids < vocab) and name the file and the field on a mismatch.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace draftalign::data {

namespace stdfs = std::filesystem;

inline constexpr char kShardMagic[8] = {'D', 'A', 'T', 'O', 'K', 'E', 'N', 'S'};
inline constexpr uint32_t kShardVersion = 2;  // 2: XXH3-64 checksums (common/checksum.h); 1 is still read
inline constexpr size_t kShardHeaderBytes = 64;
inline constexpr char kIndexFile[] = "index.json";        // a prepare-data dataset's index
inline constexpr char kManifestFile[] = "manifest.json";  // a finished generate (or data import) directory's manifest

struct ShardInfo {
  std::string file;  // relative to the dataset directory
  int64_t tokens = 0;
  int64_t docs = 0;
  uint64_t checksum = 0;
};

struct DatasetIndex {
  int64_t vocab_size = 0;
  int64_t eos_id = -1;            // ends every document
  int64_t token_bytes = 2;        // 2 or 4
  std::string tokenizer;          // the tokenizer file it was made with
  std::string source;             // fingerprint of the inputs and options (prepare-data skips an up-to-date dataset)
  int64_t skipped_empty = 0;      // input documents with no text, left out (absent from older index.json files: 0)
  std::map<std::string, std::vector<ShardInfo>> splits;  // "train", "val" -> shards in order
  int64_t tokens(const std::string& split) const;
  int64_t docs(const std::string& split) const;
};

// Writes one split's shards into `dir`, cutting a new shard every `shard_tokens` tokens at a document boundary.
class ShardWriter {
 public:
  ShardWriter(stdfs::path dir, std::string split, int64_t token_bytes, int64_t shard_tokens);
  ~ShardWriter();
  void add_document(const std::vector<int64_t>& ids);  // ids must already end with the end-of-document token
  std::vector<ShardInfo> finish();                      // closes the last shard

 private:
  void flush();
  stdfs::path dir_;
  std::string split_;
  int64_t token_bytes_, shard_tokens_;
  std::vector<uint8_t> buffer_;  // the current shard's token bytes
  int64_t docs_ = 0;
  std::vector<ShardInfo> done_;
};

void write_index(const stdfs::path& dir, const DatasetIndex& index);
// Reads and checks index.json; errors name the file and the key.
DatasetIndex read_index(const stdfs::path& dir);

// The shard-*.safetensors files of a `draftalign generate` output directory (trainers/generate.h), sorted; an Error
// when there is none or `dir` is not a directory.
std::vector<stdfs::path> shard_files(const stdfs::path& dir);

// manifest.json of a finished `draftalign generate` (or `data import`) directory: every shard with its counts and
// checksum. read_generate_manifest checks its form (format, version, the checksum algorithm, shard names
// shard-NNNNN.safetensors, non-negative counts that add up to the totals); errors name the file and the key.
struct ManifestShard {
  std::string file;  // a name in the directory
  int64_t records = 0, tokens = 0, response_tokens = 0;
  std::string checksum;
};
struct GenerateManifest {
  std::string plan, checksum_algorithm;
  std::vector<ManifestShard> shards;
  int64_t records = 0, tokens = 0, response_tokens = 0;
};
GenerateManifest read_generate_manifest(const stdfs::path& dir);
// "shard-00003": the name of a generate directory's shard k (+ ".safetensors", ".preview.jsonl").
std::string shard_name(int64_t k);

// A shard mapped read-only and checked against its header and index entry.
class Shard {
 public:
  Shard(const stdfs::path& path, const ShardInfo& expected, int64_t token_bytes, int64_t vocab_size);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  int64_t size() const { return tokens_; }
  int64_t at(int64_t i) const {
    return token_bytes_ == 2 ? static_cast<const uint16_t*>(data_)[i] : static_cast<const uint32_t*>(data_)[i];
  }

 private:
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const void* data_ = nullptr;
  int64_t tokens_ = 0, token_bytes_ = 2;
};

// One split as a single token stream: the shards in order, concatenated.
class TokenStream {
 public:
  TokenStream(const stdfs::path& dir, const DatasetIndex& index, const std::string& split);
  int64_t size() const { return total_; }
  // Copies tokens [start, start + n) into out (int64).
  void read(int64_t start, int64_t n, int64_t* out) const;

 private:
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<int64_t> starts_;  // first stream position of each shard
  int64_t total_ = 0;
};

}  // namespace draftalign::data

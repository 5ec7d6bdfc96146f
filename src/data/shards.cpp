#include "data/shards.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/checksum.h"
#include "common/error.h"
#include "common/fs.h"

namespace draftalign::data {
namespace {

using json = nlohmann::json;

void put_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void put_u64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t get_u32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
uint64_t get_u64(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }

}  // namespace

int64_t DatasetIndex::tokens(const std::string& split) const {
  int64_t n = 0;
  if (auto it = splits.find(split); it != splits.end())
    for (const auto& s : it->second) n += s.tokens;
  return n;
}

int64_t DatasetIndex::docs(const std::string& split) const {
  int64_t n = 0;
  if (auto it = splits.find(split); it != splits.end())
    for (const auto& s : it->second) n += s.docs;
  return n;
}

// --- writing ----------------------------------------------------------------------------------------------------------

ShardWriter::ShardWriter(stdfs::path dir, std::string split, int64_t token_bytes, int64_t shard_tokens)
    : dir_(std::move(dir)), split_(std::move(split)), token_bytes_(token_bytes), shard_tokens_(shard_tokens) {
  DA_CHECK(token_bytes == 2 || token_bytes == 4, "token width must be 2 or 4 bytes, not ", token_bytes);
}

ShardWriter::~ShardWriter() = default;

void ShardWriter::add_document(const std::vector<int64_t>& ids) {
  const int64_t limit = token_bytes_ == 2 ? 0xFFFF : 0xFFFFFFFFLL;
  for (int64_t id : ids) {
    DA_CHECK(id >= 0 && id <= limit, "token id ", id, " does not fit in ", token_bytes_, " bytes");
    if (token_bytes_ == 2) {
      const uint16_t v = static_cast<uint16_t>(id);
      buffer_.insert(buffer_.end(), reinterpret_cast<const uint8_t*>(&v), reinterpret_cast<const uint8_t*>(&v) + 2);
    } else {
      const uint32_t v = static_cast<uint32_t>(id);
      buffer_.insert(buffer_.end(), reinterpret_cast<const uint8_t*>(&v), reinterpret_cast<const uint8_t*>(&v) + 4);
    }
  }
  ++docs_;
  if (static_cast<int64_t>(buffer_.size()) / token_bytes_ >= shard_tokens_) flush();
}

void ShardWriter::flush() {
  if (docs_ == 0) return;
  ShardInfo info;
  char name[64];
  std::snprintf(name, sizeof name, "%s-%05zu.bin", split_.c_str(), done_.size());
  info.file = name;
  info.tokens = static_cast<int64_t>(buffer_.size()) / token_bytes_;
  info.docs = docs_;
  info.checksum = checksum(buffer_.data(), buffer_.size());
  uint8_t header[kShardHeaderBytes] = {};
  std::memcpy(header, kShardMagic, 8);
  put_u32(header + 8, kShardVersion);
  put_u32(header + 12, static_cast<uint32_t>(token_bytes_));
  put_u64(header + 16, static_cast<uint64_t>(info.tokens));
  put_u64(header + 24, static_cast<uint64_t>(info.docs));
  put_u64(header + 32, info.checksum);
  fs::AtomicWriter w(dir_ / info.file);
  w.write(header, sizeof header);
  w.write(buffer_.data(), buffer_.size());
  w.commit();
  done_.push_back(info);
  buffer_.clear();
  docs_ = 0;
}

std::vector<ShardInfo> ShardWriter::finish() {
  flush();
  return done_;
}

void write_index(const stdfs::path& dir, const DatasetIndex& index) {
  json j;
  j["format"] = "draftalign-tokens";
  j["version"] = kShardVersion;
  j["checksum"] = kChecksumAlgorithm;
  j["vocab_size"] = index.vocab_size;
  j["eos_id"] = index.eos_id;
  j["token_bytes"] = index.token_bytes;
  j["tokenizer"] = index.tokenizer;
  j["source"] = index.source;
  j["skipped_empty"] = index.skipped_empty;
  for (const auto& [split, shards] : index.splits) {
    json list = json::array();
    for (const auto& s : shards)
      list.push_back({{"file", s.file}, {"tokens", s.tokens}, {"docs", s.docs}, {"checksum", checksum_hex(s.checksum)}});
    j["splits"][split] = {{"tokens", index.tokens(split)}, {"docs", index.docs(split)}, {"shards", list}};
  }
  fs::write_file_atomic(dir / kIndexFile, j.dump(2) + "\n");
}

DatasetIndex read_index(const stdfs::path& dir) {
  const stdfs::path path = dir / kIndexFile;
  DA_CHECK(stdfs::exists(path), path.string(), ": not found; is ", dir.string(),
           " a dataset written by `draftalign prepare-data`?");
  json j;
  try {
    j = json::parse(fs::read_file(path));
  } catch (const json::exception& e) {
    throw Error(str_cat(path.string(), ": not valid JSON (", e.what(), ")"));
  }
  auto field = [&](const json& obj, const char* key, const std::string& at) -> const json& {
    DA_CHECK(obj.is_object() && obj.contains(key), path.string(), ": missing key '", at, key, "'");
    return obj[key];
  };
  auto integer = [&](const json& obj, const char* key, const std::string& at, int64_t lo) {
    const json& v = field(obj, key, at);
    DA_CHECK(v.is_number_integer() && v.get<int64_t>() >= lo, path.string(), ": '", at, key,
             "' must be an integer >= ", lo);
    return v.get<int64_t>();
  };
  DA_CHECK(j.is_object() && j.contains("format") && j["format"] == "draftalign-tokens", path.string(),
           ": 'format' is not \"draftalign-tokens\"");
  const int64_t version = integer(j, "version", "", 0);
  DA_CHECK(version == 1 || version == kShardVersion, path.string(), ": version ", version,
           " is not supported (this build reads versions 1 and ", kShardVersion, ")");
  DatasetIndex index;
  index.vocab_size = integer(j, "vocab_size", "", 1);
  index.eos_id = integer(j, "eos_id", "", 0);
  index.token_bytes = integer(j, "token_bytes", "", 2);
  DA_CHECK(index.token_bytes == 2 || index.token_bytes == 4, path.string(), ": 'token_bytes' must be 2 or 4");
  DA_CHECK(index.eos_id < index.vocab_size, path.string(), ": 'eos_id' is outside the vocabulary");
  if (j.contains("tokenizer") && j["tokenizer"].is_string()) index.tokenizer = j["tokenizer"];
  if (j.contains("source") && j["source"].is_string()) index.source = j["source"];
  if (j.contains("skipped_empty")) index.skipped_empty = integer(j, "skipped_empty", "", 0);
  const json& splits = field(j, "splits", "");
  DA_CHECK(splits.is_object(), path.string(), ": 'splits' must be an object");
  for (const auto& [name, split] : splits.items()) {
    const std::string at = "splits." + name + ".";
    const json& shards = field(split, "shards", at);
    DA_CHECK(shards.is_array(), path.string(), ": '", at, "shards' must be a list");
    auto& out = index.splits[name];
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string sat = str_cat(at, "shards[", i, "].");
      ShardInfo s;
      const json& file = field(shards[i], "file", sat);
      DA_CHECK(file.is_string() && file.get<std::string>().find('/') == std::string::npos && file != "" &&
                   file != "." && file != "..",
               path.string(), ": '", sat, "file' must be a file name in the dataset directory");
      s.file = file;
      s.tokens = integer(shards[i], "tokens", sat, 1);
      s.docs = integer(shards[i], "docs", sat, 1);
      const json& sum = field(shards[i], "checksum", sat);
      DA_CHECK(sum.is_string() && sum.get<std::string>().size() == 16 &&
                   sum.get<std::string>().find_first_not_of("0123456789abcdefABCDEF") == std::string::npos,
               path.string(), ": '", sat, "checksum' must be 16 hex digits");
      s.checksum = std::stoull(sum.get<std::string>(), nullptr, 16);
      out.push_back(s);
    }
  }
  return index;
}

// --- reading ----------------------------------------------------------------------------------------------------------

Shard::Shard(const stdfs::path& path, const ShardInfo& expected, int64_t token_bytes, int64_t vocab_size)
    : token_bytes_(token_bytes) {
  const std::string name = path.string();
  const int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC);
  DA_CHECK(fd >= 0, name, ": cannot open (", std::strerror(errno), ")");
  struct stat st {};
  ::fstat(fd, &st);
  map_bytes_ = static_cast<size_t>(st.st_size);
  if (map_bytes_ >= kShardHeaderBytes) map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  auto fail = [&](const std::string& what) {
    if (map_ != nullptr && map_ != MAP_FAILED) ::munmap(map_, map_bytes_);
    map_ = nullptr;
    throw Error(str_cat(name, ": corrupt token shard: ", what));
  };
  if (map_bytes_ < kShardHeaderBytes) fail(str_cat("file is ", map_bytes_, " bytes, shorter than the header"));
  if (map_ == MAP_FAILED) fail("cannot map it");
  const auto* h = static_cast<const uint8_t*>(map_);
  if (std::memcmp(h, kShardMagic, 8) != 0) fail("bad magic at offset 0 (expected \"DATOKENS\")");
  const uint32_t version = get_u32(h + 8);
  if (version != 1 && version != kShardVersion) fail(str_cat("version ", version, " at offset 8 is not supported"));
  if (get_u32(h + 12) != static_cast<uint32_t>(token_bytes))
    fail(str_cat("token width ", get_u32(h + 12), " at offset 12, index.json says ", token_bytes));
  tokens_ = static_cast<int64_t>(get_u64(h + 16));
  if (tokens_ != expected.tokens)
    fail(str_cat("token count ", tokens_, " at offset 16, index.json says ", expected.tokens));
  if (static_cast<int64_t>(get_u64(h + 24)) != expected.docs)
    fail(str_cat("document count ", get_u64(h + 24), " at offset 24, index.json says ", expected.docs));
  // Compared by division: tokens * width can wrap around for a count no real shard has.
  if (tokens_ < 0 || static_cast<uint64_t>(tokens_) != (map_bytes_ - kShardHeaderBytes) / token_bytes ||
      (map_bytes_ - kShardHeaderBytes) % token_bytes != 0)
    fail(str_cat("file is ", map_bytes_, " bytes, the header's ", get_u64(h + 16), " tokens of ", token_bytes,
                 " bytes need ", kShardHeaderBytes, " + tokens x ", token_bytes));
  const size_t want = map_bytes_;
  data_ = h + kShardHeaderBytes;
  const uint64_t sum =
      version == 1 ? legacy_checksum(data_, want - kShardHeaderBytes) : checksum(data_, want - kShardHeaderBytes);
  if (sum != get_u64(h + 32) || sum != expected.checksum)
    fail(str_cat("checksum mismatch (contents ", checksum_hex(sum), ", header ", checksum_hex(get_u64(h + 32)),
                 ", index.json ", checksum_hex(expected.checksum), ")"));
  for (int64_t i = 0; i < tokens_; ++i)
    if (at(i) >= vocab_size) fail(str_cat("token ", i, " is id ", at(i), ", outside the vocabulary of ", vocab_size));
}

Shard::~Shard() {
  if (map_ != nullptr && map_ != MAP_FAILED) ::munmap(map_, map_bytes_);
}

TokenStream::TokenStream(const stdfs::path& dir, const DatasetIndex& index, const std::string& split) {
  auto it = index.splits.find(split);
  DA_CHECK(it != index.splits.end() && !it->second.empty(), (dir / kIndexFile).string(), ": has no '", split,
           "' split");
  for (const auto& info : it->second) {
    starts_.push_back(total_);
    shards_.push_back(std::make_unique<Shard>(dir / info.file, info, index.token_bytes, index.vocab_size));
    total_ += info.tokens;
  }
}

void TokenStream::read(int64_t start, int64_t n, int64_t* out) const {
  DA_CHECK(start >= 0 && start + n <= total_, "token range [", start, ", ", start + n, ") outside the stream of ",
           total_);
  size_t s = std::upper_bound(starts_.begin(), starts_.end(), start) - starts_.begin() - 1;
  for (int64_t i = 0; i < n; ++s) {
    const Shard& sh = *shards_[s];
    for (int64_t j = start + i - starts_[s]; j < sh.size() && i < n; ++j, ++i) out[i] = sh.at(j);
  }
}

std::vector<stdfs::path> shard_files(const stdfs::path& dir) {
  DA_CHECK(stdfs::is_directory(dir), dir.string(), ": not a directory (data.dir or generate.output_dir)");
  std::vector<stdfs::path> files;
  for (const auto& e : stdfs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("shard-", 0) == 0 && e.path().extension() == ".safetensors") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  DA_CHECK(!files.empty(), dir.string(), ": no shard-*.safetensors (is it a `draftalign generate` output directory?)");
  return files;
}

std::string shard_name(int64_t k) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "shard-%05lld", static_cast<long long>(k));
  return buf;
}

GenerateManifest read_generate_manifest(const stdfs::path& dir) {
  const stdfs::path path = dir / kManifestFile;
  const std::string file = path.string();
  DA_CHECK(stdfs::exists(path), file,
           " is missing: the generate run did not finish (run `draftalign generate` again to finish it)");
  const json j = json::parse(fs::read_file(path), nullptr, /*allow_exceptions=*/false);
  DA_CHECK(!j.is_discarded(), file, ": not valid JSON");
  DA_CHECK(j.is_object() && j.contains("format") && j["format"] == "draftalign-generate" && j.contains("version") &&
               j["version"] == 1,
           file, ": not a draftalign generate manifest (format/version)");
  auto text = [&](const json& o, const char* key, const std::string& where) {
    DA_CHECK(o.contains(key) && o[key].is_string(), file, ": ", where, "'", key, "' is not a string");
    return o[key].get<std::string>();
  };
  auto count = [&](const json& o, const char* key, const std::string& where) {
    DA_CHECK(o.contains(key) && o[key].is_number_integer() && o[key].get<int64_t>() >= 0, file, ": ", where, "'", key,
             "' is not a non-negative integer");
    return o[key].get<int64_t>();
  };
  GenerateManifest m;
  m.plan = text(j, "plan", "");
  m.checksum_algorithm = text(j, "checksum", "");
  DA_CHECK(m.checksum_algorithm == kChecksumAlgorithm, file, ": 'checksum' is '", m.checksum_algorithm, "', not ",
           kChecksumAlgorithm);
  m.records = count(j, "records", ""), m.tokens = count(j, "tokens", "");
  m.response_tokens = count(j, "response_tokens", "");
  DA_CHECK(j.contains("shards") && j["shards"].is_array() && !j["shards"].empty(), file,
           ": 'shards' is not a list of shards");
  int64_t records = 0, tokens = 0, response_tokens = 0;
  for (size_t i = 0; i < j["shards"].size(); ++i) {
    const json& s = j["shards"][i];
    const std::string where = str_cat("shards[", i, "]: ");
    DA_CHECK(s.is_object(), file, ": ", where, "not an object");
    ManifestShard e;
    e.file = text(s, "file", where);
    DA_CHECK(e.file == shard_name(static_cast<int64_t>(i)) + ".safetensors", file, ": ", where, "'file' is '", e.file,
             "', not shard ", i, "'s name");
    e.records = count(s, "records", where), e.tokens = count(s, "tokens", where);
    e.response_tokens = count(s, "response_tokens", where);
    e.checksum = text(s, "checksum", where);
    DA_CHECK(!__builtin_add_overflow(records, e.records, &records) &&
                 !__builtin_add_overflow(tokens, e.tokens, &tokens) &&
                 !__builtin_add_overflow(response_tokens, e.response_tokens, &response_tokens),
             file, ": ", where, "counts overflow");
    m.shards.push_back(std::move(e));
  }
  DA_CHECK(records == m.records && tokens == m.tokens && response_tokens == m.response_tokens, file,
           ": the shards' counts do not add up to 'records', 'tokens' and 'response_tokens'");
  return m;
}

}  // namespace draftalign::data

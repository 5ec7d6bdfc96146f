// A tokenized dataset (prepare-data's output, data.dir): index.json and a token shard, read as pretraining reads them
// (read_index, then the train split as one TokenStream). Input: u32 little-endian n | n bytes of index.json | the
// bytes of the file every shard entry names.
#include <cstring>

#include "data/shards.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace draftalign;
  if (size < 4) return 0;
  uint32_t n = 0;
  std::memcpy(&n, data, 4);
  n = static_cast<uint32_t>(std::min<size_t>(n, size - 4));
  const std::string_view index = fuzz::text(data + 4, n), shard = fuzz::text(data + 4 + n, size - 4 - n);
  const auto dir = fuzz::scratch() / "dataset";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  fuzz::write_input(dir / "index.json", index);
  fuzz::expect_only_errors([&] {
    const data::DatasetIndex idx = data::read_index(dir);
    for (const auto& [split, shards] : idx.splits)
      for (const data::ShardInfo& s : shards) fuzz::write_input(dir / s.file, shard);
    if (!idx.splits.count("train")) return;
    const data::TokenStream stream(dir, idx, "train");
    std::vector<int64_t> out(static_cast<size_t>(std::min<int64_t>(stream.size(), 4096)));
    stream.read(0, static_cast<int64_t>(out.size()), out.data());
    for (int64_t id : out)
      if (id < 0 || id >= idx.vocab_size) __builtin_trap();  // the reader promises ids inside the vocabulary
  });
  return 0;
}

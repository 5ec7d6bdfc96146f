// manifest.json of a finished generate directory (distill checks its shards against it).
#include "data/shards.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace draftalign;
  const auto dir = fuzz::scratch() / "generated";
  std::filesystem::create_directories(dir);
  fuzz::write_input(dir / "manifest.json", fuzz::text(data, size));
  fuzz::expect_only_errors([&] { data::read_generate_manifest(dir); });
  return 0;
}

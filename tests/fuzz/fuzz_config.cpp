// A YAML run config (--config FILE): load, validate, expand references, then print it back as the resolved YAML.
#include "config/loader.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace draftalign;
  const auto file = fuzz::input_file("config.yaml", fuzz::text(data, size));
  fuzz::expect_only_errors([&] {
    config::LoadedConfig c = config::load_config(file.string(), {});
    config::to_yaml(c.cfg, "fuzz");
  });
  return 0;
}

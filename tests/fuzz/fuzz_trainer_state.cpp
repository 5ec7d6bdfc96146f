// trainer_state.json, a checkpoint's counters and checksums (pretrain/distill resume from it).
#include "fuzz/fuzz_util.h"
#include "train/trainer_state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace draftalign;
  const auto file = fuzz::input_file("trainer_state.json", fuzz::text(data, size));
  fuzz::expect_only_errors([&] {
    const train::TrainerStateFile s = train::read_trainer_state(file, {"model.safetensors", "optimizer.pt", "rng.pt"});
    if (s.state.step < 0 || s.checksums.size() != 3) __builtin_trap();
  });
  return 0;
}

// layout.h: the names inside a training run's directory, defined once. pretrain and distill write them (through
// train/checkpoint.h and trainers/train_loop.h); the config's defaults, the pipeline and the report read them.
//   <run>/final/                                  the drafter the run ends with (a Hugging Face directory)
//   <run>/checkpoints/step-NNNNNNN/trainer_state.json, ...   one resumable checkpoint per saved step
// Torch-free: config/config.h includes it.
#pragma once

namespace draftalign::train {

inline constexpr const char kFinalDir[] = "final";
inline constexpr const char kCheckpointsDir[] = "checkpoints";
inline constexpr const char kStateFile[] = "trainer_state.json";

}  // namespace draftalign::train

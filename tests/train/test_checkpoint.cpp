// Which checkpoint a run resumes from (train/checkpoint.h, resume_checkpoint): train.resume is typed (auto, none, or a
// checkpoint directory), and each choice picks what it says among checkpoint directories on disk.
#include <gtest/gtest.h>

#include "test_util.h"
#include "train/checkpoint.h"

namespace draftalign::train {
namespace {

namespace fsys = std::filesystem;
using testing::ScratchDir;

// A checkpoint directory as the loader finds it: step-N with its trainer_state.json (the rest is not read here).
void fake_checkpoint(const fsys::path& out, int64_t step) {
  const fsys::path dir = checkpoint_dir(out, step);
  fsys::create_directories(dir);
  testing::write_text(dir / kStateFile, "{}");
}

TEST(Checkpoint, ResumeTakesTheLatestNothingOrTheNamedDirectory) {
  ScratchDir d;
  const fsys::path out = d / "run";
  config::Resume resume;  // auto
  EXPECT_EQ(resume_checkpoint(out, resume), std::nullopt) << "no checkpoint yet";
  fake_checkpoint(out, 10);
  fake_checkpoint(out, 30);
  fsys::create_directories(checkpoint_dir(out, 40));  // unfinished: no trainer_state.json
  EXPECT_EQ(resume_checkpoint(out, resume), checkpoint_dir(out, 30));
  resume.choice = config::ResumeFrom::kNothing;
  EXPECT_EQ(resume_checkpoint(out, resume), std::nullopt) << "none starts over whatever is there";
  resume = {config::ResumeFrom::kCheckpoint, checkpoint_dir(out, 10).string()};
  EXPECT_EQ(resume_checkpoint(out, resume), checkpoint_dir(out, 10));
  resume.path = checkpoint_dir(out, 40).string();
  EXPECT_HAS(testing::error_of([&] { resume_checkpoint(out, resume); }),
             "train.resume: " + resume.path + " is not a checkpoint directory (no trainer_state.json)");
}

}  // namespace
}  // namespace draftalign::train

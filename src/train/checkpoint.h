// checkpoint.h: the checkpoint format and exact resume.
//
// A checkpoint is a directory <output_dir>/checkpoints/step-NNNNNNN/:
//   config.json, model.safetensors (fp32 master weights), tokenizer files   a Hugging Face directory
//   optimizer.pt                                                             AdamW state (tensors, torch::save)
//   rng.pt                                                                   every rank's generator state
//   trainer_state.json                                                       step, data cursor, counters, checksums
//                                      (XXH3-64, named in the file: `xxhsum -H3 model.safetensors` prints the same)
// It is built beside its final name and renamed into place, so a directory with that name is complete; resume checks
// each file against the checksums in trainer_state.json and names the file that does not match.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "config/config.h"
#include "model/llama.h"
#include "train/dist.h"
#include "train/layout.h"
#include "train/optim.h"
#include "train/trainer_state.h"

namespace draftalign::train {

namespace stdfs = std::filesystem;

stdfs::path checkpoint_dir(const stdfs::path& output_dir, int64_t step);
// The step of a checkpoint directory named as checkpoint_dir names them ("step-0000500" -> 500), or -1.
int64_t checkpoint_step(const stdfs::path& dir);
// The newest complete checkpoint under <output_dir>/checkpoints, if any.
std::optional<stdfs::path> latest_checkpoint(const stdfs::path& output_dir);
// The checkpoint train.resume asks for: auto = latest_checkpoint, none = nothing, else that directory (which must be
// a checkpoint).
std::optional<stdfs::path> resume_checkpoint(const stdfs::path& output_dir, const config::Resume& resume);

// Removes the temporary directories ("step-N.tmp-<pid>") of checkpoints whose writing was cut short (a run stopped
// at once by a second signal, or killed). Complete checkpoints are left as they are.
void remove_unfinished_checkpoints(const stdfs::path& output_dir);

// The model a checkpoint holds, as its own directory format writes and reads it (a drafter's HF directory, an EAGLE-3
// head's): `save` writes config.json and model.safetensors (fp32) into a directory that does not exist yet; `load`
// copies the weights of such a directory into the model being trained, first checking that its config is the one
// configured (errors name the file).
struct ModelIO {
  std::function<void(const stdfs::path& dir)> save;
  std::function<void(const stdfs::path& dir)> load;
};
// A Llama drafter's: save_llama with the tokenizer files of `tokenizer_dir`; the architecture checked on load.
ModelIO llama_io(model::Llama& model, const stdfs::path& tokenizer_dir);

// Writes a checkpoint (rank 0 writes; every rank must call it: the generator states are gathered) and deletes all
// but the newest `keep_last`.
void save_checkpoint(const stdfs::path& output_dir, const ModelIO& model, const AdamW& opt, const TrainerState& state,
                     Dist& dist, int64_t keep_last);

// Loads a checkpoint into the model and `opt`, restores this rank's generator and returns the trainer state. Errors
// name the file.
TrainerState load_checkpoint(const stdfs::path& dir, const ModelIO& model, AdamW& opt, Dist& dist);

// Keeps the records of a metrics JSONL file whose "step" is at most `step` (a resumed run redoes the later ones).
void truncate_metrics(const stdfs::path& file, int64_t step);

}  // namespace draftalign::train

#include "trainers/export.h"

#include "common/error.h"
#include "common/log.h"
#include "io/hf_checkpoint.h"
#include "model/llama.h"
#include "train/runtime.h"

namespace draftalign::train {

namespace stdfs = std::filesystem;

int export_drafter(const config::Config& cfg) {
  const config::ExportSection& e = cfg.export_;
  const stdfs::path src = e.checkpoint;
  DA_CHECK(stdfs::is_directory(src), "export.checkpoint: ", src.string(), " is not a directory (a drafter checkpoint: ",
           "config.json + model.safetensors, e.g. <output_dir>/final or <output_dir>/checkpoints/step-NNNNNNN)");
  auto model = model::load_llama(src, torch::kCPU, torch::kFloat32);
  // The tokenizer files travel with the weights: the checkpoint's own, else the target's.
  const bool own = stdfs::exists(src / "tokenizer.json") || stdfs::exists(src / "tokenizer.model");
  const stdfs::path tokenizer_dir = own ? src : stdfs::path(cfg.target.dir);
  const torch::ScalarType dtype = pick_dtype(e.dtype, torch::kCPU);  // fp32, bf16 or fp16 (the schema allows no auto)
  model::save_llama(*model, e.output_dir, dtype, tokenizer_dir);
  io::HfCheckpoint::open(e.output_dir).check_llama();
  log::info("export: ", src.string(), " (", model->num_params(), " parameters) -> ", e.output_dir, " (", e.dtype,
            ", tokenizer from ", tokenizer_dir.string(), ")");
  return 0;
}

}  // namespace draftalign::train

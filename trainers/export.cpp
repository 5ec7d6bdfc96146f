#include "trainers/export.h"

#include "common/error.h"
#include "common/log.h"
#include "io/hf_checkpoint.h"
#include "model/llama.h"

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
  const torch::ScalarType dtype =
      e.dtype == "bf16" ? torch::kBFloat16 : e.dtype == "fp16" ? torch::kFloat16 : torch::kFloat32;
  model::save_llama(*model, e.output_dir, dtype, tokenizer_dir);
  io::HfCheckpoint::open(e.output_dir).check_llama();
  log::info("export: ", src.string(), " (", model->num_params(), " parameters) -> ", e.output_dir, " (", e.dtype,
            ", tokenizer from ", tokenizer_dir.string(), ")");
  return 0;
}

}  // namespace draftalign::train

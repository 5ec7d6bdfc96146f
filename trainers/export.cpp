#include "trainers/export.h"

#include "common/error.h"
#include "common/log.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "model/eagle3.h"
#include "model/llama.h"
#include "train/runtime.h"

namespace draftalign::train {

namespace stdfs = std::filesystem;

namespace {

// An EAGLE-3 head: it holds no embedding of its own (it embeds with the target's, as vLLM and SGLang do), so it is
// loaded against the target it was trained for (target.dir), checked, and written in the same layout in export.dtype,
// with the target's tokenizer files beside it.
int export_head(const config::Config& cfg) {
  const config::ExportSection& e = cfg.export_;
  const stdfs::path src = e.checkpoint, target = cfg.target.dir;
  DA_CHECK(stdfs::is_regular_file(target / "config.json"), "export: ", src.string(), " is an EAGLE-3 head; it is ",
           "loaded against its target, and target.dir = ", target.string(), " has no config.json (set target.dir to "
           "the model the head was trained on)");
  auto llama = model::load_llama(target, torch::kCPU, torch::kFloat32);
  auto head = model::load_eagle3(src, llama->named_parameters()["model.embed_tokens.weight"], torch::kCPU,
                                 torch::kFloat32);
  const torch::ScalarType dtype = pick_dtype(e.dtype, torch::kCPU);
  model::save_eagle3(*head, e.output_dir, dtype, target);
  model::load_eagle3(e.output_dir, llama->named_parameters()["model.embed_tokens.weight"]);  // reads back
  log::info("export: EAGLE-3 head ", src.string(), " (", head->num_params(), " parameters, target ", target.string(),
            ") -> ", e.output_dir, " (", e.dtype, "); vLLM: --speculative-config '{\"method\": \"eagle3\", ",
            "\"model\": \"", e.output_dir, "\", \"num_speculative_tokens\": 4}'");
  return 0;
}

}  // namespace

int export_drafter(const config::Config& cfg) {
  const config::ExportSection& e = cfg.export_;
  const stdfs::path src = e.checkpoint;
  DA_CHECK(stdfs::is_directory(src), "export.checkpoint: ", src.string(), " is not a directory (a drafter checkpoint: ",
           "config.json + model.safetensors, e.g. <output_dir>/final or <output_dir>/checkpoints/step-NNNNNNN)");
  if (io::is_eagle3_dir(src)) return export_head(cfg);
  auto drafter = model::load_llama(src, torch::kCPU, torch::kFloat32);
  // A draft vocabulary's head becomes a full one with zero rows outside it (model/llama.h with_full_head).
  auto model = model::with_full_head(*drafter);
  if (drafter->has_draft_vocab())
    log::info("export: ", src.string(), " has a draft vocabulary of ", drafter->head_rows(), " tokens: written with an ",
              "untied lm_head over all ", drafter->config().vocab_size, " tokens whose other rows are zero (their logit "
              "is 0; the greedy token is the drafter's wherever its top logit is positive)");
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

cli::Stage export_stage() {
  return {.name = "export",
          .summary = "write a checkpoint as a Hugging Face directory",
          .description =
              "Writes export.checkpoint as a Hugging Face directory (config.json, generation_config.json, "
              "model.safetensors\n"
              "in export.dtype, the tokenizer files: the checkpoint's own, else the target's) that transformers'\n"
              "AutoModelForCausalLM and vLLM load, written atomically and checked after writing.",
          .sections = {"run", "target", "export"},
          .run = export_drafter,
          .outputs = [](const config::Config& c) { return std::vector<std::string>{c.export_.output_dir}; }};
}

}  // namespace draftalign::train

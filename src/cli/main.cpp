// main.cpp: the `draftalign` binary: the command table, each stage bound to the function that runs it.
// Every command is one stage, one file in trainers/ or evaluators/, `int stage(const config::Config&)`; this file only
// says which command runs which and what it reads.
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/device.h"
#include "evaluators/evaluate.h"
#include "trainers/data_tools.h"
#include "trainers/distill.h"
#include "trainers/export.h"
#include "trainers/generate.h"
#include "trainers/magpie.h"
#include "trainers/pipeline.h"
#include "trainers/prepare_data.h"
#include "trainers/pretrain.h"

using draftalign::cli::Command;
namespace train = draftalign::train;

int main(int argc, char** argv) {
  draftalign::cli::init_rank_from_env();
  const std::vector<Command> commands = {
      {"prepare-data",
       "tokenize a text/JSONL corpus into binary shards",
       "Tokenizes text (.txt, documents separated by blank lines) or JSONL files with the target's tokenizer into\n"
       "binary token shards (magic, version, count, checksum) with index.json and a held-out validation split.\n"
       "Deterministic whatever the number of workers; an up-to-date dataset is left as it is.",
       {"run", "target", "prepare"},
       train::prepare_data},
      {"pretrain",
       "pretrain the drafter on token shards (data parallel)",
       "Trains a Llama-architecture drafter with next-token cross-entropy on the shards of prepare-data.\n"
       "Data parallel over c10d (NCCL on GPU, Gloo on CPU) when launched with torchrun or srun.",
       {"run", "pretrain"},
       train::pretrain},
      {"generate",
       "the target answers instruction prompts (distillation data)",
       "Batched KV-cache sampling (continuous batching) from the target on instruction prompts; writes\n"
       "prompt/response shards, a manifest and a JSONL preview. Resumable: a restarted run does only the shards\n"
       "that are missing. Ranks (torchrun/srun) or generate.shard=i/n processes take disjoint shards.",
       {"run", "target", "generate"},
       train::generate},
      {"magpie",
       "the target writes instruction prompts (Magpie: sampled from the bare user-turn prefix)",
       "The target samples user turns from its chat template's bare prefix (system turn, then the opening of a\n"
       "user turn); unfinished, junk, duplicate and near-duplicate samples, and any that overlap the evaluation\n"
       "prompts (magpie.exclude), are dropped until magpie.count are kept. Writes magpie.output, a prompt JSONL\n"
       "with provenance (seed, temperature), and a manifest; list it in generate.prompts, with\n"
       "generate.prompt_weights for the mix with other prompt files.",
       {"run", "target", "magpie"},
       train::magpie},
      {"data stats",
       "counts, finish reasons and length histograms of generated data",
       "Reads the shards of a generate output directory (data.dir, default generate.output_dir), complete or not,\n"
       "and prints record and token counts, finish reasons, and prompt and response length histograms.",
       {"generate", "data"},
       train::data_stats,
       false},
      {"data show",
       "print generated records, decoded",
       "Prints data.samples records from data.first of a generate output directory (data.dir, default\n"
       "generate.output_dir): the prompt as the target saw it (chat template included) and its response.",
       {"target", "generate", "data"},
       train::data_show,
       false},
      {"data import",
       "turn chat JSONL (messages / ShareGPT) into distillation data",
       "Renders each conversation of data.inputs with the target's chat template and writes a distillation data\n"
       "directory (data.dir, default generate.output_dir) in generate's format: one record per assistant turn, the\n"
       "loss on that turn's tokens. distill (online teacher) trains on it; `data show` prints it. Bad lines name\n"
       "file:line: the import stops, or skips and counts them (data.on_bad_record = skip).",
       {"run", "target", "generate", "data"},
       train::data_import},
      {"distill",
       "finetune the drafter on the target's distributions (TVD++, FKL, RKL, TVD)",
       "Knowledge distillation of the pretrained drafter against the target's token distributions on the\n"
       "generated responses, with TVD++ (fused CUDA kernel on GPU) or a baseline loss. Online teacher (the target\n"
       "runs alongside) or offline (the top-k log-probs generate stored). Loss on response tokens only; logs the\n"
       "held-out expected acceptance alpha and tau(g). Data parallel, checkpoints and exact resume as pretrain.",
       {"run", "target", "distill"},
       train::distill},
      {"evaluate",
       "speculative decoding: block efficiency, acceptance, MBSU, speed-up",
       "Is a drafter worth deploying? The target answers every prompt (every MT-bench turn, the second after its\n"
       "own first answer) greedily once; each drafter in evaluate.drafters, and prompt lookup, reads prompt +\n"
       "answer in one teacher-forced pass: exact greedy tau for every evaluate.exact_gammas, with 95% bootstrap\n"
       "intervals over prompts, per turn and category, and paired differences. Then the real draft-then-verify\n"
       "decoder on evaluate.timed_prompts turns at evaluate.gammas x evaluate.temperatures, each run alternated\n"
       "with plain decoding: wall-clock speed-up (median, interval, checked against what tau allows), MBSU,\n"
       "measured acceptance. Writes report.json, report.md, exact.jsonl, prompts.jsonl and plots to\n"
       "evaluate.report_dir.",
       {"run", "target", "evaluate"},
       draftalign::eval::evaluate},
      {"export",
       "write a checkpoint as a Hugging Face directory",
       "Writes export.checkpoint as a Hugging Face directory (config.json, generation_config.json, model.safetensors\n"
       "in export.dtype, the tokenizer files: the checkpoint's own, else the target's) that transformers'\n"
       "AutoModelForCausalLM and vLLM load, written atomically and checked after writing.",
       {"run", "target", "export"},
       train::export_drafter},
      {"pipeline",
       "all stages in order, skipping finished ones",
       "prepare-data -> pretrain -> [magpie, with pipeline.target_prompts] -> generate -> distill (each loss in "
       "pipeline.losses) -> evaluate, skipping\n"
       "stages whose outputs are complete and resuming an interrupted one. The stages chain through the config's\n"
       "${...} references; the report compares the pretrained-only drafter with each distilled one.",
       {"run", "target", "prepare", "pretrain", "generate", "magpie", "distill", "evaluate", "pipeline"},
       train::pipeline},
  };
  return draftalign::cli::run_cli(std::vector<std::string>(argv + 1, argv + argc), commands,
                                  draftalign::runtime_summary);
}

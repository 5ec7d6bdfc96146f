// main.cpp: the `draftalign` binary: the command table, each stage bound to the function that runs it.
// The stages live in trainers/ and evaluators/; this file only says which command runs which and what it reads.
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/device.h"

using draftalign::cli::Command;

int main(int argc, char** argv) {
  draftalign::cli::init_rank_from_env();
  const std::vector<Command> commands = {
      {"prepare-data", "tokenize a text/JSONL corpus into binary shards",
       "Tokenizes text (.txt) or JSONL files with the target's tokenizer into binary token shards (magic, version,\n"
       "count, checksum) with an index and a held-out validation split.",
       {"run", "target", "prepare"}, nullptr},
      {"pretrain", "pretrain the drafter on token shards (data parallel)",
       "Trains a Llama-architecture drafter with next-token cross-entropy on the shards of prepare-data.\n"
       "Data parallel over c10d (NCCL on GPU, Gloo on CPU) when launched with torchrun or srun.",
       {"run", "pretrain"}, nullptr},
      {"generate", "the target answers instruction prompts (distillation data)",
       "Batched KV-cache sampling from the target on instruction prompts; writes prompt/response shards, a\n"
       "manifest and a JSONL preview.",
       {"run", "target", "generate"}, nullptr},
      {"distill", "finetune the drafter on the target's distributions (TVD++, FKL, RKL, TVD)",
       "Knowledge distillation of the pretrained drafter against the target's token distributions on the\n"
       "generated responses, with TVD++ (fused CUDA kernel on GPU) or a baseline loss.",
       {"run", "target", "distill"}, nullptr},
      {"evaluate", "speculative decoding: block efficiency, acceptance, MBSU, speed-up",
       "Lossless draft-then-verify decoding of the target with each drafter; writes a JSON + Markdown report\n"
       "with plots.",
       {"run", "target", "evaluate"}, nullptr},
      {"export", "write a checkpoint as a Hugging Face directory",
       "Writes config.json, model.safetensors and the tokenizer files so transformers and vLLM load the drafter.",
       {"run", "export"}, nullptr},
      {"pipeline", "all stages in order, skipping finished ones",
       "prepare-data -> pretrain -> generate -> distill (each loss in pipeline.losses) -> evaluate, skipping\n"
       "stages whose outputs are complete and resuming an interrupted one.",
       {"run", "target", "prepare", "pretrain", "generate", "distill", "evaluate", "pipeline"}, nullptr},
  };
  return draftalign::cli::run_cli(std::vector<std::string>(argv + 1, argv + argc), commands,
                                  draftalign::runtime_summary);
}

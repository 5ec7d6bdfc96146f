// generate.h: `draftalign generate`, stage 2: the target answers instruction prompts; its answers are the drafter's
// distillation data.
//
// The requests (each prompt x generate.responses_per_prompt, in prompt order, each with its own seed derived from
// run.seed) are cut into shards of generate.shard_size. A process takes every n-th shard starting at i: i/n from
// generate.shard, else RANK/WORLD_SIZE of torchrun or srun. A shard is decoded with continuous batching and written
// atomically to <output_dir>/shard-NNNNN.safetensors (+ a .preview.jsonl with the decoded text), so a killed run
// restarts with the shards it has not finished: no request is lost or done twice, and with fixed seeds the records
// are the same as an uninterrupted run's. When every shard exists, the process that finishes last writes
// manifest.json (counts, checksums, finish reasons) and preview.jsonl; re-running generate on a complete directory
// only rewrites those (the merge step).
//
// A shard holds, for its n records (prompt + response tokens back to back):
//   tokens int32 [T], offsets int64 [n+1], prompt_lens int32 [n], loss_mask uint8 [T] (1 = response token),
//   request_ids int64 [n], prompt_index int64 [n], seeds int64 [n], finish uint8 [n] (0 eos, 1 stop, 2 length),
//   and with generate.topk_logprobs = k > 0: topk_ids int32 [R, k], topk_logprobs fp32 [R, k] per response token and
//   topk_mass fp32 [R] (their probability mass, which `data stats` summarises).
#pragma once

#include "cli/stage.h"
#include "config/config.h"

namespace draftalign::train {

// The stage. Returns 0 also when this process's shards are done but others' are not (generate.shard, ranks):
// <output_dir>/manifest.json exists exactly when every shard does.
int generate(const config::Config& cfg);
// Whether generate.output_dir is complete for this config: manifest.json is written and it, and plan.json, record
// this config's plan fingerprint.
bool generate_complete(const config::Config& cfg);
// `draftalign generate` (its flag: --shard i/n = generate.shard=i/n).
cli::Stage generate_stage();

}  // namespace draftalign::train

// distill.h: `draftalign distill`, stage 3: the pretrained drafter (student) finetuned against the target (teacher)
// on the prompt/response pairs of `draftalign generate`, with the loss only on response tokens:
//   total = kd_weight * KD(p_target, q_drafter) + ce_weight * CE(response tokens)
// KD is distill.loss: tvdpp (src/train/losses.h, the fused kernel on CUDA), tvd, fkl, rkl, or ce (KD = CE).
//
// Teacher: online = the target model runs on the same batch (frozen, no gradient, target.dtype: bf16 on CUDA);
// offline = the top-k log-probabilities generate stored (generate.topk_logprobs = k): the loss compares teacher and
// student over k + 1 bins, the k stored tokens and one "rest" bucket of all the others (losses.h's topk_bins), which
// invents no mass; its TVD is a lower bound of the true one. The stored log-probs are at temperature 1, so an offline
// run needs distill.temperature = 1. With k = V it is the online loss exactly (tests/trainers/test_distill.cpp).
//
// Data: records are held out for validation by prompt (every round(1 / val_fraction)-th distinct prompt with all its
// responses, so answers to one prompt never land on both sides); the others are visited in
// a seeded random order per epoch, global sequence g of the run being record perm_{g / n}[g % n] (n training records),
// so a resumed run or one with another world size sees the same sequences. A micro-batch pads its records on the right
// to the longest (at most train.seq_len + 1 tokens; longer records are cut).
//
// On-policy distillation (distill.on_policy_fraction = lambda > 0; DistillSpec, GKD): a lambda share of the training
// sequences (on_policy_sequence) keeps its prompt but gets a response the student samples itself at that moment, from
// its own KV cache at distill.on_policy_temperature, as long as the target's response (an end token may stop it
// earlier). The online teacher scores it in the same teacher-forced forward as any other sequence, and the KD loss
// applies to its tokens; the CE term does not (it would reinforce the student's own draws). Needs teacher = online.
// The seed of sequence g is a hash of run.seed and g, and the weights it samples from are the checkpointed ones, so a
// resumed run is exact; lambda = 0 never enters this path (the run is the off-policy one bit for bit).
//
// Validation (at the start and every train.eval_every steps), always against the real target (one teacher-forced
// target forward over the held-out records, also when training is offline): on up to eval_batches * micro_batch_size
// held-out records, the mean over response tokens of alpha = sum_x min(p, q) (the expected acceptance of speculative
// sampling, at distill.temperature; val_alpha), the greedy agreement argmax q == argmax p (val_greedy_agreement), the
// CE of the responses, and val_tau_iid_prediction = (1 - alpha^(g+1)) / (1 - alpha) for g = 1..8: what tau would be
// if acceptances were independent with rate alpha, a prediction, not a measurement (evaluate measures tau). An
// offline run also logs val_alpha_offline_teacher, alpha over the top-k + rest bins it trains on (an upper bound of the
// real alpha, by the data-processing inequality).
//
// Output: <output_dir>/<run name>/ (with distill.seed = n: <output_dir>/<run name>/seed-n/) with checkpoints,
// metrics.jsonl and final/ (an HF directory); the run name is the loss (tvdpp-<scope>-<weighting> for TVD++, then
// -vocab for tvdpp_stats = vocab and -onpolicy<lambda>), so the losses of an ablation sit side by side.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/stage.h"
#include "config/config.h"

namespace draftalign::model {
class Llama;
}

namespace draftalign::train {

// One generated record: prompt + response tokens, and (offline teacher) the target's top-k log-probs of each
// response position.
struct Pair {
  int64_t request = 0, prompt_len = 0;
  bool on_policy = false;  // the response was sampled by the student (distill.on_policy_fraction): KD only, no CE
  std::vector<int64_t> tokens;
  torch::Tensor topk_ids, topk_logprobs;  // [response_len, k]
};

// Every record with a response of a complete generate output directory, by request id (need_topk: with the stored
// top-k log-probs). Errors name the file and the record.
std::vector<Pair> load_pairs(const std::filesystem::path& dir, bool need_topk, int64_t vocab);

// The held-out split: record i is held out when its prompt (the token sequence) is every round(1 / val_fraction)-th
// distinct prompt in order of first appearance; all responses to one prompt fall on the same side.
std::vector<bool> held_out_by_prompt(const std::vector<std::vector<int64_t>>& prompts, double val_fraction);

// The training and held-out records (held_out_by_prompt at d.val_fraction; at most t.eval_batches x
// t.micro_batch_size held out); no training record is an Error naming d.data_dir.
std::pair<std::vector<const Pair*>, std::vector<const Pair*>> split_pairs(const std::vector<Pair>& pairs,
                                                                          const config::DistillSection& d,
                                                                          const config::TrainSection& t);

// Whether global training sequence g (0-based, counted over the whole run and all ranks) is on-policy at
// distill.on_policy_fraction = f: floor((g + 1) f) > floor(g f), so any n consecutive sequences hold n f (+-1) of them,
// the choice does not depend on the world size or on resuming, and f = 0 picks none.
bool on_policy_sequence(int64_t g, double fraction);

// The student's own responses to `prompts`, sampled from its KV cache at `temperature` (0 = greedy; model/generation.h,
// one batch): response i has at most max_new[i] tokens, ends after an end token (kept), and draws its uniforms from
// seed seeds[i] alone, so it does not depend on the other requests.
std::vector<std::vector<int64_t>> sample_responses(model::Llama& student, const std::vector<std::vector<int64_t>>& prompts,
                                                   const std::vector<int64_t>& max_new,
                                                   const std::vector<uint64_t>& seeds, double temperature);

// Runs the stage; returns the exit code. Throws Error on bad data, checkpoints or config. distill.kind = eagle3 runs
// distill_eagle3.
int distill(const config::Config& cfg);
// `draftalign distill`: complete when its run (config::distill_run_dir) has its final drafter and last checkpoint.
cli::Stage distill_stage();

// distill.kind = eagle3 (distill_eagle3.cpp): an EAGLE-3 head trained against the online target.
int distill_eagle3(const config::Config& cfg);

}  // namespace draftalign::train

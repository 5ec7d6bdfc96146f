#include "trainers/train_loop.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>

#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/preempt.h"
#include "common/trackers.h"
#include "config/loader.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/sampler.h"

namespace draftalign::train {
namespace {

using json = nlohmann::json;

}  // namespace

void run_training(const config::Config& cfg, const config::TrainSection& t, const stdfs::path& out,
                  const stdfs::path& tokenizer_dir, Runtime& rt, model::Llama& model, const Recipe& recipe) {
  run_training(cfg, t, out, rt, model, llama_io(model, tokenizer_dir), recipe);
}

namespace {

// The state a run starts from: the checkpoint of train.resume (the same on every rank), loaded into `io` and `opt`,
// or a fresh one. Rank 0 readies the output directory: unfinished checkpoints removed, metrics.jsonl cut back to the
// resumed step (a fresh run removes it).
TrainerState resume_or_start(const stdfs::path& out, const config::TrainSection& t, const ModelIO& io, AdamW& opt,
                             Runtime& rt, const std::string& name, bool& resumed) {
  Dist& dist = *rt.dist;
  TrainerState state;
  std::optional<stdfs::path> resume = resume_checkpoint(out, t.resume);
  {
    // Every rank must resume from the same step.
    torch::Tensor step = torch::tensor({resume ? checkpoint_step(*resume) : int64_t{-1}}).to(rt.device);
    for (const torch::Tensor& s : dist.all_gather(step, "resume-step gather"))
      DA_CHECK(s.item<int64_t>() == step.item<int64_t>(), "ranks see different checkpoints in ", out.string(),
               "/checkpoints (is output_dir on a shared file system?)");
  }
  if (resume) {
    state = load_checkpoint(*resume, io, opt, dist);
    log::info(name, ": resumed from ", resume->string(), " at step ", state.step);
  }
  if (dist.rank() == 0) {
    fs::ensure_dir(out);
    remove_unfinished_checkpoints(out);  // a run stopped at once while it wrote one
    if (resume)
      truncate_metrics(out / "metrics.jsonl", state.step);
    else
      stdfs::remove(out / "metrics.jsonl");
  }
  resumed = resume.has_value();
  return state;
}

// Where the metrics go: rank 0's trackers (metrics.jsonl and those of run.report_to); the other ranks' write nothing.
std::unique_ptr<Trackers> open_trackers(const config::Config& cfg, const stdfs::path& out, const std::string& name,
                                        bool resumed, const Dist& dist) {
  if (dist.rank() != 0) return std::make_unique<Trackers>();
  TrackerSettings settings;
  settings.report_to = cfg.run.report_to, settings.wandb_project = cfg.run.wandb_project;
  settings.run_name = str_cat(name, ":", out.filename().string());
  config::Config resolved = cfg;
  settings.config_yaml = config::to_yaml(resolved, str_cat("resolved config of draftalign ", name));
  return std::make_unique<Trackers>(out, settings, resumed);
}

// One step's gradients on this rank: t.grad_accum micro-batches, each backward (the gradient sync armed on the last),
// and their summed loss, tokens and logged parts (each divided by grad_accum).
struct Accumulated {
  torch::Tensor loss_sum;
  int64_t tokens = 0;
  std::vector<std::string> part_names;
  std::vector<torch::Tensor> part_sums;
};

Accumulated accumulate(const Recipe& recipe, const config::TrainSection& t, TrainerState& state, GradSync& sync,
                       const std::vector<torch::Tensor>& params, Runtime& rt) {
  const Dist& dist = *rt.dist;
  Accumulated a;
  a.loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(rt.device));
  for (int64_t m = 0; m < t.grad_accum; ++m) {
    MicroBatch mb =
        recipe.micro_batch(rank_sequences(state.consumed, m, t.micro_batch_size, dist.world(), dist.rank()));
    if (m == t.grad_accum - 1) sync.arm();
    if (mb.skipped) {
      ++state.empty_micro_batches;
      torch::Tensor zero = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(rt.device));
      for (const auto& p : params) zero = zero + 0.0 * p.sum();  // every gradient hook fires, with zeros
      zero.backward();
    } else {
      (mb.loss / static_cast<double>(t.grad_accum)).backward();
      a.loss_sum += mb.loss.detach() / static_cast<double>(t.grad_accum);
      a.tokens += mb.tokens;
    }
    for (size_t i = 0; i < mb.parts.size(); ++i) {
      const torch::Tensor v =
          mb.parts[i].second.detach().to(rt.device, torch::kFloat64) / static_cast<double>(t.grad_accum);
      if (i == a.part_names.size())
        a.part_names.push_back(mb.parts[i].first), a.part_sums.push_back(v);
      else
        a.part_sums[i] += v;
    }
  }
  sync.finish();
  return a;
}

// A step's numbers summed over the ranks in one all-reduce: [loss, tokens, parts..., stop].
struct StepTotals {
  double loss = 0;            // the mean over ranks
  int64_t tokens = 0;         // over ranks
  std::vector<double> parts;  // each the mean over ranks
  bool stop = false;          // whether any rank was asked to stop: every rank then stops after this same step
};

StepTotals all_reduce(const Accumulated& a, Runtime& rt) {
  Dist& dist = *rt.dist;
  std::vector<torch::Tensor> packed = {a.loss_sum.to(torch::kFloat64).reshape({1}),
                                       torch::tensor({static_cast<double>(a.tokens)}, torch::kFloat64).to(rt.device)};
  for (const auto& v : a.part_sums) packed.push_back(v.reshape({1}));
  packed.push_back(torch::tensor({preempt::stop_requested() ? 1.0 : 0.0}, torch::kFloat64).to(rt.device));
  torch::Tensor sums = torch::cat(packed);
  dist.all_reduce_sum(sums, "loss all-reduce");
  sums = sums.cpu();
  const double world = static_cast<double>(dist.world());
  StepTotals s;
  s.stop = sums[sums.size(0) - 1].item<double>() > 0;
  s.loss = sums[0].item<double>() / world;
  s.tokens = static_cast<int64_t>(sums[1].item<double>());
  for (size_t i = 0; i < a.part_sums.size(); ++i)
    s.parts.push_back(sums[2 + static_cast<int64_t>(i)].item<double>() / world);
  return s;
}

}  // namespace

void run_training(const config::Config& cfg, const config::TrainSection& t, const stdfs::path& out, Runtime& rt,
                  torch::nn::Module& model, const ModelIO& io, const Recipe& recipe) {
  const config::RunSection& run = cfg.run;
  Dist& dist = *rt.dist;
  preempt::StopOnSignal stop_on_signal;  // SIGTERM/SIGINT/SIGUSR1: checkpoint after the current step, then exit
  const std::string& name = recipe.name;
  model.train();
  std::vector<torch::Tensor> params = model.parameters();
  AdamW opt(params, t.optim);
  bool resumed = false;
  TrainerState state = resume_or_start(out, t, io, opt, rt, name, resumed);
  const std::unique_ptr<Trackers> metrics = open_trackers(cfg, out, name, resumed, dist);
  auto validate = [&](int64_t step) {
    if (!recipe.validate) return;
    json record = recipe.validate(step);
    if (record.empty()) return;
    record["step"] = step;
    metrics->write(record);
  };
  if (recipe.validate_at_start && state.step == 0) validate(0);

  GradSync sync(dist, params, static_cast<int64_t>(t.bucket_mb * (1 << 20)));
  const int64_t world = dist.world(), global_batch = t.micro_batch_size * world * t.grad_accum;
  log::info(name, ": ", t.steps, " steps of ", global_batch, " sequences (", t.micro_batch_size, " per micro-batch x ",
            world, " ranks x ", t.grad_accum, " accumulation)",
            sync.num_buckets() ? str_cat(", ", sync.num_buckets(), " gradient buckets") : std::string());

  log::Progress progress(name, t.steps, "step", stdout, -1, run.progress_interval_s);
  progress.skip(state.step);  // a resumed run's rate and ETA count only the steps it does
  auto interval_start = std::chrono::steady_clock::now();
  int64_t interval_tokens = 0;
  for (int64_t step = state.step; step < t.steps; ++step) {
    const double lr = lr_at(step, t);
    opt.set_lr(lr);
    const Accumulated acc = accumulate(recipe, t, state, sync, params, rt);
    const StepTotals sums = all_reduce(acc, rt);
    const double grad_norm = torch::nn::utils::clip_grad_norm_(
        params, t.optim.grad_clip > 0 ? t.optim.grad_clip : std::numeric_limits<double>::infinity());
    if (std::isfinite(sums.loss) && std::isfinite(grad_norm)) {
      opt.step();
    } else if (t.on_nonfinite == config::OnNonfinite::kStop) {
      const auto last = latest_checkpoint(out);
      throw Error(str_cat(
          name, ": non-finite loss or gradient (loss ", sums.loss, ", gradient norm ", grad_norm, ") at step ",
          step + 1, "; ", last ? "the last good checkpoint is " + last->string() : "no checkpoint was written yet",
          ". Lower ", name, ".train.optim.lr, or set ", name, ".train.on_nonfinite=skip to skip such steps"));
    } else {
      ++state.skipped;
      log::warn(name, ": step ", step + 1, " skipped: non-finite loss or gradient (loss ", sums.loss,
                ", gradient norm ", grad_norm, "); ", state.skipped, " skipped so far");
    }
    opt.zero_grad();
    state.step = step + 1;
    state.consumed += global_batch;
    state.tokens += sums.tokens;
    interval_tokens += sums.tokens;

    const bool last = state.step == t.steps;
    if (state.step % run.log_every == 0 || last) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - interval_start).count();
      json record = {{"step", state.step},
                     {"loss", sums.loss},
                     {"lr", lr},
                     {"grad_norm", grad_norm},
                     {"tokens", state.tokens},
                     {"tokens_per_s", interval_tokens / std::max(secs, 1e-9)},
                     {"skipped", state.skipped},
                     {"empty_micro_batches", state.empty_micro_batches}};
      for (size_t i = 0; i < acc.part_names.size(); ++i) record[acc.part_names[i]] = sums.parts[i];
      metrics->write(record);
      interval_start = std::chrono::steady_clock::now();
      interval_tokens = 0;
    }
    if ((t.eval_every > 0 && state.step % t.eval_every == 0) || last) validate(state.step);
    const bool saved = (t.save_every > 0 && state.step % t.save_every == 0) || last;
    if (saved || sums.stop) save_checkpoint(out, io, opt, state, dist, t.keep_last);
    progress.update(state.step, str_cat("loss ", sums.loss, " lr ", lr));
    if (sums.stop && !last) {
      progress.finish();
      throw preempt::Preempted(str_cat(name, " stopped after step ", state.step, " of ", t.steps, "; ",
                                       checkpoint_dir(out, state.step).string(),
                                       " is written: run the same command again to resume"));
    }
  }
  progress.finish();
  if (dist.rank() == 0) {
    io.save(out / kFinalDir);
    log::info(name, ": done; the drafter is in ", (out / kFinalDir).string(), " (", state.tokens, " tokens, ",
              state.skipped, " skipped steps)");
  }
  dist.barrier("end-of-training barrier");
}

bool training_complete(const stdfs::path& out, int64_t steps) {
  if (!stdfs::exists(checkpoint_dir(out, steps) / kStateFile)) return false;
  const stdfs::path final_dir = out / kFinalDir;
  try {
    if (io::is_eagle3_dir(final_dir)) {
      // An EAGLE-3 head: its weights file holds the head's tensors and maps (load_eagle3 checks the rest).
      const io::SafetensorsFile f = io::SafetensorsFile::open(final_dir / "model.safetensors");
      for (const char* name : {"fc.weight", "lm_head.weight", "d2t", "t2d"})
        DA_CHECK(f.contains(name), (final_dir / "model.safetensors").string(), ": no tensor '", name, "'");
      return true;
    }
    io::HfCheckpoint::open(final_dir).check_llama();
    return true;
  } catch (const Error& e) {
    log::warn((final_dir).string(), " is not a complete drafter (", e.what(), "); training again");
    return false;
  }
}

torch::Tensor held_out_sums(torch::nn::Module& model, Runtime& rt, int64_t n, int64_t batch, int64_t width,
                            const std::function<void(const std::vector<int64_t>& items, torch::Tensor& sums)>& add) {
  torch::NoGradGuard no_grad;
  model.eval();
  torch::Tensor sums = torch::zeros({width}, torch::TensorOptions().dtype(torch::kFloat64).device(rt.device));
  const std::vector<int64_t> mine = rank_share(n, rt.dist->world(), rt.dist->rank());
  for (size_t i = 0; i < mine.size(); i += batch)
    add(std::vector<int64_t>(mine.begin() + i, mine.begin() + std::min(mine.size(), i + batch)), sums);
  rt.dist->all_reduce_sum(sums, "validation all-reduce");
  model.train();
  return sums.cpu();
}

}  // namespace draftalign::train

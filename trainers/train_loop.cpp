#include "trainers/train_loop.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

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

void run_training(const config::Config& cfg, const config::TrainSection& t, const stdfs::path& out, Runtime& rt,
                  torch::nn::Module& model, const ModelIO& io, const Recipe& recipe) {
  const config::RunSection& run = cfg.run;
  Dist& dist = *rt.dist;
  preempt::StopOnSignal stop_on_signal;  // SIGTERM/SIGINT/SIGUSR1: checkpoint after the current step, then exit
  const std::string& name = recipe.name;
  model.train();
  std::vector<torch::Tensor> params = model.parameters();
  AdamW opt(params, t.optim);
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
  std::unique_ptr<Trackers> trackers = std::make_unique<Trackers>();
  if (dist.rank() == 0) {
    TrackerSettings settings;
    settings.report_to = run.report_to, settings.wandb_project = run.wandb_project;
    settings.run_name = str_cat(name, ":", out.filename().string());
    config::Config resolved = cfg;
    settings.config_yaml = config::to_yaml(resolved, str_cat("resolved config of draftalign ", name));
    trackers = std::make_unique<Trackers>(out, settings, resume.has_value());
  }
  Trackers& metrics = *trackers;
  auto validate = [&](int64_t step) {
    if (!recipe.validate) return;
    json record = recipe.validate(step);
    if (record.empty()) return;
    record["step"] = step;
    metrics.write(record);
  };
  if (recipe.validate_at_start && state.step == 0) validate(0);

  GradSync sync(dist, params, static_cast<int64_t>(t.bucket_mb * (1 << 20)));
  const int64_t world = dist.world(), global_batch = t.micro_batch_size * world * t.grad_accum;
  log::info(name, ": ", t.steps, " steps of ", global_batch, " sequences (", t.micro_batch_size, " per micro-batch x ",
            world, " ranks x ", t.grad_accum, " accumulation)",
            sync.num_buckets() ? str_cat(", ", sync.num_buckets(), " gradient buckets") : std::string());

  auto checkpoint_note = [&] {
    auto last = latest_checkpoint(out);
    return last ? "the last good checkpoint is " + last->string() : std::string("no checkpoint was written yet");
  };
  log::Progress progress(name, t.steps, "step", stdout, -1, run.progress_interval_s);
  progress.skip(state.step);  // a resumed run's rate and ETA count only the steps it does
  auto interval_start = std::chrono::steady_clock::now();
  int64_t interval_tokens = 0;
  for (int64_t step = state.step; step < t.steps; ++step) {
    const double lr = lr_at(step, t);
    opt.set_lr(lr);
    // Summed over micro-batches here and over ranks below, in one all-reduce: [loss, tokens, parts...].
    torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(rt.device));
    std::vector<std::string> part_names;
    std::vector<torch::Tensor> part_sums;
    int64_t tokens = 0;
    for (int64_t m = 0; m < t.grad_accum; ++m) {
      MicroBatch mb = recipe.micro_batch(rank_sequences(state.consumed, m, t.micro_batch_size, world, dist.rank()));
      if (m == t.grad_accum - 1) sync.arm();
      if (mb.skipped) {
        ++state.empty_micro_batches;
        torch::Tensor zero = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(rt.device));
        for (const auto& p : params) zero = zero + 0.0 * p.sum();  // every gradient hook fires, with zeros
        zero.backward();
      } else {
        (mb.loss / static_cast<double>(t.grad_accum)).backward();
        loss_sum += mb.loss.detach() / static_cast<double>(t.grad_accum);
        tokens += mb.tokens;
      }
      for (size_t i = 0; i < mb.parts.size(); ++i) {
        const torch::Tensor v =
            mb.parts[i].second.detach().to(rt.device, torch::kFloat64) / static_cast<double>(t.grad_accum);
        if (i == part_names.size()) part_names.push_back(mb.parts[i].first), part_sums.push_back(v);
        else part_sums[i] += v;
      }
    }
    sync.finish();
    std::vector<torch::Tensor> packed = {loss_sum.to(torch::kFloat64).reshape({1}),
                                         torch::tensor({static_cast<double>(tokens)}, torch::kFloat64).to(rt.device)};
    for (const auto& v : part_sums) packed.push_back(v.reshape({1}));
    // Whether any rank was asked to stop, in the same all-reduce: every rank then stops after this same step.
    packed.push_back(torch::tensor({preempt::stop_requested() ? 1.0 : 0.0}, torch::kFloat64).to(rt.device));
    torch::Tensor sums = torch::cat(packed);
    dist.all_reduce_sum(sums, "loss all-reduce");
    sums = sums.cpu();
    const bool stop = sums[sums.size(0) - 1].item<double>() > 0;
    const double loss = sums[0].item<double>() / static_cast<double>(world);
    const int64_t step_tokens = static_cast<int64_t>(sums[1].item<double>());
    const double grad_norm = torch::nn::utils::clip_grad_norm_(
        params, t.optim.grad_clip > 0 ? t.optim.grad_clip : std::numeric_limits<double>::infinity());
    const bool finite = std::isfinite(loss) && std::isfinite(grad_norm);
    if (finite) {
      opt.step();
    } else if (t.on_nonfinite == config::OnNonfinite::kStop) {
      throw Error(str_cat(name, ": non-finite loss or gradient (loss ", loss, ", gradient norm ", grad_norm,
                          ") at step ", step + 1, "; ", checkpoint_note(), ". Lower ", name,
                          ".train.optim.lr, or set ", name, ".train.on_nonfinite=skip to skip such steps"));
    } else {
      ++state.skipped;
      log::warn(name, ": step ", step + 1, " skipped: non-finite loss or gradient (loss ", loss, ", gradient norm ",
                grad_norm, "); ", state.skipped, " skipped so far");
    }
    opt.zero_grad();
    state.step = step + 1;
    state.consumed += global_batch;
    state.tokens += step_tokens;
    interval_tokens += step_tokens;

    const bool last = state.step == t.steps;
    if (state.step % run.log_every == 0 || last) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - interval_start).count();
      json record = {{"step", state.step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                     {"tokens", state.tokens}, {"tokens_per_s", interval_tokens / std::max(secs, 1e-9)},
                     {"skipped", state.skipped}, {"empty_micro_batches", state.empty_micro_batches}};
      for (size_t i = 0; i < part_names.size(); ++i)
        record[part_names[i]] = sums[2 + static_cast<int64_t>(i)].item<double>() / static_cast<double>(world);
      metrics.write(record);
      interval_start = std::chrono::steady_clock::now();
      interval_tokens = 0;
    }
    if ((t.eval_every > 0 && state.step % t.eval_every == 0) || last) validate(state.step);
    const bool saved = (t.save_every > 0 && state.step % t.save_every == 0) || last;
    if (saved || stop) save_checkpoint(out, io, opt, state, dist, t.keep_last);
    progress.update(state.step, str_cat("loss ", loss, " lr ", lr));
    if (stop && !last) {
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

#include "trainers/train_loop.h"

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>
#include <fstream>
#include <thread>

#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/metrics.h"
#include "data/shards.h"
#include "io/hf_config.h"
#include "train/runtime.h"

namespace draftalign::train {
namespace {

using json = nlohmann::json;

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kCheckpointFiles[] = {"model.safetensors", "optimizer.pt", "rng.pt"};

std::string file_checksum(const stdfs::path& p) { return data::checksum_hex(fs::read_file(p)); }

// This rank's generator states: the CPU one, and the CUDA one of the current device when training on CUDA.
std::vector<torch::Tensor> generator_states(torch::Device device) {
  std::vector<torch::Tensor> out = {at::detail::getDefaultCPUGenerator().get_state()};
  if (device.is_cuda()) out.push_back(at::globalContext().defaultGenerator(device).get_state());
  return out;
}

}  // namespace

Runtime make_runtime(const config::RunSection& run, const config::TrainSection& train) {
  const Compute compute = make_compute(run);
  const DistEnv& env = compute.env;
  log::set_rank(env.rank, env.world);
  Runtime rt;
  rt.device = compute.device;
  const int threads = compute.threads;
  rt.bf16_autocast = rt.device.is_cuda() && train.dtype != "fp32";
  DA_CHECK(!(train.dtype == "bf16" && !rt.device.is_cuda()),
           "train.dtype = bf16 needs a CUDA device (bf16 autocast); use auto or fp32 on CPU");
  rt.dist = std::make_unique<Dist>(env, rt.device, std::chrono::milliseconds(
                                                       static_cast<int64_t>(run.dist_timeout_s * 1000)));
  log::info("runtime: ", rt.device.str(), ", ", threads, " CPU threads per rank, ",
            rt.bf16_autocast ? "bf16 autocast" : "fp32", ", world size ", env.world);
  return rt;
}

AutocastGuard::AutocastGuard(bool on) : on_(on) {
  if (!on_) return;
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
}

AutocastGuard::~AutocastGuard() {
  if (!on_) return;
  at::autocast::set_autocast_enabled(at::kCUDA, false);
  at::autocast::clear_cache();
}

AdamW::AdamW(const std::vector<torch::Tensor>& params, const config::OptimSection& o)
    : lr_(o.lr), beta1_(o.beta1), beta2_(o.beta2), eps_(o.eps) {
  groups_[0].weight_decay = o.weight_decay;
  for (const auto& p : params) {
    Group& g = groups_[p.dim() >= 2 ? 0 : 1];
    g.params.push_back(p);
    g.exp_avg.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    g.exp_avg_sq.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    g.steps.push_back(torch::zeros({}, p.options().dtype(torch::kFloat32)));
  }
}

void AdamW::step() {
  torch::NoGradGuard no_grad;
  for (Group& g : groups_) {
    std::vector<torch::Tensor> params, grads, m, v, steps;
    for (size_t i = 0; i < g.params.size(); ++i) {
      if (!g.params[i].grad().defined()) continue;
      params.push_back(g.params[i]);
      grads.push_back(g.params[i].grad());
      m.push_back(g.exp_avg[i]);
      v.push_back(g.exp_avg_sq[i]);
      steps.push_back(g.steps[i]);
    }
    if (params.empty()) continue;
    at::_foreach_add_(steps, 1);  // the kernel reads the step count of this update (bias correction)
    at::_fused_adamw_(params, grads, m, v, /*max_exp_avg_sqs=*/{}, steps, lr_, beta1_, beta2_, g.weight_decay, eps_,
                      /*amsgrad=*/false, /*maximize=*/false);
  }
}

void AdamW::zero_grad() {
  for (Group& g : groups_)
    for (auto& p : g.params) p.mutable_grad() = torch::Tensor();
}

void AdamW::save(const stdfs::path& file) const {
  std::vector<torch::Tensor> all;
  for (const Group& g : groups_)
    for (size_t i = 0; i < g.params.size(); ++i)
      all.insert(all.end(), {g.exp_avg[i].cpu(), g.exp_avg_sq[i].cpu(), g.steps[i].cpu()});
  torch::save(all, file.string());
}

void AdamW::load(const stdfs::path& file) {
  std::vector<torch::Tensor> all;
  try {
    torch::load(all, file.string());
  } catch (const c10::Error& e) {
    throw Error(str_cat(file.string(), ": cannot load the optimizer state (",
                        std::string(e.what_without_backtrace()).substr(0, 200), ")"));
  }
  size_t k = 0;
  for (Group& g : groups_) {
    for (size_t i = 0; i < g.params.size(); ++i, k += 3) {
      DA_CHECK(k + 3 <= all.size(), file.string(), ": holds the state of fewer parameters than the model has");
      DA_CHECK(all[k].sizes() == g.params[i].sizes() && all[k + 1].sizes() == g.params[i].sizes() &&
                   all[k + 2].numel() == 1,
               file.string(), ": state tensor ", k, " has shape ", all[k].sizes(), ", the parameter ",
               g.params[i].sizes());
      torch::NoGradGuard no_grad;
      g.exp_avg[i].copy_(all[k]);
      g.exp_avg_sq[i].copy_(all[k + 1]);
      g.steps[i].copy_(all[k + 2].reshape({}));
    }
  }
  DA_CHECK(k == all.size(), file.string(), ": holds the state of more parameters than the model has");
}

double lr_at(int64_t step, const config::TrainSection& t) {
  const auto& o = t.optim;
  if (step < o.warmup_steps) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  const int64_t span = std::max<int64_t>(1, t.steps - o.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup_steps) / static_cast<double>(span));
  return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + std::cos(M_PI * progress));
}

stdfs::path checkpoint_dir(const stdfs::path& output_dir, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%07lld", static_cast<long long>(step));
  return output_dir / "checkpoints" / name;
}

int64_t checkpoint_step(const stdfs::path& dir) {
  std::string name = dir.filename().string();
  if (name.empty()) name = dir.parent_path().filename().string();  // "…/step-0000500/"
  if (name.size() != 12 || name.rfind("step-", 0) != 0 ||
      name.find_first_not_of("0123456789", 5) != std::string::npos)
    return -1;
  return std::stoll(name.substr(5));
}

namespace {

std::vector<std::pair<int64_t, stdfs::path>> list_checkpoints(const stdfs::path& output_dir) {
  std::vector<std::pair<int64_t, stdfs::path>> out;
  const stdfs::path root = output_dir / "checkpoints";
  if (!stdfs::is_directory(root)) return out;
  for (const auto& e : stdfs::directory_iterator(root)) {
    const int64_t step = checkpoint_step(e.path());
    if (step >= 0 && stdfs::exists(e.path() / kStateFile)) out.emplace_back(step, e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::optional<stdfs::path> latest_checkpoint(const stdfs::path& output_dir) {
  auto all = list_checkpoints(output_dir);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

std::optional<stdfs::path> resume_checkpoint(const stdfs::path& output_dir, const std::string& resume) {
  if (resume == "none") return std::nullopt;
  if (resume == "auto") return latest_checkpoint(output_dir);
  DA_CHECK(stdfs::exists(stdfs::path(resume) / kStateFile), "train.resume: ", resume,
           " is not a checkpoint directory (no ", kStateFile, "); use auto, none or a checkpoints/step-N path");
  return stdfs::path(resume);
}

void save_checkpoint(const stdfs::path& output_dir, const model::Llama& model, const AdamW& opt,
                     const TrainerState& state, Dist& dist, const stdfs::path& tokenizer_dir, int64_t keep_last) {
  // Every rank's generator states, gathered to all (rank 0 writes them).
  std::vector<torch::Tensor> rng;
  for (const torch::Tensor& s : generator_states(dist.device()))
    for (const torch::Tensor& r : dist.all_gather(s.to(dist.device()), "generator-state gather"))
      rng.push_back(r.cpu());
  if (dist.rank() != 0) return;

  const stdfs::path dir = checkpoint_dir(output_dir, state.step);
  fs::AtomicDir tmp(dir);
  model::save_llama(model, tmp.path(), torch::kFloat32, tokenizer_dir);  // replaces the empty temporary directory
  opt.save(tmp.path() / "optimizer.pt");
  torch::save(rng, (tmp.path() / "rng.pt").string());
  json j = {{"format", "draftalign-checkpoint"}, {"version", 1},       {"step", state.step},
            {"consumed", state.consumed},        {"tokens", state.tokens}, {"skipped", state.skipped},
            {"empty_micro_batches", state.empty_micro_batches}, {"world_size", dist.world()}, {"extra", state.extra}};
  for (const char* f : kCheckpointFiles) j["checksums"][f] = file_checksum(tmp.path() / f);
  fs::write_file_atomic(tmp.path() / kStateFile, j.dump(2) + "\n");
  tmp.commit();

  auto all = list_checkpoints(output_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep_last) < all.size(); ++i) fs::remove_tree(all[i].second);
}

TrainerState load_checkpoint(const stdfs::path& dir, model::Llama& model, AdamW& opt, Dist& dist) {
  const stdfs::path state_file = dir / kStateFile;
  json j;
  try {
    j = json::parse(fs::read_file(state_file));
  } catch (const json::exception& e) {
    throw Error(str_cat(state_file.string(), ": not valid JSON (", e.what(), ")"));
  }
  DA_CHECK(j.is_object() && j.value("format", "") == "draftalign-checkpoint" && j.value("version", 0) == 1,
           state_file.string(), ": not a draftalign checkpoint state (format/version)");
  for (const char* f : kCheckpointFiles) {
    const stdfs::path p = dir / f;
    DA_CHECK(stdfs::exists(p), p.string(), ": missing from the checkpoint");
    const std::string want = j["checksums"].value(f, "");
    DA_CHECK(file_checksum(p) == want, p.string(), ": checksum does not match ", state_file.string(),
             " (the file is damaged; resume from an older checkpoint with train.resume=<dir>)");
  }
  TrainerState s;
  try {
    s.step = j.at("step").get<int64_t>();
    s.consumed = j.at("consumed").get<int64_t>();
    s.tokens = j.at("tokens").get<int64_t>();
    s.skipped = j.at("skipped").get<int64_t>();
    s.empty_micro_batches = j.value("empty_micro_batches", int64_t{0});
    s.extra = j.value("extra", json::object());
  } catch (const json::exception& e) {
    throw Error(str_cat(state_file.string(), ": ", e.what()));
  }

  // The checkpoint's architecture must be the one configured.
  const io::LlamaConfig have = io::read_hf_config(dir / "config.json");
  const io::LlamaConfig& want = model.config();
  auto same = [&](const char* key, auto a, auto b) {
    DA_CHECK(a == b, (dir / "config.json").string(), ": ", key, " is ", a, " but the configured model has ", b,
             " (resume with the config the checkpoint was trained with, or train.resume=none)");
  };
  same("vocab_size", have.vocab_size, want.vocab_size);
  same("hidden_size", have.hidden_size, want.hidden_size);
  same("intermediate_size", have.intermediate_size, want.intermediate_size);
  same("num_hidden_layers", have.num_hidden_layers, want.num_hidden_layers);
  same("num_attention_heads", have.num_attention_heads, want.num_attention_heads);
  same("num_key_value_heads", have.num_key_value_heads, want.num_key_value_heads);
  same("tie_word_embeddings", have.tie_word_embeddings, want.tie_word_embeddings);

  auto loaded = model::load_llama(dir, torch::kCPU, torch::kFloat32);
  {
    torch::NoGradGuard no_grad;
    auto dst = model.named_parameters();
    for (const auto& kv : loaded->named_parameters()) dst[kv.key()].copy_(kv.value());
  }
  opt.load(dir / "optimizer.pt");
  std::vector<torch::Tensor> rng;
  try {
    torch::load(rng, (dir / "rng.pt").string());
  } catch (const c10::Error& e) {
    throw Error(str_cat((dir / "rng.pt").string(), ": cannot load the generator states (",
                        std::string(e.what_without_backtrace()).substr(0, 200), ")"));
  }
  const int64_t per_rank = dist.device().is_cuda() ? 2 : 1;
  const int64_t saved_world = j.value("world_size", 0);
  if (saved_world == dist.world() && static_cast<int64_t>(rng.size()) == per_rank * saved_world) {
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    cpu.set_state(rng[dist.rank()]);
    if (per_rank == 2) {
      at::Generator cuda = at::globalContext().defaultGenerator(dist.device());
      cuda.set_state(rng[saved_world + dist.rank()]);
    }
  } else {
    log::warn("checkpoint ", dir.string(), " was written by ", saved_world, " ranks (", rng.size(),
              " generator states); generators are not restored");
  }
  return s;
}

int64_t EpochOrder::at(int64_t g) {
  const int64_t epoch = g / n_;
  if (epoch != epoch_) {
    perm_.resize(n_);
    for (int64_t i = 0; i < n_; ++i) perm_[i] = i;
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch));
    for (int64_t i = n_ - 1; i > 0; --i) std::swap(perm_[i], perm_[rng() % static_cast<uint64_t>(i + 1)]);
    epoch_ = epoch;
  }
  return perm_[g % n_];
}

void truncate_metrics(const stdfs::path& file, int64_t step) {
  if (!stdfs::exists(file)) return;
  std::ifstream in(file);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) continue;  // a line cut short by a kill
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() > step)
      continue;
    kept += line + "\n";
  }
  fs::write_file_atomic(file, kept);
}

void run_training(const config::RunSection& run, const config::TrainSection& t, const stdfs::path& out,
                  const stdfs::path& tokenizer_dir, Runtime& rt, model::Llama& model, const Recipe& recipe) {
  Dist& dist = *rt.dist;
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
    state = load_checkpoint(*resume, model, opt, dist);
    log::info(name, ": resumed from ", resume->string(), " at step ", state.step);
  }
  if (dist.rank() == 0) {
    fs::ensure_dir(out);
    if (resume)
      truncate_metrics(out / "metrics.jsonl", state.step);
    else
      stdfs::remove(out / "metrics.jsonl");
  }
  std::unique_ptr<MetricsLog> metrics_file =
      dist.rank() == 0 ? std::make_unique<MetricsLog>(out / "metrics.jsonl") : std::make_unique<MetricsLog>();
  MetricsLog& metrics = *metrics_file;
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
  progress.update(state.step);
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
      MicroBatch mb = recipe.micro_batch(state.consumed, m);
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
    torch::Tensor sums = torch::cat(packed);
    dist.all_reduce_sum(sums, "loss all-reduce");
    sums = sums.cpu();
    const double loss = sums[0].item<double>() / static_cast<double>(world);
    const int64_t step_tokens = static_cast<int64_t>(sums[1].item<double>());
    const double grad_norm = torch::nn::utils::clip_grad_norm_(
        params, t.optim.grad_clip > 0 ? t.optim.grad_clip : std::numeric_limits<double>::infinity());
    const bool finite = std::isfinite(loss) && std::isfinite(grad_norm);
    if (finite) {
      opt.step();
    } else if (t.on_nonfinite == "stop") {
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
    if ((t.save_every > 0 && state.step % t.save_every == 0) || last)
      save_checkpoint(out, model, opt, state, dist, tokenizer_dir, t.keep_last);
    progress.update(state.step, str_cat("loss ", loss, " lr ", lr));
  }
  progress.finish();
  if (dist.rank() == 0) {
    model::save_llama(model, out / "final", torch::kFloat32, tokenizer_dir);
    log::info(name, ": done; the drafter is in ", (out / "final").string(), " (", state.tokens, " tokens, ",
              state.skipped, " skipped steps)");
  }
  dist.barrier("end-of-training barrier");
}

}  // namespace draftalign::train

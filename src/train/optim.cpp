#include "train/optim.h"

#include <cmath>
#include <sstream>

#include "common/error.h"
#include "common/fs.h"

namespace draftalign::train {

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

void save_tensors_atomic(const std::vector<torch::Tensor>& tensors, const stdfs::path& file) {
  // Serialized in memory first: torch's archive writer cannot fail cleanly midway (a failed write inside it ends in
  // std::terminate from its destructor), so the only writes that can fail are AtomicWriter's.
  std::ostringstream bytes;
  torch::save(tensors, bytes);
  fs::write_file_atomic(file, bytes.str());
}

void AdamW::save(const stdfs::path& file) const {
  std::vector<torch::Tensor> all;
  for (const Group& g : groups_)
    for (size_t i = 0; i < g.params.size(); ++i)
      all.insert(all.end(), {g.exp_avg[i].cpu(), g.exp_avg_sq[i].cpu(), g.steps[i].cpu()});
  save_tensors_atomic(all, file);
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

}  // namespace draftalign::train

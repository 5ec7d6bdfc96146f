// optim.h: the optimizer and its learning-rate schedule (llm.c's adamw + scheduler, one concern per header).
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <vector>

#include "config/config.h"

namespace draftalign::train {

namespace stdfs = std::filesystem;

// torch::save of `tensors` to `file` through fs::AtomicWriter: a failed write is an Error naming the file and the
// errno, and leaves what was at `file` as it was.
void save_tensors_atomic(const std::vector<torch::Tensor>& tensors, const stdfs::path& file);

// AdamW (decoupled weight decay, as torch.optim.AdamW) over a model's parameters, stepped by ATen's fused multi-tensor
// kernel (_fused_adamw_: one pass over each parameter, CPU and CUDA) instead of a dozen element-wise ops per parameter.
// Weight decay on matrices, none on norm weights (1-D). Its state is plain tensors in parameter order, saved and loaded
// as such: a resumed run continues bit for bit.
class AdamW {
 public:
  AdamW(const std::vector<torch::Tensor>& params, const config::OptimSection& o);

  void set_lr(double lr) { lr_ = lr; }
  double lr() const { return lr_; }
  // One update of every parameter that has a gradient.
  void step();
  void zero_grad();  // gradients set to undefined (freed)

  void save(const stdfs::path& file) const;
  // Errors name the file when it is unreadable or does not fit these parameters.
  void load(const stdfs::path& file);

 private:
  struct Group {
    double weight_decay = 0;
    std::vector<torch::Tensor> params, exp_avg, exp_avg_sq, steps;  // steps: fp32 scalars, as the kernel wants
  };
  Group groups_[2];  // [0] with weight decay, [1] without
  double lr_, beta1_, beta2_, eps_;
};

// Linear warm-up to optim.lr over warmup_steps, then cosine decay to optim.min_lr at `steps`.
double lr_at(int64_t step, const config::TrainSection& t);

}  // namespace draftalign::train

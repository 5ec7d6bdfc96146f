// dist.h: data parallelism over c10d, the process-group layer of torch.distributed, from C++.
//
// The world comes from the launcher's environment (launch_env.h: torchrun, or the tasks of an srun step, whose
// MASTER_ADDR and MASTER_PORT are the user's; anything else is one process). Rendezvous goes through a TCPStore
// (torchrun's agent store when it hosts one, else rank 0's). The backend is NCCL for CUDA tensors and Gloo for CPU
// tensors. Every collective waits at most `timeout`: a rank that dies or hangs makes the others fail with an Error
// naming the collective instead of waiting forever.
//
// GradSync all-reduces gradients in fixed-order buckets of about 25 MB while the backward pass is still running: a
// hook on each parameter copies its finished gradient into its bucket, and a full bucket is sent (buckets go out in
// index order, so every rank issues the same collectives in the same order).
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "train/launch_env.h"

namespace c10d {
class Backend;
class Work;
}  // namespace c10d

namespace draftalign::train {

class Dist {
 public:
  // A single process (world 1): every collective is the identity.
  Dist() = default;
  // Joins the process group of `env` for tensors on `device` (NCCL on CUDA, Gloo on CPU).
  Dist(const DistEnv& env, torch::Device device, std::chrono::milliseconds timeout);
  ~Dist();
  Dist(const Dist&) = delete;
  Dist& operator=(const Dist&) = delete;

  int rank() const { return env_.rank; }
  int world() const { return env_.world; }
  const DistEnv& env() const { return env_; }
  torch::Device device() const { return device_; }

  // In place, summed over ranks; blocking.
  void all_reduce_sum(torch::Tensor& t, const char* what);
  // Starts an in-place sum; wait() it (a null handle when world == 1).
  c10::intrusive_ptr<c10d::Work> all_reduce_sum_async(torch::Tensor& t);
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what);
  // Every rank's copy of `t` (same shape on all ranks), in rank order.
  std::vector<torch::Tensor> all_gather(const torch::Tensor& t, const char* what);
  // Rank 0's `t` into every rank's `t`.
  void broadcast(torch::Tensor& t, const char* what);
  void barrier(const char* what);

 private:
  DistEnv env_;
  torch::Device device_ = torch::kCPU;
  std::chrono::milliseconds timeout_{0};
  c10::intrusive_ptr<c10d::Backend> backend_;
};

class GradSync {
 public:
  // `params` in model order; buckets are filled from the last parameter to the first, the order backward produces them.
  GradSync(Dist& dist, std::vector<torch::Tensor> params, int64_t bucket_bytes = 25 << 20);
  ~GradSync();
  // Call before the backward pass of the last micro-batch of a step: its gradients (plus what earlier micro-batches
  // accumulated) go into the buckets as they are produced.
  void arm();
  // Call after that backward pass: sends the buckets not yet sent, waits, and leaves every parameter's .grad equal to
  // the mean over ranks.
  void finish();
  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket;
  void ready(size_t param);
  void launch_ready();

  Dist& dist_;
  std::vector<torch::Tensor> params_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<std::pair<size_t, int64_t>> slot_;  // param -> (bucket, offset)
  std::vector<bool> done_;
  std::vector<unsigned> hooks_;
  size_t next_launch_ = 0;
  bool armed_ = false;
};

}  // namespace draftalign::train

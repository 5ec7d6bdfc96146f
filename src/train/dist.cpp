#include "train/dist.h"

#include <thread>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#if DRAFTALIGN_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if DRAFTALIGN_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "common/error.h"
#include "common/log.h"

namespace draftalign::train {
namespace {

// Runs a collective's error through one message: which collective, which rank, and what to look at.
[[noreturn]] void collective_failed(const char* what, int rank, const std::string& why) {
  throw Error(str_cat("data-parallel ", what, " failed on rank ", rank, ": ", why.substr(0, 400),
                      "\n(another rank died, hung past run.dist_timeout_s, or the ranks disagree on the config)"));
}

// Starts a collective; a failure to start it is reported like a failure while waiting for it.
template <class F>
c10::intrusive_ptr<c10d::Work> start_collective(const char* what, int rank, F&& start) {
  try {
    return start();
  } catch (const std::exception& e) {
    collective_failed(what, rank, e.what());
  }
}

}  // namespace

Dist::Dist(const DistEnv& env, torch::Device device, std::chrono::milliseconds timeout)
    : env_(env), device_(device), timeout_(timeout) {
  if (env_.world == 1) return;
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env_.master_port);
  so.isServer = env_.rank == 0 && !env_.agent_store;
  so.numWorkers = env_.world;
  so.waitWorkers = false;
  so.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::PrefixStore>(
        "draftalign/", c10::make_intrusive<c10d::TCPStore>(env_.master_addr, so));
  } catch (const std::exception& e) {
    throw Error(str_cat("rank ", env_.rank, " could not reach the rendezvous store at ", env_.master_addr, ":",
                        env_.master_port, " within run.dist_timeout_s: ", std::string(e.what()).substr(0, 300)));
  }
  try {
    if (device.is_cuda()) {
#if DRAFTALIGN_WITH_NCCL
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      backend_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env_.rank, env_.world, opts);
#else
      throw Error("this build has no NCCL backend (nccl.h was not found at configure time)");
#endif
    } else {
#if DRAFTALIGN_WITH_GLOO
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      backend_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store, env_.rank, env_.world, opts);
#else
      throw Error("this build has no Gloo backend (the gloo headers, Debian's libgloo-dev, were not found)");
#endif
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    collective_failed("process-group setup", env_.rank, e.what());
  }
  log::info("data parallel: ", env_.world, " ranks, ", device.is_cuda() ? "NCCL" : "Gloo", " backend, rendezvous ",
            env_.master_addr, ":", env_.master_port);
  barrier("start-up barrier");
}

Dist::~Dist() = default;

void Dist::wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
  if (!work) return;
  try {
    work->wait(timeout_);
  } catch (const std::exception& e) {
    collective_failed(what, env_.rank, e.what());
  }
}

c10::intrusive_ptr<c10d::Work> Dist::all_reduce_sum_async(torch::Tensor& t) {
  if (env_.world == 1) return {};
  std::vector<torch::Tensor> ts = {t};
  return start_collective("all-reduce", env_.rank, [&] { return backend_->allreduce(ts); });
}

void Dist::all_reduce_sum(torch::Tensor& t, const char* what) {
  if (env_.world == 1) return;
  wait(all_reduce_sum_async(t), what);
}

std::vector<torch::Tensor> Dist::all_gather(const torch::Tensor& t, const char* what) {
  if (env_.world == 1) return {t.clone()};
  std::vector<std::vector<torch::Tensor>> out(1);
  for (int r = 0; r < env_.world; ++r) out[0].push_back(torch::empty_like(t));
  std::vector<torch::Tensor> in = {t.contiguous()};
  wait(start_collective(what, env_.rank, [&] { return backend_->allgather(out, in); }), what);
  return out[0];
}

void Dist::broadcast(torch::Tensor& t, const char* what) {
  if (env_.world == 1) return;
  std::vector<torch::Tensor> ts = {t};
  wait(start_collective(what, env_.rank, [&] { return backend_->broadcast(ts); }), what);
}

void Dist::barrier(const char* what) {
  if (env_.world == 1) return;
  // A one-element all-reduce: a barrier that fails like every other collective when a rank is gone.
  torch::Tensor t = torch::zeros({1}, torch::TensorOptions().device(device_));
  all_reduce_sum(t, what);
}

// --- GradSync ---------------------------------------------------------------------------------------------------------

struct GradSync::Bucket {
  torch::Tensor flat;
  std::vector<size_t> params;
  size_t pending = 0;
  bool launched = false;
  c10::intrusive_ptr<c10d::Work> work;
};

GradSync::GradSync(Dist& dist, std::vector<torch::Tensor> params, int64_t bucket_bytes)
    : dist_(dist), params_(std::move(params)) {
  if (dist_.world() == 1) return;
  slot_.resize(params_.size());
  done_.assign(params_.size(), false);
  // Reverse model order: the output layer's gradients are ready first.
  std::unique_ptr<Bucket> cur;
  int64_t cur_elems = 0;
  auto close = [&] {
    if (!cur) return;
    cur->flat = torch::zeros({cur_elems}, params_[cur->params.front()].options().dtype(torch::kFloat32));
    buckets_.push_back(std::move(cur));
    cur_elems = 0;
  };
  for (size_t k = params_.size(); k-- > 0;) {
    const torch::Tensor& p = params_[k];
    DA_CHECK(p.scalar_type() == torch::kFloat32, "GradSync: parameters must be fp32 (master weights)");
    if (!cur) cur = std::make_unique<Bucket>();
    slot_[k] = {buckets_.size(), cur_elems};
    cur->params.push_back(k);
    cur_elems += p.numel();
    if (cur_elems * 4 >= bucket_bytes) close();
  }
  close();
  for (size_t k = 0; k < params_.size(); ++k) {
    hooks_.push_back(params_[k].register_hook([this, k](torch::Tensor grad) {
      if (!armed_) return;
      auto [b, off] = slot_[k];
      torch::Tensor dst = buckets_[b]->flat.narrow(0, off, params_[k].numel());
      const torch::Tensor& acc = params_[k].grad();
      if (acc.defined())
        torch::add_out(dst, acc.reshape({-1}), grad.reshape({-1}));
      else
        dst.copy_(grad.reshape({-1}));
      ready(k);
    }));
  }
}

GradSync::~GradSync() {
  // Hooks hold `this`: clear them so a later backward does not call into a destroyed object.
  for (size_t k = 0; k < hooks_.size(); ++k) params_[k].remove_hook(hooks_[k]);
}

void GradSync::arm() {
  if (dist_.world() == 1) return;
  armed_ = true;
  next_launch_ = 0;
  std::fill(done_.begin(), done_.end(), false);
  for (auto& b : buckets_) b->pending = b->params.size(), b->launched = false, b->work = {};
}

void GradSync::ready(size_t k) {
  if (done_[k]) return;
  done_[k] = true;
  --buckets_[slot_[k].first]->pending;
  launch_ready();
}

void GradSync::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_]->pending == 0) {
    Bucket& b = *buckets_[next_launch_++];
    b.work = dist_.all_reduce_sum_async(b.flat);
    b.launched = true;
  }
}

void GradSync::finish() {
  if (dist_.world() == 1) return;
  armed_ = false;
  // Parameters that got no gradient in this backward: their accumulated gradient (or zero) goes in as it is.
  for (size_t k = 0; k < params_.size(); ++k) {
    if (done_[k]) continue;
    auto [b, off] = slot_[k];
    torch::Tensor dst = buckets_[b]->flat.narrow(0, off, params_[k].numel());
    if (params_[k].grad().defined())
      dst.copy_(params_[k].grad().reshape({-1}));
    else
      dst.zero_();
    ready(k);
  }
  const double inv = 1.0 / dist_.world();
  for (auto& b : buckets_) {
    dist_.wait(b->work, "gradient all-reduce");
    b->flat.mul_(inv);
    for (size_t k : b->params) {
      torch::Tensor src = b->flat.narrow(0, slot_[k].second, params_[k].numel()).view_as(params_[k]);
      if (params_[k].grad().defined())
        params_[k].mutable_grad().copy_(src);
      else
        params_[k].mutable_grad() = src.clone();
    }
  }
}

}  // namespace draftalign::train

#include "model/decode_graphs.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "common/error.h"

#if DRAFTALIGN_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace draftalign::model {

using torch::Tensor;

namespace {
std::atomic<bool> cuda_graphs_on{[] {
  const char* v = std::getenv("DRAFTALIGN_CUDA_GRAPHS");
  return v == nullptr || std::string(v) != "0";
}()};
}  // namespace

bool use_cuda_graphs(torch::Device device) { return device.is_cuda() && cuda_graphs_on.load(); }
void set_cuda_graphs(bool on) { cuda_graphs_on.store(on); }

struct DecodeGraphs::Graph {
  int64_t t = 0;
  bool ragged = false;
  Tensor tokens, n_new, logits;  // the static buffers the graph reads and writes
#if DRAFTALIGN_WITH_CUDA
  at::cuda::CUDAGraph graph;
#endif
};

DecodeGraphs::DecodeGraphs(Llama& model, KVCache& cache) : model_(model), cache_(cache) {}
DecodeGraphs::~DecodeGraphs() = default;
int64_t DecodeGraphs::graphs() const { return static_cast<int64_t>(graphs_.size()); }

Tensor DecodeGraphs::step(const Tensor& tokens, const Tensor& n_new) {
  torch::NoGradGuard no_grad;
  if (!use_cuda_graphs(cache_.lengths.device())) return model_.forward_static(tokens, cache_, n_new);
#if DRAFTALIGN_WITH_CUDA
  const int64_t t = tokens.size(1);
  const bool ragged = n_new.defined();
  for (auto& g : graphs_)
    if (g->t == t && g->ragged == ragged) {
      g->tokens.copy_(tokens, /*non_blocking=*/true);
      if (ragged) g->n_new.copy_(n_new, /*non_blocking=*/true);
      g->graph.replay();
      return g->logits.clone();
    }
  // First step of this shape: run it eagerly on a side stream (that is this step's result; it also warms up the
  // kernels' workspaces), roll the cache back, and capture the same step into a graph without running it.
  auto g = std::make_unique<Graph>();
  g->t = t, g->ragged = ragged;
  g->tokens = tokens.to(cache_.lengths.device()).clone();
  if (ragged) g->n_new = n_new.to(cache_.lengths.device()).clone();
  const c10::DeviceIndex index = cache_.lengths.get_device();
  const c10::cuda::CUDAStream main = c10::cuda::getCurrentCUDAStream(index);
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, index);
  at::cuda::CUDAEvent ready;
  ready.record(main);
  ready.block(side);
  Tensor result;
  {
    const c10::cuda::CUDAStreamGuard guard(side);
    result = model_.forward_static(g->tokens, cache_, g->n_new);
    const Tensor after = cache_.lengths.clone();
    cache_.lengths.sub_(ragged ? g->n_new : torch::full_like(cache_.lengths, t));
    g->graph.capture_begin();
    g->logits = model_.forward_static(g->tokens, cache_, g->n_new);
    g->graph.capture_end();
    cache_.lengths.copy_(after);  // capture ran nothing: the lengths are the eager step's
  }
  at::cuda::CUDAEvent done;
  done.record(side);
  done.block(main);
  graphs_.push_back(std::move(g));
  return result;
#else
  return model_.forward_static(tokens, cache_, n_new);
#endif
}

}  // namespace draftalign::model

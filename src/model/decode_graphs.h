// decode_graphs.h: a model's decode steps replayed from CUDA graphs (the generator's and the speculative decoder's
// short steps), and the switch that turns them off.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "model/llama.h"

namespace draftalign::model {

// Decode steps of a fixed shape, replayed from CUDA graphs: at batch 1 an eager step is some 35 kernel launches per
// layer, and the GPU waits on the CPU that issues them. For each token count T the first step runs eagerly on a side
// stream (it is the step's result), then forward_static is captured into a graph with static input buffers; later
// steps of that T copy their tokens (and n_new) in and replay it. The cache must keep its tensors (the graph writes
// into them): lowering cache.lengths in place (a rollback) is fine, replacing the cache is not. Without CUDA, or with
// graphs off (set_cuda_graphs), every step is forward_static run eagerly: the reference the graphs are tested against.
class DecodeGraphs {
 public:
  DecodeGraphs(Llama& model, KVCache& cache);
  ~DecodeGraphs();
  DecodeGraphs(const DecodeGraphs&) = delete;
  DecodeGraphs& operator=(const DecodeGraphs&) = delete;

  // Appends tokens [B, T] (row b's first n_new[b]; all T if undefined) like Llama::forward; returns logits [B, T, V],
  // a tensor of the caller's own.
  torch::Tensor step(const torch::Tensor& tokens, const torch::Tensor& n_new = {});
  int64_t graphs() const;  // graphs captured so far

 private:
  struct Graph;
  Llama& model_;
  KVCache& cache_;
  std::vector<std::unique_ptr<Graph>> graphs_;
};

// Whether decoding on `device` uses CUDA graphs: on CUDA unless turned off (on by default; off to time both side by
// side, or with DRAFTALIGN_CUDA_GRAPHS=0 in the environment).
bool use_cuda_graphs(torch::Device device);
void set_cuda_graphs(bool on);

}  // namespace draftalign::model

// kd_options.h: the options of a distillation loss (train/losses.h, kernels/tvd.h), torch-free.
#pragma once

#include "config/config.h"

namespace draftalign::train {

// The loss options: a view of the distill section's loss fields (of(d)), or set directly by tests and benchmarks.
struct KdOptions {
  config::Loss loss = config::Loss::kTvdpp;  // fkl, rkl, tvd, tvdpp (ce is not a distribution loss: distill.cpp)
  double temperature = 1.0;
  config::TvdppScope tvdpp_scope = config::TvdppScope::kToken;
  config::TvdppWeighting tvdpp_weighting = config::TvdppWeighting::kQ;
  config::TvdppStats tvdpp_stats = config::TvdppStats::kQ;  // the reward normalisation's mean and std
  double eps = 1e-6;                                        // in the reward normalisation

  static KdOptions of(const config::DistillSection& d) {
    return {d.loss, d.temperature, d.tvdpp_scope, d.tvdpp_weighting, d.tvdpp_stats};
  }
};

}  // namespace draftalign::train

// AdamW (train/optim.h) against LibTorch's torch::optim::AdamW, and its state's save/load.
#include <gtest/gtest.h>

#include "test_util.h"
#include "train/optim.h"

namespace draftalign::train {
namespace {

using testing::ScratchDir;

// Our fused AdamW against LibTorch's torch::optim::AdamW (the reference) over steps with changing learning rates,
// decay on matrices only; then its state survives save/load, and a state of other shapes is refused.
TEST(AdamW, MatchesTorchOptimAdamWAndRoundTrips) {
  torch::manual_seed(3);
  config::OptimSection o;
  o.weight_decay = 0.1, o.beta1 = 0.8, o.beta2 = 0.95, o.eps = 1e-8;
  std::vector<torch::Tensor> ours = {torch::randn({5, 7}), torch::randn({7}), torch::randn({3, 2})};
  std::vector<torch::Tensor> ref;
  for (auto& p : ours) ref.push_back(p.clone()), p.set_requires_grad(true), ref.back().set_requires_grad(true);
  AdamW adamw(ours, o);
  auto make = [&](const std::vector<torch::Tensor>& ps, double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{ref[0], ref[2]}, make({}, o.weight_decay));
  groups.emplace_back(std::vector<torch::Tensor>{ref[1]}, make({}, 0.0));
  torch::optim::AdamW reference(std::move(groups), torch::optim::AdamWOptions(o.lr));
  for (int step = 0; step < 6; ++step) {
    const double lr = 0.05 / (1 + step);
    adamw.set_lr(lr);
    for (auto& g : reference.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    for (size_t i = 0; i < ours.size(); ++i) {
      const torch::Tensor g = torch::randn(ours[i].sizes());
      ours[i].mutable_grad() = g.clone();
      ref[i].mutable_grad() = g.clone();
    }
    adamw.step();
    reference.step();
  }
  for (size_t i = 0; i < ours.size(); ++i)
    EXPECT_LT((ours[i] - ref[i]).abs().max().item<double>(), 1e-6) << "parameter " << i;

  ScratchDir d;
  adamw.save(d / "opt.pt");
  std::vector<torch::Tensor> copy;
  for (auto& p : ours) copy.push_back(p.detach().clone().set_requires_grad(true));
  AdamW restored(copy, o);
  restored.load(d / "opt.pt");
  restored.set_lr(adamw.lr());  // the learning rate comes from the schedule, not the state
  for (auto* a : {&adamw, &restored}) {
    auto& ps = a == &adamw ? ours : copy;
    for (auto& p : ps) p.mutable_grad() = torch::ones(p.sizes());
    a->step();
  }
  for (size_t i = 0; i < ours.size(); ++i) EXPECT_TRUE(torch::equal(ours[i], copy[i])) << "parameter " << i;

  std::vector<torch::Tensor> other = {torch::randn({5, 6}, torch::requires_grad()), torch::randn({7}), torch::randn({3, 2})};
  AdamW wrong(other, o);
  const std::string e = testing::error_of([&] { wrong.load(d / "opt.pt"); });
  EXPECT_HAS(e, (d / "opt.pt").string());
  EXPECT_HAS(e, "has shape");
}

}  // namespace
}  // namespace draftalign::train

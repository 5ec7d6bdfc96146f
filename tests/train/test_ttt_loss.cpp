// The EAGLE-3 training-time-test objective: sum_i 0.8^i loss_i over the positions whose target argmax is in the draft
// vocabulary, the teacher restricted to the draft tokens; a masked position gets no gradient. The reference builds the
// rows position by position.
#include <gtest/gtest.h>

#include "train/ttt_loss.h"

namespace draftalign::train {
namespace {

using torch::Tensor;

TEST(TttLoss, DecayedStepLossesOverInVocabularyPositions) {
  torch::manual_seed(5);
  const int64_t B = 2, T = 4, V = 10, k = 3;
  const Tensor draft_ids = torch::tensor({0, 2, 3, 5, 7});
  std::vector<Tensor> head, teacher, mask;
  for (int64_t i = 0; i < k; ++i) {
    head.push_back(torch::randn({B, T, 5}, torch::requires_grad()));
    teacher.push_back(torch::randn({B, T, V}));
    mask.push_back(torch::rand({B, T}) < 0.8);
  }
  teacher[1].index_put_({0, 1, 1}, 20.0);  // the target's argmax there is token 1, outside the draft vocabulary
  mask[1].index_put_({0, 1}, true);
  for (config::Loss loss : {config::Loss::kFkl, config::Loss::kTvd, config::Loss::kTvdpp}) {
    KdOptions kd;
    kd.loss = loss;
    const TttLoss got = ttt_loss(head, teacher, mask, draft_ids, kd);
    double want = 0, weight = 1;
    for (int64_t i = 0; i < k; ++i, weight *= 0.8) {
      std::vector<Tensor> s, t;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t p = 0; p < T; ++p) {
          const int64_t top = teacher[i][b][p].argmax().item<int64_t>();
          const bool in = top == 0 || top == 2 || top == 3 || top == 5 || top == 7;
          if (!mask[i][b][p].item<bool>() || !in) continue;
          s.push_back(head[i][b][p]);
          t.push_back(teacher[i][b][p].index_select(0, draft_ids));
        }
      ASSERT_EQ(got.step_rows[i], static_cast<int64_t>(s.size())) << "step " << i;
      if (!s.empty()) want += weight * kd_loss(torch::stack(s), torch::stack(t), kd).item<double>();
    }
    EXPECT_NEAR(got.loss.item<double>(), want, 1e-5 * (1 + std::abs(want)));
    for (auto& h : head) h.mutable_grad() = Tensor();
    got.loss.backward();
    EXPECT_EQ(head[1].grad()[0][1].abs().sum().item<double>(), 0.0);  // masked: out of the draft vocabulary
  }
}

}  // namespace
}  // namespace draftalign::train

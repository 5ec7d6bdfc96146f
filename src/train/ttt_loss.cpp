#include "train/ttt_loss.h"

#include <cmath>

#include "common/error.h"

namespace draftalign::train {

using torch::Tensor;

TttLoss ttt_loss(const std::vector<Tensor>& head_logits, const std::vector<Tensor>& teacher,
                 const std::vector<Tensor>& mask, const Tensor& draft_ids, const KdOptions& kd, double decay) {
  DA_CHECK(!head_logits.empty() && teacher.size() == head_logits.size() && mask.size() == head_logits.size(),
           "ttt_loss: ", head_logits.size(), " head steps, ", teacher.size(), " teacher steps, ", mask.size(), " masks");
  const int64_t V = teacher[0].size(-1);
  // Target id -> is a draft token.
  const Tensor in_vocab = torch::zeros({V}, draft_ids.options().dtype(torch::kBool)).index_fill_(0, draft_ids, true);
  TttLoss out;
  out.loss = torch::zeros({}, head_logits[0].options().dtype(torch::kFloat32));
  double weight = 1.0;
  for (size_t i = 0; i < head_logits.size(); ++i, weight *= decay) {
    const Tensor& student = head_logits[i];
    DA_CHECK(student.dim() == 3 && student.size(-1) == draft_ids.size(0) && teacher[i].dim() == 3 &&
                 teacher[i].sizes().slice(0, 2) == student.sizes().slice(0, 2) && mask[i].sizes() == student.sizes().slice(0, 2),
             "ttt_loss: step ", i, ": head logits ", student.sizes(), ", teacher ", teacher[i].sizes(), ", mask ",
             mask[i].sizes(), " do not line up");
    const Tensor target_top = teacher[i].argmax(-1);                        // [B, T] target ids
    const Tensor rows = mask[i].logical_and(in_vocab.index({target_top}));  // EAGLE-3's position mask
    const int64_t n = rows.sum().item<int64_t>();
    out.step_rows.push_back(n);
    {
      torch::NoGradGuard no_grad;
      const Tensor mine = draft_ids.index({student.argmax(-1)});  // as target ids
      const int64_t positions = mask[i].sum().item<int64_t>();
      out.step_agree.push_back(positions == 0 ? 0.0
                                              : mine.eq(target_top).logical_and(mask[i]).sum().item<double>() /
                                                    static_cast<double>(positions));
    }
    if (n == 0) {
      out.step_loss.push_back(0.0);
      continue;
    }
    const Tensor s = student.index({rows});                                      // [n, Vd]
    const Tensor t = teacher[i].index({rows}).index_select(-1, draft_ids);        // [n, Vd]
    const Tensor loss = kd_loss(s, t, kd);
    out.step_loss.push_back(loss.item<double>());
    out.loss = out.loss + weight * loss.to(torch::kFloat32);
  }
  return out;
}

}  // namespace draftalign::train

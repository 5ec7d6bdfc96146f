#include "evaluators/onepass.h"

#include "common/error.h"
#include "model/generation.h"

namespace draftalign::eval {

std::vector<GreedyAnswer> greedy_answers(model::Llama& target, const std::vector<std::vector<int64_t>>& prompts,
                                         int64_t max_new, int64_t extra, const std::vector<int64_t>& stop_ids,
                                         int64_t batch_size, const std::function<void(int64_t)>& on_token) {
  torch::NoGradGuard no_grad;
  model::SamplingParams sp;
  sp.temperature = 0, sp.max_new_tokens = max_new + extra;  // no stop ids: the continuation runs past the answer
  std::vector<model::Request> requests;
  for (size_t i = 0; i < prompts.size(); ++i) requests.push_back({static_cast<int64_t>(i), prompts[i], 0});
  model::Generator gen(target, sp, std::max<int64_t>(1, std::min<int64_t>(batch_size, prompts.size())));
  std::vector<GreedyAnswer> out;
  for (auto& c : gen.run(requests, on_token)) {
    GreedyAnswer a;
    a.emitted = cut_answer(c.tokens, max_new, stop_ids);
    a.tokens = std::move(c.tokens);
    out.push_back(std::move(a));
  }
  return out;
}

std::vector<int64_t> teacher_forced_argmax(model::Llama& drafter, const std::vector<int64_t>& prompt,
                                           const std::vector<int64_t>& continuation) {
  DA_CHECK(!prompt.empty() && !continuation.empty(), "teacher_forced_argmax: empty prompt or continuation");
  const int64_t p = static_cast<int64_t>(prompt.size()), n = static_cast<int64_t>(continuation.size());
  DA_CHECK(p + n - 1 <= drafter.config().max_position_embeddings, "teacher_forced_argmax: ", p + n - 1,
           " tokens exceed the drafter's ", drafter.config().max_position_embeddings, " positions");
  torch::NoGradGuard no_grad;
  std::vector<int64_t> seq = prompt;
  seq.insert(seq.end(), continuation.begin(), continuation.end() - 1);
  const torch::Device device = drafter.parameters()[0].device();
  const torch::Tensor x = torch::tensor(seq, torch::kInt64).view({1, -1}).to(device);
  // Only the positions that predict the continuation go through the output head.
  const torch::Tensor h = drafter.hidden(x).narrow(1, p - 1, n);
  const torch::Tensor best = drafter.logits(h).squeeze(0).argmax(-1).cpu().contiguous();
  return std::vector<int64_t>(best.data_ptr<int64_t>(), best.data_ptr<int64_t>() + n);
}

}  // namespace draftalign::eval

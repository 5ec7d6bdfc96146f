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

namespace {

// The logits of `model` predicting each continuation token: [n, V], one forward over prompt + continuation minus its
// last token, with only those n positions through the output head.
torch::Tensor teacher_forced_logits(model::Llama& model, const std::vector<int64_t>& prompt,
                                    const std::vector<int64_t>& continuation) {
  DA_CHECK(!prompt.empty() && !continuation.empty(), "teacher-forced pass: empty prompt or continuation");
  const int64_t p = static_cast<int64_t>(prompt.size()), n = static_cast<int64_t>(continuation.size());
  DA_CHECK(p + n - 1 <= model.config().max_position_embeddings, "teacher-forced pass: ", p + n - 1,
           " tokens exceed the model's ", model.config().max_position_embeddings, " positions");
  std::vector<int64_t> seq = prompt;
  seq.insert(seq.end(), continuation.begin(), continuation.end() - 1);
  const torch::Device device = model.parameters()[0].device();
  const torch::Tensor x = torch::tensor(seq, torch::kInt64).view({1, -1}).to(device);
  return model.logits(model.hidden(x).narrow(1, p - 1, n)).squeeze(0);
}

}  // namespace

std::vector<int64_t> teacher_forced_argmax(model::Llama& drafter, const std::vector<int64_t>& prompt,
                                           const std::vector<int64_t>& continuation) {
  torch::NoGradGuard no_grad;
  const torch::Tensor best = teacher_forced_logits(drafter, prompt, continuation).argmax(-1).cpu().contiguous();
  return std::vector<int64_t>(best.data_ptr<int64_t>(), best.data_ptr<int64_t>() + best.numel());
}

std::vector<std::vector<int64_t>> sampled_answers(model::Llama& target, const std::vector<std::vector<int64_t>>& prompts,
                                                  const std::vector<uint64_t>& seeds, const model::SamplingParams& sp,
                                                  int64_t batch_size, const std::function<void(int64_t)>& on_token) {
  DA_CHECK(seeds.size() == prompts.size(), "sampled_answers: one seed per prompt");
  torch::NoGradGuard no_grad;
  std::vector<model::Request> requests;
  for (size_t i = 0; i < prompts.size(); ++i) requests.push_back({static_cast<int64_t>(i), prompts[i], seeds[i]});
  model::Generator gen(target, sp, std::max<int64_t>(1, std::min<int64_t>(batch_size, prompts.size())));
  std::vector<std::vector<int64_t>> out;
  for (auto& c : gen.run(requests, on_token)) out.push_back(std::move(c.tokens));
  return out;
}

torch::Tensor teacher_forced_probs(model::Llama& model, const std::vector<int64_t>& prompt,
                                   const std::vector<int64_t>& continuation, const model::SamplingParams& sp) {
  torch::NoGradGuard no_grad;
  return model::sampling_probs(teacher_forced_logits(model, prompt, continuation).to(torch::kFloat32), sp.temperature,
                               sp.top_p, sp.top_k);
}


std::vector<std::vector<int64_t>> teacher_forced_head_drafts(model::Llama& target, model::Eagle3Head& head,
                                                             const std::vector<int64_t>& prompt,
                                                             const std::vector<int64_t>& continuation, int64_t gamma) {
  DA_CHECK(prompt.size() >= 2, "teacher_forced_head_drafts: an EAGLE-3 head needs a prompt of 2 tokens at least");
  DA_CHECK(gamma >= 1, "teacher_forced_head_drafts: gamma must be at least 1");
  torch::NoGradGuard no_grad;
  std::vector<int64_t> s = prompt;
  s.insert(s.end(), continuation.begin(), continuation.end());
  const int64_t N = static_cast<int64_t>(s.size()), P = static_cast<int64_t>(prompt.size());
  const torch::Device device = head.parameters().front().device();
  const torch::Tensor read = torch::tensor(std::vector<int64_t>(s.begin(), s.end() - 1)).view({1, N - 1}).to(device);
  model::Taps taps;
  taps.at = head.config().taps;
  target.hidden(read, {}, &taps);
  const torch::Tensor g = head.project(taps.out);  // [1, N - 1, hidden]: position t has read s[0..t]
  std::vector<torch::Tensor> inputs;
  for (int64_t j = 0; j < gamma; ++j) {
    std::vector<int64_t> row(static_cast<size_t>(N - 1), 0);
    for (int64_t t = 0; t + 1 + j < N && t < N - 1; ++t) row[static_cast<size_t>(t)] = s[static_cast<size_t>(t + 1 + j)];
    inputs.push_back(torch::tensor(row).view({1, N - 1}).to(device));
  }
  const std::vector<torch::Tensor> steps = head.unroll(g, inputs);
  std::vector<torch::Tensor> best;  // per step: [N - 1] target ids
  for (const auto& h : steps) best.push_back(head.to_target(head.logits(h).argmax(-1)).view({-1}).cpu().contiguous());
  std::vector<std::vector<int64_t>> drafts;
  for (int64_t i = 0; i < static_cast<int64_t>(continuation.size()); ++i) {
    const int64_t t = P + i - 2;
    std::vector<int64_t> d;
    for (int64_t j = 0; j < gamma; ++j) d.push_back(best[static_cast<size_t>(j)][t].item<int64_t>());
    drafts.push_back(std::move(d));
  }
  return drafts;
}

}  // namespace draftalign::eval

#include "evaluators/onepass.h"

#include <functional>

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


namespace {

// One chain step of every chain: logits [n, V] -> each chain's greedy token (through `to_ids`, e.g. a draft
// vocabulary's map to the target's; identity when undefined) and the probability it was given.
void extend_chains(const torch::Tensor& logits, DraftChains& chains,
                   const std::function<torch::Tensor(const torch::Tensor&)>& to_ids = {}) {
  const auto [top, best] = torch::softmax(logits.to(torch::kFloat32), -1).max(-1);
  const torch::Tensor t = (to_ids ? to_ids(best) : best).cpu().contiguous(), p = top.cpu().contiguous();
  const int64_t* ids = t.data_ptr<int64_t>();
  const float* prob = p.data_ptr<float>();
  for (size_t i = 0; i < chains.tokens.size(); ++i) {
    chains.tokens[i].push_back(ids[i]);
    chains.top_prob[i].push_back(prob[i]);
  }
}

}  // namespace

DraftChains teacher_forced_chains(model::Llama& drafter, const std::vector<int64_t>& prompt,
                                  const std::vector<int64_t>& continuation, int64_t gamma) {
  DA_CHECK(gamma >= 1, "teacher_forced_chains: gamma must be at least 1");
  torch::NoGradGuard no_grad;
  const int64_t P = static_cast<int64_t>(prompt.size()), n = static_cast<int64_t>(continuation.size());
  DraftChains chains;
  chains.tokens.resize(static_cast<size_t>(n)), chains.top_prob.resize(static_cast<size_t>(n));
  extend_chains(teacher_forced_logits(drafter, prompt, continuation), chains);  // step 0: the plain pass
  if (gamma == 1) return chains;
  const torch::Device device = drafter.parameters()[0].device();
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64).device(device);
  std::vector<int64_t> base = prompt;
  base.insert(base.end(), continuation.begin(), continuation.end() - 1);
  const int64_t M = static_cast<int64_t>(base.size());
  const torch::Tensor chain_of = torch::arange(n, i64);  // which chain a step entry belongs to
  for (int64_t j = 1; j < gamma; ++j) {
    // The sequence: the shared prefix, then steps 0..j-1 of every chain (n entries a step). An entry's `step` is -1
    // for the prefix; `key_end` is the prefix length it may read (its own index + 1 for the prefix, P + i for chain i).
    std::vector<torch::Tensor> tokens = {torch::tensor(base, i64)}, step = {torch::full({M}, -1, i64)},
                               chain = {torch::full({M}, -1, i64)}, positions = {torch::arange(M, i64)},
                               key_end = {torch::arange(1, M + 1, i64)};
    for (int64_t k = 0; k < j; ++k) {
      std::vector<int64_t> col;
      for (const auto& c : chains.tokens) col.push_back(c[static_cast<size_t>(k)]);
      tokens.push_back(torch::tensor(col, i64));
      step.push_back(torch::full({n}, k, i64));
      chain.push_back(chain_of);
      positions.push_back(chain_of + (P + k));
      key_end.push_back(chain_of + P);
    }
    const torch::Tensor s = torch::cat(step), c = torch::cat(chain), end = torch::cat(key_end);
    const int64_t T = s.size(0);
    const torch::Tensor key = torch::arange(T, i64).view({1, T});
    // Query r reads a prefix key t < end[r], and a chain key of its own chain at a step up to its own.
    const torch::Tensor prefix_key = (s.view({1, T}) < 0).logical_and(key < end.view({T, 1}));
    const torch::Tensor chain_key = (s.view({1, T}) >= 0)
                                        .logical_and(c.view({1, T}) == c.view({T, 1}))
                                        .logical_and(s.view({1, T}) <= s.view({T, 1}));
    const torch::Tensor mask = prefix_key.logical_or(chain_key).view({1, 1, T, T});
    const torch::Tensor h = drafter.hidden(torch::cat(tokens).view({1, T}), torch::cat(positions).view({1, T}), mask);
    extend_chains(drafter.logits(h.narrow(1, T - n, n)).squeeze(0), chains);
  }
  return chains;
}

DraftChains teacher_forced_head_drafts(model::Llama& target, model::Eagle3Head& head, const std::vector<int64_t>& prompt,
                                       const std::vector<int64_t>& continuation, int64_t gamma,
                                       DraftChains* answer_path) {
  DA_CHECK(prompt.size() >= 2, "teacher_forced_head_drafts: an EAGLE-3 head needs a prompt of 2 tokens at least");
  DA_CHECK(gamma >= 1, "teacher_forced_head_drafts: gamma must be at least 1");
  torch::NoGradGuard no_grad;
  std::vector<int64_t> s = prompt;
  s.insert(s.end(), continuation.begin(), continuation.end());
  const int64_t N = static_cast<int64_t>(s.size()), P = static_cast<int64_t>(prompt.size());
  const int64_t n = static_cast<int64_t>(continuation.size());
  const torch::Device device = head.parameters().front().device();
  const torch::Tensor read = torch::tensor(std::vector<int64_t>(s.begin(), s.end() - 1)).view({1, N - 1}).to(device);
  model::Taps taps;
  taps.at = head.config().taps;
  target.hidden(read, {}, &taps);
  const torch::Tensor g = head.project(taps.out);  // [1, N - 1, hidden]: position t has read s[0..t]
  const torch::Tensor next = torch::tensor(std::vector<int64_t>(s.begin() + 1, s.end())).view({1, N - 1}).to(device);
  // Prefix s[0..P + i) puts the head at t = P + i - 2; the chains in target ids.
  auto chains_of = [&](const std::vector<torch::Tensor>& steps) {
    DraftChains chains;
    chains.tokens.resize(static_cast<size_t>(n)), chains.top_prob.resize(static_cast<size_t>(n));
    for (const auto& h : steps)
      extend_chains(head.logits(h.narrow(1, P - 2, n)).squeeze(0), chains,
                    [&](const torch::Tensor& ids) { return head.to_target(ids); });
    return chains;
  };
  if (answer_path != nullptr) {
    std::vector<torch::Tensor> inputs;  // step j at t embeds s[t + 1 + j] (token 0 past the end: never compared)
    for (int64_t j = 0; j < gamma; ++j) {
      std::vector<int64_t> row(static_cast<size_t>(N - 1), 0);
      for (int64_t t = 0; t + 1 + j < N; ++t) row[static_cast<size_t>(t)] = s[static_cast<size_t>(t + 1 + j)];
      inputs.push_back(torch::tensor(row).view({1, N - 1}).to(device));
    }
    *answer_path = chains_of(head.unroll(g, inputs));
  }
  return chains_of(head.draft_chain(g, next, gamma));
}

}  // namespace draftalign::eval

// onepass.h: the model side of exact greedy tau from one pass (acceptance.h): the target's greedy answers, decoded
// once for all prompts with the continuous-batching generator, and a drafter's argmax after every prefix of an
// answer, from one teacher-forced forward pass over prompt + answer.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "evaluators/acceptance.h"
#include "model/llama.h"

namespace draftalign::eval {

// The target's greedy continuation of each prompt, max_new + extra tokens long (it does not stop at a stop token: a
// draft verified at the end of the answer reads past it), cut at the first of `stop_ids` or max_new for `emitted`.
// `on_token(n)` reports progress.
std::vector<GreedyAnswer> greedy_answers(model::Llama& target, const std::vector<std::vector<int64_t>>& prompts,
                                         int64_t max_new, int64_t extra, const std::vector<int64_t>& stop_ids,
                                         int64_t batch_size, const std::function<void(int64_t)>& on_token = {});

// The drafter's most likely token after prompt + continuation[0..i), for i = 0 .. continuation.size() - 1: one
// forward pass over prompt + continuation minus its last token.
std::vector<int64_t> teacher_forced_argmax(model::Llama& drafter, const std::vector<int64_t>& prompt,
                                           const std::vector<int64_t>& continuation);

}  // namespace draftalign::eval

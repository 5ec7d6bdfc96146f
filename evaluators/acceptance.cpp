#include "evaluators/acceptance.h"

#include <algorithm>

#include "common/error.h"

namespace draftalign::eval {

int64_t cut_answer(const std::vector<int64_t>& tokens, int64_t max_new, const std::vector<int64_t>& stop_ids) {
  const int64_t n = std::min<int64_t>(max_new, static_cast<int64_t>(tokens.size()));
  for (int64_t i = 0; i < n; ++i)
    if (std::find(stop_ids.begin(), stop_ids.end(), tokens[i]) != stop_ids.end()) return i + 1;
  return n;
}

std::vector<int64_t> prompt_lookup(const std::vector<int64_t>& context, int64_t k, int64_t n_min, int64_t n_max) {
  DA_CHECK(k >= 1 && n_min >= 1 && n_max >= n_min, "prompt_lookup: k = ", k, ", n from ", n_min, " to ", n_max);
  const int64_t len = static_cast<int64_t>(context.size());
  for (int64_t n = std::min(n_max, len - 1); n >= n_min; --n) {
    const int64_t tail = len - n;  // the trailing n-gram is context[tail..len)
    // The latest earlier occurrence: start s < tail with context[s..s+n) == the trailing n-gram.
    for (int64_t s = tail - 1; s >= 0; --s) {
      if (!std::equal(context.begin() + s, context.begin() + s + n, context.begin() + tail)) continue;
      const int64_t from = s + n, to = std::min(len, from + k);
      return std::vector<int64_t>(context.begin() + from, context.begin() + to);
    }
  }
  return {};
}

}  // namespace draftalign::eval

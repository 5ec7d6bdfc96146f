#include "config/config.h"

#include <utility>

#include "common/error.h"

namespace draftalign::config {
namespace {

void check_train(const TrainSection& t, const std::string& at, std::vector<Config::Problem>& out) {
  if (t.optim.min_lr > t.optim.lr)
    out.push_back({at + ".optim.min_lr", str_cat("must not exceed ", at, ".optim.lr (", t.optim.lr, ")")});
  if (t.optim.warmup_steps > t.steps)
    out.push_back({at + ".optim.warmup_steps", str_cat("must not exceed ", at, ".steps (", t.steps, ")")});
}

}  // namespace

std::vector<Config::Problem> Config::cross_checks() const {
  std::vector<Problem> out;
  const io::LlamaConfig& m = pretrain.model.llama;
  if (m.hidden_size % m.num_attention_heads != 0)
    out.push_back({"pretrain.model.num_heads", str_cat("must divide pretrain.model.hidden_size (", m.hidden_size,
                                                       ")")});
  if (m.num_attention_heads % m.num_key_value_heads != 0)
    out.push_back({"pretrain.model.num_kv_heads", str_cat("must divide pretrain.model.num_heads (", m.num_attention_heads,
                                                          ")")});
  if (m.num_attention_heads > 0 && (m.hidden_size / m.num_attention_heads) % 2 != 0)
    out.push_back({"pretrain.model.num_heads", "hidden_size / num_heads (the head dim) must be even for RoPE"});
  if (pretrain.train.seq_len > m.max_position_embeddings)
    out.push_back({"pretrain.train.seq_len", str_cat("must not exceed pretrain.model.max_seq_len (", m.max_position_embeddings,
                                                     ")")});
  check_train(pretrain.train, "pretrain.train", out);
  check_train(distill.train, "distill.train", out);
  if (distill.kd_weight == 0 && distill.ce_weight == 0)
    out.push_back({"distill.kd_weight", "kd_weight and ce_weight are both 0: nothing to train"});
  if (!generate.prompt_weights.empty() && generate.prompt_weights.size() != generate.prompts.size())
    out.push_back({"generate.prompt_weights", str_cat("has ", generate.prompt_weights.size(), " weights for ",
                                                      generate.prompts.size(), " files in generate.prompts")});
  if (magpie.min_chars > magpie.max_chars)
    out.push_back({"magpie.min_chars", str_cat("must not exceed magpie.max_chars (", magpie.max_chars, ")")});
  if (distill.on_policy_fraction > 0 && distill.teacher != Teacher::kOnline)
    out.push_back({"distill.on_policy_fraction", "on-policy responses need distill.teacher = online: the stored top-k "
                                                 "log-probs score only the target's own answers"});
  for (const auto& [key, empty] : {std::pair<const char*, bool>{"evaluate.drafters",
                                                                evaluate.drafters.empty() && !evaluate.prompt_lookup},
                                   {"evaluate.prompts", evaluate.prompts.empty()},
                                   {"evaluate.exact_gammas", evaluate.exact_gammas.empty()},
                                   {"evaluate.gammas", evaluate.gammas.empty()},
                                   {"evaluate.temperatures", evaluate.temperatures.empty()}})
    if (empty) out.push_back({key, "must not be empty"});
  if (evaluate.prompt_lookup_max < evaluate.prompt_lookup_min)
    out.push_back({"evaluate.prompt_lookup_max", str_cat("must be at least evaluate.prompt_lookup_min (",
                                                         evaluate.prompt_lookup_min, ")")});
  return out;
}

std::vector<std::string> distill_run_choices() {
  std::vector<std::string> out;
  for (const char* loss : EnumNames<Loss>::names) out.push_back(loss);
  for (const char* scope : EnumNames<TvdppScope>::names)
    for (const char* weighting : EnumNames<TvdppWeighting>::names)
      for (const char* stats : {"", "-vocab"}) out.push_back(str_cat("tvdpp-", scope, "-", weighting, stats));
  return out;
}

DistillSection with_run(DistillSection d, const std::string& run) {
  const std::vector<std::string> choices = distill_run_choices();
  index_of_name(run, choices, "pipeline.losses");
  if (run.rfind("tvdpp-", 0) != 0) {
    d.loss = enum_from<Loss>(run, "pipeline.losses");
    return d;
  }
  // tvdpp-<scope>-<weighting>[-vocab]: no name of a scope or weighting holds a '-'.
  const size_t a = run.find('-', 6), b = run.find('-', a + 1);
  d.loss = Loss::kTvdpp;
  d.tvdpp_scope = enum_from<TvdppScope>(run.substr(6, a - 6), "pipeline.losses");
  d.tvdpp_weighting = enum_from<TvdppWeighting>(run.substr(a + 1, b == std::string::npos ? b : b - a - 1),
                                                "pipeline.losses");
  d.tvdpp_stats = b == std::string::npos ? TvdppStats::kQ : enum_from<TvdppStats>(run.substr(b + 1), "pipeline.losses");
  return d;
}

}  // namespace draftalign::config

#include "config/config.h"

#include <filesystem>
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
  if (pretrain.model.draft_vocab_size > m.vocab_size)
    out.push_back({"pretrain.model.draft_vocab_size",
                   str_cat(pretrain.model.draft_vocab_size, " is larger than the vocabulary (pretrain.model.vocab_size ",
                           m.vocab_size, ")")});
  check_train(pretrain.train, "pretrain.train", out);
  if (pretrain.teacher == PretrainTeacher::kTarget) {
    if (pretrain.kd_loss == Loss::kCe)
      out.push_back({"pretrain.kd_loss", "ce is not a distribution loss: use ce_weight for the corpus's next token"});
    if (pretrain.kd_weight == 0 && pretrain.ce_weight == 0)
      out.push_back({"pretrain.kd_weight", "kd_weight and ce_weight are both 0: nothing to train"});
  }
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
  if (distill.kind == DrafterKind::kEagle3) {
    if (distill.teacher != Teacher::kOnline)
      out.push_back({"distill.teacher", "distill.kind = eagle3 reads the target's hidden states and logits as it "
                                        "trains: it needs distill.teacher = online"});
    if (!distill.eagle3.taps.empty() && distill.eagle3.taps.size() != 3)
      out.push_back({"distill.eagle3.taps", str_cat("lists ", distill.eagle3.taps.size(), " indices; an EAGLE-3 head "
                                                    "reads 3 (or [] for 2, L/2, L-3)")});
    for (size_t i = 1; i < distill.eagle3.taps.size(); ++i)
      if (distill.eagle3.taps[i] <= distill.eagle3.taps[i - 1])
        out.push_back({"distill.eagle3.taps", "must be ascending and distinct"});
    if (distill.eagle3.corpus_fraction > 0 && distill.eagle3.corpus.empty())
      out.push_back({"distill.eagle3.corpus_fraction", "needs distill.eagle3.corpus (the token shards)"});
  }
  for (const auto& [key, empty] : {std::pair<const char*, bool>{"evaluate.drafters",
                                                                evaluate.drafters.empty() && !evaluate.prompt_lookup},
                                   {"evaluate.prompts", evaluate.prompts.empty()},
                                   {"evaluate.exact_gammas", evaluate.exact_gammas.empty()},
                                   {"evaluate.gammas", evaluate.gammas.empty()},
                                   {"evaluate.temperatures", evaluate.temperatures.empty()}})
    if (empty) out.push_back({key, "must not be empty"});
  for (size_t i = 0; i < pipeline.seeds.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (pipeline.seeds[i] == pipeline.seeds[j])
        out.push_back({"pipeline.seeds", str_cat("seed ", pipeline.seeds[i], " is listed twice (entries ", j, " and ", i,
                                                 "): each seed is one training run")});
  if (pipeline.seed_pretraining && pipeline.seeds.empty())
    out.push_back({"pipeline.seed_pretraining", "needs pipeline.seeds: the seeds to pretrain with"});
  if (evaluate.prompt_lookup_max < evaluate.prompt_lookup_min)
    out.push_back({"evaluate.prompt_lookup_max", str_cat("must be at least evaluate.prompt_lookup_min (",
                                                         evaluate.prompt_lookup_min, ")")});
  return out;
}

TrainSection distill_train(const DistillSection& d) {
  TrainSection t = d.train;
  if (d.kind != DrafterKind::kEagle3) return t;
  if (d.eagle3.steps > 0) t.steps = d.eagle3.steps;
  if (d.eagle3.lr > 0) {
    t.optim.min_lr = t.optim.lr > 0 ? t.optim.min_lr * d.eagle3.lr / t.optim.lr : 0;
    t.optim.lr = d.eagle3.lr;
  }
  return t;
}

std::string loss_run_name(const DistillSection& d) {
  std::string name = name_of(d.loss);
  if (d.loss == Loss::kTvdpp)
    name += str_cat("-", d.tvdpp_scope, "-", d.tvdpp_weighting,
                    d.tvdpp_stats == TvdppStats::kQ ? std::string() : str_cat("-", d.tvdpp_stats));
  return name;
}

namespace {

// Every TVD++ variant: `d` with each scope, weighting and statistic in turn.
std::vector<DistillSection> tvdpp_variants(const DistillSection& d) {
  std::vector<DistillSection> out;
  for (size_t scope = 0; scope < EnumNames<TvdppScope>::names.size(); ++scope)
    for (size_t weighting = 0; weighting < EnumNames<TvdppWeighting>::names.size(); ++weighting)
      for (size_t stats = 0; stats < EnumNames<TvdppStats>::names.size(); ++stats) {
        DistillSection v = d;
        v.loss = Loss::kTvdpp;
        v.tvdpp_scope = static_cast<TvdppScope>(scope);
        v.tvdpp_weighting = static_cast<TvdppWeighting>(weighting);
        v.tvdpp_stats = static_cast<TvdppStats>(stats);
        out.push_back(v);
      }
  return out;
}

}  // namespace

namespace {
constexpr const char* kEagle3Prefix = "eagle3-";

// The model drafter's run names: the bare losses, then tvdpp_variants in order.
std::vector<std::string> model_run_choices() {
  std::vector<std::string> out(EnumNames<Loss>::names.begin(), EnumNames<Loss>::names.end());
  for (const DistillSection& v : tvdpp_variants({})) out.push_back(loss_run_name(v));
  return out;
}
}  // namespace

std::vector<std::string> distill_run_choices() {
  std::vector<std::string> out = model_run_choices();
  for (const std::string& run : model_run_choices())
    if (run != name_of(Loss::kCe)) out.push_back(kEagle3Prefix + run);  // an EAGLE-3 head: a distribution loss
  return out;
}

DistillSection with_run(DistillSection d, const std::string& run) {
  index_of_name(run, distill_run_choices(), "pipeline.losses");  // an unknown name is an error naming the key
  const bool head = run.rfind(kEagle3Prefix, 0) == 0;
  d.kind = head ? DrafterKind::kEagle3 : DrafterKind::kModel;
  if (head) d.teacher = Teacher::kOnline;  // a head reads the running target
  const std::string loss = head ? run.substr(std::string(kEagle3Prefix).size()) : run;
  const size_t i = index_of_name(loss, model_run_choices(), "pipeline.losses");
  const size_t losses = EnumNames<Loss>::names.size();
  if (i >= losses) {
    DistillSection v = tvdpp_variants(d)[i - losses];
    v.kind = d.kind;
    return v;
  }
  d.loss = static_cast<Loss>(i);
  return d;
}

std::string distill_run_name(const DistillSection& d) {
  std::string name = loss_run_name(d);
  if (d.kind == DrafterKind::kEagle3) name = kEagle3Prefix + name;
  if (d.on_policy_fraction > 0) name += str_cat("-onpolicy", d.on_policy_fraction);
  return name;
}

std::string distill_run_dir(const DistillSection& d) {
  return seed_dir((std::filesystem::path(d.output_dir) / distill_run_name(d)).string(), d.seed);
}

Config with_stage_seed(Config cfg, int64_t seed) {
  if (seed >= 0) cfg.run.seed = seed;
  return cfg;
}

std::string seed_dir(const std::string& dir, int64_t seed) {
  return seed < 0 ? dir : str_cat(dir, dir.empty() || dir.back() == '/' ? "" : "/", "seed-", seed);
}

}  // namespace draftalign::config

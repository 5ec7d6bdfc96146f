#include "evaluators/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <tuple>

#include "common/checksum.h"
#include "common/device.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/preempt.h"
#include "config/fingerprint.h"
#include "data/draft_vocab.h"
#include "data/prompts.h"
#include "data/shards.h"
#include "evaluators/acceptance.h"
#include "evaluators/onepass.h"
#include "evaluators/report.h"
#include "evaluators/speculative.h"
#include "evaluators/summary.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "model/eagle3.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"
#include "train/runtime.h"

namespace draftalign::eval {

namespace stdfs = std::filesystem;

namespace {

// One evaluated turn with its rendered prompt and the target's greedy answer.
struct Turn {
  EvalItem info;
  std::vector<int64_t> tokens;  // the prompt
  uint64_t seed = 0;            // of the timed sampling runs
  GreedyAnswer answer;
};

// The interpreter that draws the plots, or "" for none.
std::string plot_python(const std::string& setting) {
  if (setting == "off") return "";
  if (setting != "auto") return setting;
  if (const char* env = std::getenv("DRAFTALIGN_PYTHON"); env != nullptr && *env != '\0') return env;
  if (stdfs::exists(".venv/bin/python")) return ".venv/bin/python";
  return "python3";
}

// The checks that read no weights: a drafter that cannot pair with the target, or whose files are damaged, fails here,
// before anything runs.
// Returns the drafter's max_position_embeddings.
int64_t check_drafter(const std::string& dir, const io::LlamaConfig& target_cfg, const config::Config& cfg,
                      const tok::Tokenizer& target_tok) {
  DA_CHECK(stdfs::is_directory(dir), "evaluate.drafters: ", dir, " is not a directory (a drafter checkpoint: ",
           "config.json + *.safetensors)");
  if (io::is_eagle3_dir(dir)) {
    // An EAGLE-3 head: for this target (vocabulary, hidden size, taps within its layers); its weights are checked
    // when it loads (model::load_eagle3).
    const stdfs::path file = stdfs::path(dir) / "config.json";
    const nlohmann::json j = io::read_json_file(file);
    const io::LlamaConfig c = io::parse_hf_config(j, file.string());
    const int64_t hidden = j.value("target_hidden_size", c.hidden_size);
    DA_CHECK(c.vocab_size == target_cfg.vocab_size && hidden == target_cfg.hidden_size, "evaluate.drafters: ", file.string(),
             " is an EAGLE-3 head for a target of vocabulary ", c.vocab_size, " and hidden size ", hidden,
             "; the target ", cfg.target.dir, " has ", target_cfg.vocab_size, " and ", target_cfg.hidden_size);
    if (j.contains("eagle_config") && j["eagle_config"].contains("eagle_aux_hidden_state_layer_ids"))
      for (const auto& t : j["eagle_config"]["eagle_aux_hidden_state_layer_ids"])
        DA_CHECK(t.is_number_integer() && t.get<int64_t>() >= 0 && t.get<int64_t>() <= target_cfg.num_hidden_layers,
                 "evaluate.drafters: ", file.string(), " reads target layer ", t.dump(), "; the target ",
                 cfg.target.dir, " has ", target_cfg.num_hidden_layers);
    return target_cfg.max_position_embeddings;
  }
  const io::LlamaConfig c = io::read_hf_config(stdfs::path(dir) / "config.json");
  DA_CHECK(c.vocab_size == target_cfg.vocab_size, "evaluate.drafters: ", dir, "/config.json has a vocabulary of ",
           c.vocab_size, " tokens, the target ", cfg.target.dir, "/config.json one of ", target_cfg.vocab_size,
           ": a drafter must share the target's vocabulary");
  io::HfCheckpoint::open(dir).check_llama();  // maps and validates the weights, reads none
  if (stdfs::exists(stdfs::path(dir) / "tokenizer.json") || stdfs::exists(stdfs::path(dir) / "tokenizer.model"))
    tok::check_vocab_compatible(target_tok, *tok::load_tokenizer(dir));
  return c.max_position_embeddings;
}

// One timed decode of a turn: from its first decode step (the prompt's prefill is the same work with and without a
// drafter, and at a prompt of hundreds of tokens and an answer of 16 would be most of the time).
std::pair<Decoded, double> timed_decode(SpeculativeDecoder& dec, const Turn& t, int64_t gamma,
                                        const model::SamplingParams& sp, double draft_stop_prob = 0) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  Decoded d = dec.decode(t.tokens, gamma, sp, t.seed, draft_stop_prob);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count() - d.prefill_seconds;
  return {std::move(d), seconds};
}

}  // namespace

std::string evaluate_fingerprint(const config::Config& cfg) {
  return config::stage_fingerprint(cfg, "evaluate/v4", {"run", "target", "evaluate"});
}

bool evaluation_complete(const config::Config& cfg) {
  const stdfs::path report = stdfs::path(cfg.evaluate.report_dir) / kReportJson;
  if (!stdfs::exists(report)) return false;
  const nlohmann::json j = nlohmann::json::parse(fs::read_file(report), nullptr, false);
  return j.is_object() && j.contains("fingerprint") && j["fingerprint"] == evaluate_fingerprint(cfg);
}

namespace {

// What every step of an evaluation reads: the checked inputs and the loaded models.
struct Evaluation {
  const config::Config& cfg;
  const config::EvaluateSection& e;
  std::optional<train::Target> target;  // tokenizer, chat template, config.json, stop ids; the model once loaded
  data::PromptSet set;
  std::vector<ContrastSpec> contrasts;
  int64_t max_gamma = 0;
  int64_t positions = 0;  // the fewest positions of the target and the drafters
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
  std::vector<std::string> names, groups;  // of the drafters (drafter_names, drafter_groups)
  std::vector<std::shared_ptr<model::Llama>> drafters;      // null where the drafter is an EAGLE-3 head
  std::vector<std::shared_ptr<model::Eagle3Head>> heads;    // null where it is a model
  std::function<void(const std::string&)> stop_point;
};

// 1. Inputs, checked before any weights are loaded.
void check_inputs(Evaluation& ev) {
  const config::EvaluateSection& e = ev.e;
  const config::Config& cfg = ev.cfg;
  ev.target = train::open_target(cfg);
  io::HfCheckpoint::open(cfg.target.dir).check_llama();
  ev.positions = ev.target->config.max_position_embeddings;
  for (const auto& d : e.drafters)
    ev.positions = std::min(ev.positions, check_drafter(d, ev.target->config, cfg, *ev.target->tokenizer));
  ev.contrasts = parse_contrasts(e.contrasts);
  check_contrasts(ev.contrasts, report_row_names(e.drafters, e.prompt_lookup, e.hybrid));
  ev.set = data::load_prompts(e.prompts, /*skip_bad=*/false, e.max_prompts);
  ev.max_gamma = std::max({*std::max_element(e.exact_gammas.begin(), e.exact_gammas.end()),
                           *std::max_element(e.gammas.begin(), e.gammas.end()), e.sampling_gamma});
  ev.names = drafter_names(e.drafters), ev.groups = drafter_groups(e.drafters);
}

// 2. Models, in the target's compute dtype.
void load_models(Evaluation& ev) {
  ev.device = train::make_compute(ev.cfg.run).device;
  ev.dtype = train::pick_dtype(ev.cfg.target.dtype, ev.device);
  ev.target->load_model(ev.cfg, ev.device);
  const torch::Tensor embed = ev.target->model->named_parameters()["model.embed_tokens.weight"];
  for (const auto& dir : ev.e.drafters) {
    const bool head = io::is_eagle3_dir(dir);
    ev.drafters.push_back(head ? nullptr : model::load_llama(dir, ev.device, ev.dtype));
    ev.heads.push_back(head ? model::load_eagle3(dir, embed, ev.device, ev.dtype) : nullptr);
    if (head) ev.heads.back()->eval(); else ev.drafters.back()->eval();
  }
}

// 3. The target's greedy answers, turn by turn: a later turn is asked after the target's own full answer to the one
//    before (as Spec-Bench and EAGLE ask MT-bench's second turn), decoded up to context_max_new_tokens with the stop
//    tokens; what is measured is the first max_new_tokens of each turn's greedy continuation.
std::vector<Turn> answer_turns(Evaluation& ev, int64_t* too_long) {
  const config::EvaluateSection& e = ev.e;
  const data::PromptSet& set = ev.set;
  // A prompt must leave room for the answer, the continuation a last draft is verified against, and one more block.
  const int64_t room = ev.positions - std::max({e.max_new_tokens, e.timed_max_new_tokens, e.sampling_max_new_tokens}) -
                       2 * ev.max_gamma - 1;
  log::info("evaluate: the target answers ", set.prompts.size(), " prompts greedily, up to ", e.turns, " turns, ",
            e.max_new_tokens, " measured tokens each; an answer a later turn follows is decoded up to ",
            e.context_max_new_tokens, " tokens");
  std::vector<Turn> turns;
  std::vector<std::vector<tok::Message>> conversations;  // per prompt, so far
  std::vector<int64_t> open;                             // prompts still in the conversation
  for (size_t i = 0; i < set.prompts.size(); ++i) conversations.push_back(set.prompts[i].messages), open.push_back(i);
  for (int64_t turn = 1; turn <= e.turns && !open.empty(); ++turn) {
    std::vector<Turn> batch;
    std::vector<int64_t> asked;
    for (int64_t i : open) {
      const data::Prompt& p = set.prompts[static_cast<size_t>(i)];
      Turn t;
      t.info.id = turn == 1 ? p.id : str_cat(p.id, "#", turn);
      t.info.category = p.category, t.info.turn = turn, t.info.cluster = p.cluster;
      t.tokens = ev.target->tokenizer->encode(ev.target->chat.render(conversations[static_cast<size_t>(i)]));
      t.info.prompt_tokens = static_cast<int64_t>(t.tokens.size());
      t.seed = model::splitmix64(model::splitmix64(static_cast<uint64_t>(ev.cfg.run.seed)) ^
                                 (static_cast<uint64_t>(p.index) * 16 + static_cast<uint64_t>(turn)));
      if (t.info.prompt_tokens > room) {
        ++*too_long;
        continue;
      }
      batch.push_back(std::move(t));
      asked.push_back(i);
    }
    // The full answers the next turn follows, for the prompts that have one: decoded with the stop tokens.
    std::vector<size_t> followed;
    std::vector<std::vector<int64_t>> context_prompts;
    for (size_t k = 0; k < batch.size(); ++k)
      if (turn < e.turns && static_cast<size_t>(turn) <= set.prompts[static_cast<size_t>(asked[k])].later_turns.size())
        followed.push_back(k), context_prompts.push_back(batch[k].tokens);
    std::vector<std::vector<int64_t>> contexts;
    if (!context_prompts.empty()) {
      model::SamplingParams sp;
      sp.temperature = 0, sp.max_new_tokens = e.context_max_new_tokens, sp.stop_ids = ev.target->stop_ids;
      log::info("evaluate: the target answers ", context_prompts.size(), " turn-", turn, " prompts in full (up to ",
                e.context_max_new_tokens, " tokens) for the turn after");
      log::Progress context_progress(str_cat("full answers, turn ", turn),
                                     static_cast<int64_t>(context_prompts.size()) * e.context_max_new_tokens, "tok",
                                     stdout, -1, ev.cfg.run.progress_interval_s);
      int64_t written = 0;
      const std::vector<uint64_t> seeds(context_prompts.size(), 0);
      contexts = sampled_answers(*ev.target->model, context_prompts, seeds, sp, e.batch_size, [&](int64_t n) {
        ev.stop_point(str_cat("while the target answered turn ", turn, " in full"));
        context_progress.update(written += n);
      });
      context_progress.finish();
    }
    // Each turn's full answer, or null where no turn follows it.
    std::vector<const std::vector<int64_t>*> full_of(batch.size(), nullptr);
    for (size_t j = 0; j < followed.size(); ++j) full_of[followed[j]] = &contexts[j];
    // The measured continuations: max_new_tokens + the longest draft, past a stop token. A full answer that runs that
    // long without a stop token already is one (the same greedy tokens); the others are decoded here.
    const int64_t measured = e.max_new_tokens + ev.max_gamma;
    std::vector<GreedyAnswer> answers(batch.size());
    std::vector<size_t> to_decode;
    for (size_t k = 0; k < batch.size(); ++k) {
      const std::vector<int64_t>* full = full_of[k];
      if (full != nullptr && static_cast<int64_t>(full->size()) >= measured &&
          std::none_of(full->begin(), full->begin() + measured, [&](int64_t x) { return ev.target->is_stop(x); })) {
        answers[k].tokens.assign(full->begin(), full->begin() + measured);
        answers[k].emitted = cut_answer(answers[k].tokens, e.max_new_tokens, ev.target->stop_ids);
      } else {
        to_decode.push_back(k);
      }
    }
    if (!to_decode.empty()) {
      std::vector<std::vector<int64_t>> prompts;
      for (size_t k : to_decode) prompts.push_back(batch[k].tokens);
      log::Progress progress(str_cat("answers, turn ", turn), static_cast<int64_t>(prompts.size()) * measured, "tok",
                             stdout, -1, ev.cfg.run.progress_interval_s);
      int64_t made = 0;
      const std::vector<GreedyAnswer> decoded =
          greedy_answers(*ev.target->model, prompts, e.max_new_tokens, ev.max_gamma, ev.target->stop_ids, e.batch_size,
                         [&](int64_t n) {
                           ev.stop_point(str_cat("while the target answered turn ", turn));
                           progress.update(made += n);
                         });
      progress.finish();
      for (size_t j = 0; j < to_decode.size(); ++j) answers[to_decode[j]] = decoded[j];
    }
    std::vector<int64_t> next;
    for (size_t k = 0; k < batch.size(); ++k) {
      Turn& t = batch[k];
      t.answer = answers[k];
      t.info.answer_tokens = t.answer.emitted;
      if (full_of[k] != nullptr) {
        const int64_t i = asked[k];
        const data::Prompt& p = set.prompts[static_cast<size_t>(i)];
        // The answer as the conversation's assistant turn: its text without the stop token.
        std::vector<int64_t> said = *full_of[k];
        if (!said.empty() && ev.target->is_stop(said.back()))
          said.pop_back();
        t.info.context_tokens = static_cast<int64_t>(said.size());
        auto& conv = conversations[static_cast<size_t>(i)];
        conv.push_back({"assistant", tok::replace_invalid_utf8(ev.target->tokenizer->decode(said))});
        conv.push_back({"user", p.later_turns[static_cast<size_t>(turn - 1)]});
        next.push_back(i);
      }
      turns.push_back(std::move(t));
    }
    open = next;
  }
  return turns;
}

// The share of the answers' tokens a draft vocabulary (target ids) holds: the tokens the drafter can propose at all.
double answer_coverage(const std::vector<Turn>& turns, const std::vector<int64_t>& ids, int64_t vocab) {
  data::TokenCounter counter(vocab);
  for (const auto& t : turns) counter.add(t.answer.tokens, "the evaluated answers");
  data::DraftVocab v;
  v.target_vocab = vocab, v.ids = ids;
  return v.coverage(counter.counts());
}

// 4. Exact greedy tau from one pass: every drafter reads every prompt + answer once.
void exact_pass(Evaluation& ev, const std::vector<Turn>& turns, Report& report) {
  const config::EvaluateSection& e = ev.e;
  // drafter_of(i): the drafter of turn i, as the real decoder drafts (drafter.h; a model's drafts replayed).
  const LookupDrafting lookup{e.prompt_lookup_min, e.prompt_lookup_max};
  const int64_t vocab = ev.target->config.vocab_size;
  auto exact_points = [&](const std::function<std::unique_ptr<Drafter>(size_t)>& drafter_of) {
    std::vector<ExactPoint> points;
    for (int64_t g : e.exact_gammas) points.push_back({g, {}});
    for (size_t i = 0; i < turns.size(); ++i) {
      const std::unique_ptr<Drafter> drafter = drafter_of(i);
      for (auto& p : points)
        p.per_item.push_back(simulate_greedy(turns[i].tokens, turns[i].answer, p.gamma, *drafter, e.draft_stop_prob));
    }
    return points;
  };
  if (e.prompt_lookup)
    report.exact.push_back(
        {"prompt-lookup", "", 0, "prompt-lookup", exact_points([&](size_t) { return lookup_drafter(lookup, vocab); })});
  const int64_t max_exact = *std::max_element(e.exact_gammas.begin(), e.exact_gammas.end());
  for (size_t i = 0; i < e.drafters.size(); ++i) {
    if (model::Eagle3Head* head = ev.heads[i].get()) {
      // A head's step j depends on its step j - 1: every draft chain from one target pass and one unroll.
      log::info("evaluate: exact greedy tau of the EAGLE-3 head ", ev.names[i], ": one target pass and a ", max_exact,
                "-step unroll over ", turns.size(), " answers");
      std::vector<DraftChains> chains, answer_path(turns.size());  // its own path; the answer's, for the hybrid
      for (size_t k = 0; k < turns.size(); ++k) {
        ev.stop_point(str_cat("in the exact pass of ", ev.names[i]));
        chains.push_back(teacher_forced_head_drafts(*ev.target->model, *head, turns[k].tokens, turns[k].answer.tokens,
                                                    max_exact, e.hybrid ? &answer_path[k] : nullptr));
      }
      const int64_t seed = seed_of_dir(e.drafters[i]);
      const std::string& group = ev.groups[i];
      report.exact.push_back({ev.names[i], e.drafters[i], head->num_params(), "eagle3",
                              exact_points([&](size_t k) { return chain_drafter(chains[k]); }), group, seed});
      report.exact.back().draft_vocab = head->config().vocab.size();
      report.exact.back().answer_coverage =
          answer_coverage(turns, head->config().vocab.ids, ev.target->config.vocab_size);
      if (e.hybrid)
        report.exact.push_back(
            {ev.names[i] + "+lookup", e.drafters[i], head->num_params(), "hybrid",
             exact_points([&](size_t k) { return hybrid_drafter(lookup, vocab, chain_drafter(answer_path[k])); }),
             group.empty() ? "" : group + "+lookup", seed});
      continue;
    }
    model::Llama* drafter = ev.drafters[i].get();
    // Without a stop the drafter's argmax after each prefix fixes every count; with one, its draft length follows its
    // own path past the first mismatch: its chains, a masked pass per draft step.
    const bool stop = e.draft_stop_prob > 0;
    log::info("evaluate: exact greedy tau of ", ev.names[i], ": ", stop ? str_cat(max_exact, " passes") : "one pass",
              " over ", turns.size(), " answers");
    std::vector<std::vector<int64_t>> argmax;
    std::vector<DraftChains> chains;
    for (const auto& t : turns) {
      ev.stop_point(str_cat("in the exact pass of ", ev.names[i]));
      if (!stop) {
        argmax.push_back(teacher_forced_argmax(*drafter, t.tokens, t.answer.tokens));
        continue;
      }
      chains.push_back(teacher_forced_chains(*drafter, t.tokens, t.answer.tokens, max_exact));
      argmax.emplace_back();
      for (const auto& c : chains.back().tokens) argmax.back().push_back(c[0]);
    }
    const int64_t seed = seed_of_dir(e.drafters[i]);
    const std::string& group = ev.groups[i];
    report.exact.push_back({ev.names[i], e.drafters[i], drafter->num_params(), "model", exact_points([&](size_t k) {
                              return stop ? chain_drafter(chains[k]) : argmax_drafter(argmax[k]);
                            }),
                            group, seed});
    if (drafter->has_draft_vocab()) {
      report.exact.back().draft_vocab = drafter->head_rows();
      report.exact.back().answer_coverage =
          answer_coverage(turns, drafter->config().draft_token_ids, ev.target->config.vocab_size);
    }
    if (e.hybrid)
      report.exact.push_back(
          {ev.names[i] + "+lookup", e.drafters[i], drafter->num_params(), "hybrid",
           exact_points([&](size_t k) { return hybrid_drafter(lookup, vocab, argmax_drafter(argmax[k])); }),
           group.empty() ? "" : group + "+lookup", seed});
  }
}

// 5. The speculative sampling check on a stratified sample of the turns, at every sampling temperature: the target's
//    sampled answers, scored in one teacher-forced pass of target and drafter (alpha per position), and the real
//    decoder on the same turns.
void sampling_check(Evaluation& ev, const std::vector<Turn>& turns, Report& report) {
  const config::EvaluateSection& e = ev.e;
  report.sampling_items = stratified_sample(report.items, e.sampling_prompts, model::splitmix64(report.seed ^ 0x5a));
  report.sampling_max_new_tokens = e.sampling_max_new_tokens;
  if (report.sampling_items.empty() || ev.drafters.empty() || e.sampling_temperatures.empty()) return;
  // The model drafters (an EAGLE-3 head's sampling is checked by the decoder's tests, not scored here).
  std::vector<size_t> models;
  for (size_t i = 0; i < ev.drafters.size(); ++i)
    if (ev.drafters[i]) models.push_back(i), report.sampling.push_back({ev.names[i], {}});
  if (models.empty()) return;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<uint64_t> seeds;
  for (int64_t k : report.sampling_items)
    prompts.push_back(turns[static_cast<size_t>(k)].tokens), seeds.push_back(turns[static_cast<size_t>(k)].seed);
  for (double temperature : e.sampling_temperatures) {
    model::SamplingParams sp;
    sp.temperature = temperature, sp.top_p = e.top_p, sp.top_k = e.top_k;
    sp.max_new_tokens = e.sampling_max_new_tokens, sp.stop_ids = ev.target->stop_ids;
    log::info("evaluate: speculative sampling check at T=", temperature, ": the target samples ", prompts.size(),
              " answers of up to ", e.sampling_max_new_tokens, " tokens; one-pass alpha and the real decoder at g=",
              e.sampling_gamma);
    const auto answers = sampled_answers(*ev.target->model, prompts, seeds, sp, e.batch_size);
    std::vector<torch::Tensor> p;  // the target's distributions along each answer
    for (size_t k = 0; k < prompts.size(); ++k)
      p.push_back(answers[k].empty() ? torch::Tensor()
                                     : teacher_forced_probs(*ev.target->model, prompts[k], answers[k], sp));
    for (size_t row = 0; row < models.size(); ++row) {
      const size_t i = models[row];
      SamplingPoint point;
      point.temperature = temperature, point.gamma = e.sampling_gamma;
      SpeculativeDecoder dec(*ev.target->model, ev.drafters[i].get());
      for (size_t k = 0; k < prompts.size(); ++k) {
        double alpha = 0;
        if (p[k].defined()) {
          const torch::Tensor q = teacher_forced_probs(*ev.drafters[i], prompts[k], answers[k], sp);
          alpha = torch::minimum(p[k], q).sum(-1).clamp_max(1.0).sum().item<double>();  // <= 1 per position
        }
        point.alpha_sum.push_back(alpha);
        point.positions.push_back(static_cast<double>(answers[k].size()));
        point.measured.push_back(dec.decode(prompts[k], e.sampling_gamma, sp, seeds[k]).counters);
      }
      report.sampling[row].points.push_back(std::move(point));
    }
  }
}

// 6. Timed speculative decoding on a stratified sample of the turns: each repeat decodes them plainly, then with the
//    drafter. Every decoder is made, its caches and (CUDA) graphs reserved and one decode run before it is timed.
void timed_sweep(Evaluation& ev, const std::vector<Turn>& turns, Report& report) {
  const config::EvaluateSection& e = ev.e;
  report.timed_items = stratified_sample(report.items, e.timed_prompts, model::splitmix64(report.seed ^ 0x71));
  if (report.timed_items.empty()) return;
  std::vector<const Turn*> timed;
  int64_t capacity = 0;
  const int64_t max_timed_gamma = *std::max_element(e.gammas.begin(), e.gammas.end());
  for (int64_t k : report.timed_items) {
    timed.push_back(&turns[static_cast<size_t>(k)]);
    capacity = std::max(capacity, static_cast<int64_t>(timed.back()->tokens.size()) + e.timed_max_new_tokens +
                                      max_timed_gamma + 1);
  }
  model::SamplingParams sp;
  sp.top_p = e.top_p, sp.top_k = e.top_k, sp.max_new_tokens = e.timed_max_new_tokens, sp.stop_ids = ev.target->stop_ids;
  // The step latencies are timed after the prompt and up to 2 * max_gamma answer tokens (an answer that ended
  // sooner gives fewer: reading past its end gave garbage ids, found by tools/mutation_sweep.py's tiny world).
  std::vector<int64_t> context = timed[0]->tokens;
  const std::vector<int64_t>& answer = timed[0]->answer.tokens;
  context.insert(context.end(), answer.begin(),
                 answer.begin() + std::min<int64_t>(2 * ev.max_gamma, static_cast<int64_t>(answer.size())));
  // One target step per block length: 1 (plain decoding, or a call without a draft) to max gamma + 1.
  for (int64_t block = 1; block <= max_timed_gamma + 1; ++block)
    report.verify_seconds.push_back(decode_step_seconds(*ev.target->model, context, block));
  report.target_step_seconds = report.verify_seconds[0];
  const int64_t kinds = static_cast<int64_t>(e.drafters.size()) * (e.hybrid ? 2 : 1) + (e.prompt_lookup ? 1 : 0);
  const int64_t decodes = static_cast<int64_t>(e.temperatures.size() * e.gammas.size() * timed.size()) * kinds *
                          e.repeats * 2;
  log::info("evaluate: timed speculative decoding of ", timed.size(), " turns x ", e.timed_max_new_tokens,
            " tokens: ", kinds, " drafters x ", e.gammas.size(), " gammas x ", e.temperatures.size(),
            " temperatures x ", e.repeats, " repeats, each after a plain run: ", decodes, " decodes");
  log::Progress progress("evaluate", decodes, "decode", stdout, -1, ev.cfg.run.progress_interval_s);
  int64_t done = 0;
  fs::ensure_dir(e.report_dir);
  SweepLog sweeps(stdfs::path(e.report_dir) / kSweepLog, report.fingerprint);
  SpeculativeDecoder plain(*ev.target->model, nullptr);
  plain.reserve(capacity, max_timed_gamma + 1);
  timed_decode(plain, *timed[0], 0, sp);  // warm-up, not timed
  // Made, reserved and warmed up once, before any of its points is timed.
  auto ready = [&](SpeculativeDecoder& dec) {
    dec.reserve(capacity, max_timed_gamma + 1);
    model::SamplingParams warm = sp;
    warm.temperature = e.temperatures[0];
    timed_decode(dec, *timed[0], max_timed_gamma, warm);
  };
  auto sweep = [&](SpeculativeDecoder& dec, int64_t gamma, double temperature, const std::string& who) {
    if (const SweepPoint* p = sweeps.find(who, temperature, gamma)) {
      const int64_t point_decodes = 2 * e.repeats * static_cast<int64_t>(timed.size());
      done += point_decodes;
      progress.skip(point_decodes);  // an earlier run's: not in this run's rate
      return *p;
    }
    ev.stop_point(str_cat("before the sweep point ", who, " T=", temperature, " g=", gamma, "; ", sweeps.size(),
                          " finished points are kept in ", (stdfs::path(e.report_dir) / kSweepLog).string()));
    sp.temperature = temperature;
    SweepPoint point;
    point.temperature = temperature, point.gamma = gamma;
    point.seconds.assign(static_cast<size_t>(e.repeats), 0.0);
    point.baseline_seconds.assign(static_cast<size_t>(e.repeats), 0.0);
    // Turn by turn, its repeats back to back, each a plain decode and then the drafter's: the two of a pair see the
    // same machine load, and a decoder's prefill of the turn is reused by its later repeats.
    for (const Turn* t : timed) {
      PromptRun run;
      for (int64_t r = 0; r < e.repeats; ++r) {
        auto [base, base_seconds] = timed_decode(plain, *t, 0, sp);
        auto [mine, seconds] = timed_decode(dec, *t, gamma, sp, e.draft_stop_prob);
        done += 2;
        point.baseline_times.add(base.counters, base.target_seconds_by_draft_length, base.drafter_seconds);
        point.times.add(mine.counters, mine.target_seconds_by_draft_length, mine.drafter_seconds);
        if (r == 0) {
          run = {t->info.id, static_cast<int64_t>(t->tokens.size()), mine.finish, mine.counters};
          run.baseline_tokens = base.counters.num_emitted_tokens;
          point.counters.add(mine.counters), point.baseline_counters.add(base.counters);
        }
        run.seconds.push_back(seconds), run.baseline_seconds.push_back(base_seconds);
        point.seconds[static_cast<size_t>(r)] += seconds;
        point.baseline_seconds[static_cast<size_t>(r)] += base_seconds;
      }
      point.prompts.push_back(std::move(run));
      progress.update(done, str_cat(who, " T=", temperature, " g=", gamma));
    }
    sweeps.add(who, point);
    return point;
  };
  if (e.prompt_lookup) {
    SpeculativeDecoder dec(*ev.target->model, LookupDrafting{e.prompt_lookup_min, e.prompt_lookup_max});
    DrafterResult res;
    res.name = "prompt-lookup";
    if (!sweeps.all_found(res.name, e.temperatures, e.gammas)) ready(dec);
    for (double t : e.temperatures)
      for (int64_t g : e.gammas) res.points.push_back(sweep(dec, g, t, res.name));
    report.drafters.push_back(std::move(res));
  }
  // Drafter i through the decoder's one drafter interface, alone or behind prompt lookup (its hybrid row).
  const LookupDrafting lookup{e.prompt_lookup_min, e.prompt_lookup_max};
  auto drafter_of = [&](size_t i, bool with_lookup) {
    std::unique_ptr<Drafter> d = ev.heads[i] ? head_drafter(*ev.heads[i]) : model_drafter(*ev.drafters[i]);
    return with_lookup ? hybrid_drafter(lookup, ev.target->config.vocab_size, std::move(d)) : std::move(d);
  };
  for (size_t i = 0; i < e.drafters.size(); ++i) {
    DrafterResult res;
    res.name = ev.names[i], res.dir = e.drafters[i];
    if (model::Eagle3Head* head = ev.heads[i].get()) {
      res.params = head->num_params();
      res.step_seconds = head_step_seconds(*head, static_cast<int64_t>(context.size()));
    } else {
      res.params = ev.drafters[i]->num_params();
      res.step_seconds = decode_step_seconds(*ev.drafters[i], context);
    }
    for (bool with_lookup : e.hybrid ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
      SpeculativeDecoder dec(*ev.target->model, drafter_of(i, with_lookup));
      res.name = ev.names[i] + (with_lookup ? "+lookup" : ""), res.points.clear();
      if (!sweeps.all_found(res.name, e.temperatures, e.gammas)) ready(dec);
      for (double t : e.temperatures)
        for (int64_t g : e.gammas) res.points.push_back(sweep(dec, g, t, res.name));
      report.drafters.push_back(res);
    }
  }
  progress.finish();
}

void log_summary(const Summary& s) {
  for (const auto& row : s.exact.rows) {
    std::string line;
    for (const auto& p : row.points) line += str_cat(" g=", p.gamma, ":", p.tau.value);
    log::info("evaluate: exact greedy tau, ", row.name, ":", line);
  }
  for (const auto& x : s.exact.differences)
    if (x.significant)
      log::info("evaluate: ", x.drafter, " vs ", x.versus, " at g=", x.gamma, ": ", x.difference, " (Holm-adjusted p ",
                x.p_holm, ")");
  for (const auto& d : s.timed)
    for (const auto& p : d.points)
      log::info("evaluate: timed ", d.name, " T=", p.temperature, " g=", p.gamma, ": tau ", p.tau.value, ", speed-up ",
                p.speedup, "x (bound ", p.speedup_bound, ")");
  for (const auto& d : s.sampling)
    for (const auto& p : d.points)
      log::info("evaluate: sampling T=", p.temperature, ", ", d.name, ": one-pass alpha ", p.alpha.value,
                ", measured first-position acceptance ", p.measured_first_position_acceptance.value, " (z ",
                p.agreement_z, "); at g=", p.gamma, " tau ", p.measured_tau.value, " measured, ",
                p.tau_iid_estimate[static_cast<size_t>(p.gamma - 1)], " i.i.d. estimate");
}

}  // namespace

int evaluate(const config::Config& cfg) {
  // SIGTERM/SIGINT/SIGUSR1: stop at the next safe point. Finished sweep points are kept in sweep.jsonl; the answers
  // and the one-pass results are recomputed by the next run (they are not saved on their own).
  preempt::StopOnSignal stop_on_signal;
  Evaluation ev{cfg, cfg.evaluate};
  ev.stop_point = [](const std::string& where) {
    preempt::throw_if_stop_requested(str_cat("evaluate stopped ", where, ": run the same command again to go on"));
  };
  const config::EvaluateSection& e = cfg.evaluate;
  check_inputs(ev);
  load_models(ev);
  int64_t too_long = 0;
  const std::vector<Turn> turns = answer_turns(ev, &too_long);
  if (too_long > 0)
    log::warn("evaluate: skipped ", too_long, " turns longer than the ", ev.positions,
              " positions of the target and drafters minus the answer, the longest draft and its verification");
  DA_CHECK(!turns.empty(), "evaluate: every prompt is too long for evaluate.max_new_tokens = ", e.max_new_tokens);

  Report report;
  report.target_dir = cfg.target.dir, report.device = ev.device.is_cuda() ? "cuda" : "cpu";
  report.dtype = ev.dtype == torch::kBFloat16 ? "bf16" : "fp32";
  report.environment = runtime_environment(report.device);
  report.fingerprint = evaluate_fingerprint(cfg);
  report.target_params = ev.target->model->num_params();
  report.prompt_files = e.prompts, report.prompts = static_cast<int64_t>(ev.set.prompts.size());
  report.turns = e.turns, report.max_new_tokens = e.max_new_tokens;
  report.context_max_new_tokens = e.context_max_new_tokens, report.skipped_turns = too_long;
  report.top_p = e.top_p, report.top_k = e.top_k, report.repeats = e.repeats;
  report.timed_max_new_tokens = e.timed_max_new_tokens;
  report.resamples = e.bootstrap_resamples, report.seed = static_cast<uint64_t>(cfg.run.seed);
  report.contrasts = ev.contrasts;
  for (const auto& t : turns) report.items.push_back(t.info);
  report.training_curves = training_curves(e.drafters, ev.names);

  exact_pass(ev, turns, report);
  sampling_check(ev, turns, report);
  timed_sweep(ev, turns, report);

  // 7. The report.
  const Summary summary = summarize(report);
  const std::string why_no_plots = write_report(e.report_dir, report, summary, plot_python(e.python));
  if (!why_no_plots.empty()) log::warn("evaluate: ", why_no_plots);
  log_summary(summary);
  log::info("evaluate: report in ", (stdfs::path(e.report_dir) / kReportMarkdown).string());
  return 0;
}

cli::Stage evaluate_stage() {
  return {
      .name = "evaluate",
      .summary = "speculative decoding: block efficiency, acceptance, MBSU, speed-up",
      .description =
          "Is a drafter worth deploying? The target answers every prompt (every MT-bench turn, the second after its\n"
          "own first answer) greedily once; each drafter in evaluate.drafters, and prompt lookup, reads prompt +\n"
          "answer in one teacher-forced pass: exact greedy tau for every evaluate.exact_gammas, with 95% bootstrap\n"
          "intervals over prompts, per turn and category, and paired differences. Then the real draft-then-verify\n"
          "decoder on evaluate.timed_prompts turns at evaluate.gammas x evaluate.temperatures, each run alternated\n"
          "with plain decoding: wall-clock speed-up (median, interval, checked against what tau allows), MBSU,\n"
          "measured acceptance. Writes report.json, report.md, exact.jsonl, prompts.jsonl and plots to\n"
          "evaluate.report_dir.",
      .sections = {"run", "target", "evaluate"},
      .run = evaluate,
      .outputs =
          [](const config::Config& c) {
            return std::vector<std::string>{(stdfs::path(c.evaluate.report_dir) / kReportJson).string()};
          },
      .is_complete = evaluation_complete};
}

}  // namespace draftalign::eval

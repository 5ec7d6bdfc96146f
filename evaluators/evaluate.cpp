#include "evaluators/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <sstream>
#include <tuple>

#include "common/checksum.h"
#include "common/device.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/preempt.h"
#include "data/prompts.h"
#include "data/shards.h"
#include "evaluators/acceptance.h"
#include "evaluators/onepass.h"
#include "evaluators/report.h"
#include "evaluators/speculative.h"
#include "io/hf_checkpoint.h"
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
void check_drafter(const std::string& dir, const io::LlamaConfig& target_cfg, const config::Config& cfg,
                   const tok::Tokenizer& target_tok) {
  DA_CHECK(stdfs::is_directory(dir), "evaluate.drafters: ", dir, " is not a directory (a drafter checkpoint: ",
           "config.json + *.safetensors)");
  const io::LlamaConfig c = io::read_hf_config(stdfs::path(dir) / "config.json");
  DA_CHECK(c.vocab_size == target_cfg.vocab_size, "evaluate.drafters: ", dir, "/config.json has a vocabulary of ",
           c.vocab_size, " tokens, the target ", cfg.target.dir, "/config.json one of ", target_cfg.vocab_size,
           ": a drafter must share the target's vocabulary");
  io::HfCheckpoint::open(dir).check_llama();  // maps and validates the weights, reads none
  if (stdfs::exists(stdfs::path(dir) / "tokenizer.json") || stdfs::exists(stdfs::path(dir) / "tokenizer.model"))
    tok::check_vocab_compatible(target_tok, *tok::load_tokenizer(dir));
}

// One timed pass of `dec` over the timed turns: its wall time, the summed counters and the per-prompt records.
struct Pass {
  double seconds = 0;
  SpecCounters counters;
  std::vector<PromptRun> records;
};

Pass run_pass(SpeculativeDecoder& dec, const std::vector<Turn>& turns, int64_t gamma, const model::SamplingParams& sp) {
  Pass pass;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& t : turns) {
    const Decoded d = dec.decode(t.tokens, gamma, sp, t.seed);
    pass.counters.add(d.counters);
    pass.records.push_back({t.info.id, static_cast<int64_t>(t.tokens.size()), d.finish, d.counters});
  }
  pass.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return pass;
}

}  // namespace

std::string evaluate_fingerprint(const config::Config& cfg) {
  const config::EvaluateSection& e = cfg.evaluate;
  std::string s = str_cat("v2 seed=", cfg.run.seed, " device=", cfg.run.device, " target=", cfg.target.dir, " dtype=",
                          cfg.target.dtype, " template=", cfg.target.chat_template, " top_p=", e.top_p, " top_k=",
                          e.top_k, " new=", e.max_new_tokens, " max=", e.max_prompts, " turns=", e.turns, " repeats=",
                          e.repeats, " timed=", e.timed_prompts, " timed_new=", e.timed_max_new_tokens, " lookup=",
                          e.prompt_lookup, ":", e.prompt_lookup_min, ":", e.prompt_lookup_max, " hybrid=", e.hybrid);
  for (int64_t g : e.gammas) s += str_cat(" g=", g);
  for (int64_t g : e.exact_gammas) s += str_cat(" eg=", g);
  for (double t : e.temperatures) s += str_cat(" T=", t);
  auto stamp = [](const stdfs::path& f) {
    std::error_code ec;
    const auto size = stdfs::file_size(f, ec);
    const auto time = stdfs::last_write_time(f, ec).time_since_epoch().count();
    return str_cat(f.string(), ":", ec ? 0 : size, ":", ec ? 0 : time);
  };
  for (const auto& p : e.prompts) s += " prompts=" + stamp(p);
  for (const auto& d : e.drafters) s += " drafter=" + stamp(stdfs::path(d) / "model.safetensors");
  return checksum_hex(s);
}

int evaluate(const config::Config& cfg) {
  // SIGTERM/SIGINT/SIGUSR1: stop at the next safe point. Finished sweep points are kept in sweep.jsonl; the answers
  // and the one-pass results are recomputed by the next run (they are not saved on their own).
  preempt::StopOnSignal stop_on_signal;
  auto stop_point = [](const std::string& where) {
    preempt::throw_if_stop_requested(str_cat("evaluate stopped ", where, ": run the same command again to go on"));
  };
  const config::EvaluateSection& e = cfg.evaluate;
  // 1. Inputs, checked before any weights are loaded.
  const io::LlamaConfig target_cfg = io::read_hf_config(stdfs::path(cfg.target.dir) / "config.json");
  io::HfCheckpoint::open(cfg.target.dir).check_llama();
  const auto tokenizer = tok::load_tokenizer(cfg.target.dir);
  const auto chat = tok::ChatTemplate::from_dir(cfg.target.dir, cfg.target.chat_template);
  for (const auto& d : e.drafters) check_drafter(d, target_cfg, cfg, *tokenizer);
  const data::PromptSet set = data::load_prompts(e.prompts, /*skip_bad=*/false, e.max_prompts);
  const int64_t max_gamma = std::max({*std::max_element(e.exact_gammas.begin(), e.exact_gammas.end()),
                                      *std::max_element(e.gammas.begin(), e.gammas.end()), e.sampling_gamma});
  // A prompt must leave room for the answer, the continuation a last draft is verified against, and one more block.
  const int64_t room = target_cfg.max_position_embeddings -
                       std::max({e.max_new_tokens, e.timed_max_new_tokens, e.sampling_max_new_tokens}) - 2 * max_gamma - 1;

  // 2. Models, in the target's compute dtype.
  const torch::Device device = train::make_compute(cfg.run).device;
  const std::string dev = device.is_cuda() ? "cuda" : "cpu";
  const torch::ScalarType dtype = train::pick_dtype(cfg.target.dtype, device);
  auto target = train::load_frozen_target(cfg, device);
  const std::vector<int64_t> stop_ids = train::stop_ids_for(*tokenizer, target_cfg);

  // 3. The target's greedy answers, turn by turn: a later turn is asked after the target's own answer to the one
  //    before (as Spec-Bench and EAGLE ask MT-bench's second turn).
  log::info("evaluate: the target answers ", set.prompts.size(), " prompts greedily, up to ", e.turns, " turns, ",
            e.max_new_tokens, " tokens each (", dev, ")");
  std::vector<Turn> turns;
  std::vector<std::vector<tok::Message>> conversations;  // per prompt, so far
  std::vector<int64_t> open;                             // prompts still in the conversation
  for (size_t i = 0; i < set.prompts.size(); ++i) conversations.push_back(set.prompts[i].messages), open.push_back(i);
  int64_t too_long = 0;
  for (int64_t turn = 1; turn <= e.turns && !open.empty(); ++turn) {
    std::vector<Turn> batch;
    std::vector<int64_t> asked;
    for (int64_t i : open) {
      const data::Prompt& p = set.prompts[static_cast<size_t>(i)];
      Turn t;
      t.info.id = turn == 1 ? p.id : str_cat(p.id, "#", turn);
      t.info.category = p.category, t.info.turn = turn;
      t.tokens = tokenizer->encode(chat.render(conversations[static_cast<size_t>(i)]));
      t.info.prompt_tokens = static_cast<int64_t>(t.tokens.size());
      t.seed = model::splitmix64(model::splitmix64(static_cast<uint64_t>(cfg.run.seed)) ^
                                 (static_cast<uint64_t>(p.index) * 16 + static_cast<uint64_t>(turn)));
      if (t.info.prompt_tokens > room) {
        ++too_long;
        continue;
      }
      batch.push_back(std::move(t));
      asked.push_back(i);
    }
    std::vector<std::vector<int64_t>> prompts;
    for (const auto& t : batch) prompts.push_back(t.tokens);
    log::Progress progress(str_cat("answers, turn ", turn), static_cast<int64_t>(prompts.size()) *
                           (e.max_new_tokens + max_gamma), "tok", stdout, -1, cfg.run.progress_interval_s);
    int64_t made = 0;
    const std::vector<GreedyAnswer> answers =
        greedy_answers(*target, prompts, e.max_new_tokens, max_gamma, stop_ids, e.batch_size, [&](int64_t n) {
          stop_point(str_cat("while the target answered turn ", turn));
          progress.update(made += n);
        });
    progress.finish();
    std::vector<int64_t> next;
    for (size_t k = 0; k < batch.size(); ++k) {
      Turn& t = batch[k];
      t.answer = answers[k];
      t.info.answer_tokens = t.answer.emitted;
      const int64_t i = asked[k];
      const data::Prompt& p = set.prompts[static_cast<size_t>(i)];
      if (turn < e.turns && static_cast<size_t>(turn) <= p.later_turns.size()) {
        // The answer as the conversation's assistant turn: its text without the stop token.
        std::vector<int64_t> said(t.answer.tokens.begin(), t.answer.tokens.begin() + t.answer.emitted);
        if (!said.empty() && std::find(stop_ids.begin(), stop_ids.end(), said.back()) != stop_ids.end())
          said.pop_back();
        auto& conv = conversations[static_cast<size_t>(i)];
        conv.push_back({"assistant", tok::replace_invalid_utf8(tokenizer->decode(said))});
        conv.push_back({"user", p.later_turns[static_cast<size_t>(turn - 1)]});
        next.push_back(i);
      }
      turns.push_back(std::move(t));
    }
    open = next;
  }
  if (too_long > 0)
    log::warn("evaluate: skipped ", too_long, " turns longer than the target's ", target_cfg.max_position_embeddings,
              " positions minus the answer, the longest draft and its verification");
  DA_CHECK(!turns.empty(), "evaluate: every prompt is too long for evaluate.max_new_tokens = ", e.max_new_tokens);

  Report report;
  report.target_dir = cfg.target.dir, report.device = dev, report.dtype = dtype == torch::kBFloat16 ? "bf16" : "fp32";
  report.environment = runtime_environment(dev);
  report.fingerprint = evaluate_fingerprint(cfg);
  report.target_params = target->num_params();
  report.prompt_files = e.prompts, report.prompts = static_cast<int64_t>(set.prompts.size());
  report.turns = e.turns, report.max_new_tokens = e.max_new_tokens;
  report.top_p = e.top_p, report.top_k = e.top_k, report.repeats = e.repeats;
  report.timed_max_new_tokens = e.timed_max_new_tokens;
  report.resamples = e.bootstrap_resamples, report.seed = static_cast<uint64_t>(cfg.run.seed);
  for (const auto& t : turns) report.items.push_back(t.info);

  // 4. Exact greedy tau from one pass: every drafter reads every prompt + answer once.
  const std::vector<std::string> names = drafter_names(e.drafters);
  report.training_curves = training_curves(e.drafters, names);
  // proposer(i): the drafter of turn i.
  auto exact_points = [&](const std::function<Proposer(size_t)>& proposer) {
    std::vector<ExactPoint> points;
    for (int64_t g : e.exact_gammas) points.push_back({g, {}});
    for (size_t i = 0; i < turns.size(); ++i) {
      const Proposer propose = proposer(i);
      for (auto& p : points) p.per_item.push_back(simulate_greedy(turns[i].answer, p.gamma, propose));
    }
    return points;
  };
  if (e.prompt_lookup)
    report.exact.push_back({"prompt-lookup", "", 0, "prompt-lookup", exact_points([&](size_t i) {
                              return lookup_proposer(turns[i].tokens, turns[i].answer.tokens, e.prompt_lookup_min,
                                                     e.prompt_lookup_max);
                            })});
  std::vector<std::shared_ptr<model::Llama>> drafters;
  for (const auto& dir : e.drafters) {
    drafters.push_back(model::load_llama(dir, device, dtype));
    drafters.back()->eval();
  }
  for (size_t i = 0; i < e.drafters.size(); ++i) {
    model::Llama* drafter = drafters[i].get();
    log::info("evaluate: exact greedy tau of ", names[i], ": one pass over ", turns.size(), " answers");
    std::vector<std::vector<int64_t>> argmax;
    for (const auto& t : turns) {
      stop_point(str_cat("in the exact pass of ", names[i]));
      argmax.push_back(teacher_forced_argmax(*drafter, t.tokens, t.answer.tokens));
    }
    report.exact.push_back({names[i], e.drafters[i], drafter->num_params(), "model",
                            exact_points([&](size_t k) { return model_proposer(argmax[k]); })});
    if (e.hybrid)
      report.exact.push_back({names[i] + "+lookup", e.drafters[i], drafter->num_params(), "hybrid",
                              exact_points([&](size_t k) {
                                return hybrid_proposer(turns[k].tokens, turns[k].answer.tokens, argmax[k],
                                                       e.prompt_lookup_min, e.prompt_lookup_max);
                              })});
  }

  // 5. The speculative sampling check on the first sampling_prompts turns, at every sampling temperature: the target's
  //    sampled answers, scored in one teacher-forced pass of target and drafter (alpha per position), and the real
  //    decoder on the same turns.
  const std::vector<Turn> checked(turns.begin(), turns.begin() + std::min<int64_t>(e.sampling_prompts, turns.size()));
  report.sampling_turns = static_cast<int64_t>(checked.size());
  report.sampling_max_new_tokens = e.sampling_max_new_tokens;
  if (!checked.empty() && !drafters.empty() && !e.sampling_temperatures.empty()) {
    for (size_t i = 0; i < drafters.size(); ++i) report.sampling.push_back({names[i], {}});
    std::vector<std::vector<int64_t>> prompts;
    std::vector<uint64_t> seeds;
    for (const auto& t : checked) prompts.push_back(t.tokens), seeds.push_back(t.seed);
    for (double temperature : e.sampling_temperatures) {
      model::SamplingParams sp;
      sp.temperature = temperature, sp.top_p = e.top_p, sp.top_k = e.top_k;
      sp.max_new_tokens = e.sampling_max_new_tokens, sp.stop_ids = stop_ids;
      log::info("evaluate: speculative sampling check at T=", temperature, ": the target samples ", checked.size(),
                " answers of up to ", e.sampling_max_new_tokens, " tokens; one-pass alpha and the real decoder at g=",
                e.sampling_gamma);
      const auto answers = sampled_answers(*target, prompts, seeds, sp, e.batch_size);
      std::vector<torch::Tensor> p;  // the target's distributions along each answer
      for (size_t k = 0; k < checked.size(); ++k)
        p.push_back(answers[k].empty() ? torch::Tensor() : teacher_forced_probs(*target, prompts[k], answers[k], sp));
      for (size_t i = 0; i < drafters.size(); ++i) {
        SamplingPoint point;
        point.temperature = temperature, point.gamma = e.sampling_gamma;
        SpeculativeDecoder dec(*target, drafters[i].get());
        for (size_t k = 0; k < checked.size(); ++k) {
          double alpha = 0;
          if (p[k].defined()) {
            const torch::Tensor q = teacher_forced_probs(*drafters[i], prompts[k], answers[k], sp);
            alpha = torch::minimum(p[k], q).sum(-1).clamp_max(1.0).sum().item<double>();  // <= 1 per position
          }
          point.alpha_sum.push_back(alpha);
          point.positions.push_back(static_cast<double>(answers[k].size()));
          point.measured.push_back(dec.decode(prompts[k], e.sampling_gamma, sp, checked[k].seed).counters);
        }
        report.sampling[i].points.push_back(std::move(point));
      }
    }
  }

  // 6. Timed speculative decoding on the first timed_prompts turns: each repeat runs plain decoding, then the drafter.
  const std::vector<Turn> timed(turns.begin(), turns.begin() + std::min<int64_t>(e.timed_prompts, turns.size()));
  report.timed_prompts = static_cast<int64_t>(timed.size());
  if (!timed.empty()) {
    model::SamplingParams sp;
    sp.top_p = e.top_p, sp.top_k = e.top_k, sp.max_new_tokens = e.timed_max_new_tokens, sp.stop_ids = stop_ids;
    // The step latencies are timed after the prompt and up to 2 * max_gamma answer tokens (an answer that ended
    // sooner gives fewer: reading past its end gave garbage ids, found by tools/mutation_sweep.py's tiny world).
    std::vector<int64_t> context = timed[0].tokens;
    const std::vector<int64_t>& answer = timed[0].answer.tokens;
    context.insert(context.end(), answer.begin(),
                   answer.begin() + std::min<int64_t>(2 * max_gamma, static_cast<int64_t>(answer.size())));
    report.target_step_seconds = decode_step_seconds(*target, context);
    for (int64_t g : e.gammas) report.verify_seconds.push_back({g, decode_step_seconds(*target, context, g + 1)});
    const int64_t kinds = static_cast<int64_t>(e.drafters.size()) * (e.hybrid ? 2 : 1) + (e.prompt_lookup ? 1 : 0);
    const int64_t passes = static_cast<int64_t>(e.temperatures.size() * e.gammas.size()) * kinds * e.repeats * 2;
    log::info("evaluate: timed speculative decoding of ", timed.size(), " turns x ", e.timed_max_new_tokens,
              " tokens: ", kinds, " drafters x ", e.gammas.size(), " gammas x ", e.temperatures.size(),
              " temperatures x ", e.repeats, " repeats, each after a plain run: ", passes, " passes");
    log::Progress progress("evaluate", passes, "pass", stdout, -1, cfg.run.progress_interval_s);
    int64_t done = 0;
    fs::ensure_dir(e.report_dir);
    SweepLog sweeps(stdfs::path(e.report_dir) / "sweep.jsonl", report.fingerprint);
    SpeculativeDecoder plain(*target, nullptr);
    auto sweep = [&](SpeculativeDecoder& dec, int64_t gamma, double temperature, const std::string& who) {
      if (const SweepPoint* p = sweeps.find(who, temperature, gamma)) {
        done += 2 * e.repeats;
        progress.skip(2 * e.repeats);  // finished in an earlier run: not in this run's rate
        return *p;
      }
      stop_point(str_cat("before the sweep point ", who, " T=", temperature, " g=", gamma, "; ", sweeps.size(),
                         " finished points are kept in ", (stdfs::path(e.report_dir) / "sweep.jsonl").string()));
      sp.temperature = temperature;
      SweepPoint point;
      point.temperature = temperature, point.gamma = gamma;
      for (int64_t r = 0; r < e.repeats; ++r) {
        Pass base = run_pass(plain, timed, 0, sp);
        progress.update(++done, str_cat("plain T=", temperature));
        Pass pass = run_pass(dec, timed, gamma, sp);
        progress.update(++done, str_cat(who, " T=", temperature, " g=", gamma));
        point.baseline_seconds.push_back(base.seconds);
        point.seconds.push_back(pass.seconds);
        if (r == 0) {
          point.baseline_counters = base.counters;
          point.counters = pass.counters, point.prompts = std::move(pass.records);
        }
      }
      sweeps.add(who, point);
      return point;
    };
    // A warm-up pass of each kind, not timed: the first runs pay for allocation.
    run_pass(plain, {timed[0]}, 0, sp);
    if (e.prompt_lookup) {
      SpeculativeDecoder dec(*target, LookupDrafting{e.prompt_lookup_min, e.prompt_lookup_max});
      DrafterResult res;
      res.name = "prompt-lookup";
      for (double t : e.temperatures)
        for (int64_t g : e.gammas) res.points.push_back(sweep(dec, g, t, res.name));
      report.drafters.push_back(std::move(res));
    }
    for (size_t i = 0; i < e.drafters.size(); ++i) {
      model::Llama* drafter = drafters[i].get();
      SpeculativeDecoder dec(*target, drafter);
      DrafterResult res;
      res.name = names[i], res.dir = e.drafters[i], res.params = drafter->num_params();
      res.step_seconds = decode_step_seconds(*drafter, context);
      for (double t : e.temperatures)
        for (int64_t g : e.gammas) res.points.push_back(sweep(dec, g, t, names[i]));
      report.drafters.push_back(res);
      if (e.hybrid) {
        SpeculativeDecoder both(*target, *drafter, LookupDrafting{e.prompt_lookup_min, e.prompt_lookup_max});
        res.name = names[i] + "+lookup", res.points.clear();
        for (double t : e.temperatures)
          for (int64_t g : e.gammas) res.points.push_back(sweep(both, g, t, res.name));
        report.drafters.push_back(std::move(res));
      }
    }
    progress.finish();
  }

  // 7. The report.
  const std::string why_no_plots = write_report(e.report_dir, report, plot_python(e.python));
  if (!why_no_plots.empty()) log::warn("evaluate: ", why_no_plots);
  const nlohmann::json j = report_json(report);
  for (const auto& d : j["exact_greedy"]["drafters"]) {
    std::string line;
    for (const auto& p : d["points"])
      line += str_cat(" g=", p["gamma"].get<int64_t>(), ":", p["tau"].get<double>());
    log::info("evaluate: exact greedy tau, ", d["name"].get<std::string>(), ":", line);
  }
  for (const auto& d : j["drafters"])
    for (const auto& p : d["points"])
      log::info("evaluate: timed ", d["name"].get<std::string>(), " T=", p["temperature"].get<double>(), " g=",
                p["gamma"].get<int64_t>(), ": tau ", p["metrics"]["block_efficiency"].get<double>(), ", speed-up ",
                p["speedup"].get<double>(), "x (bound ", p["speedup_bound"].get<double>(), ")");
  for (const auto& d : j["sampling"]["drafters"])
    for (const auto& p : d["points"])
      log::info("evaluate: sampling T=", p["temperature"].get<double>(), ", ", d["name"].get<std::string>(),
                ": one-pass alpha ", p["alpha"].get<double>(), ", measured first-position acceptance ",
                p["measured_first_position_acceptance"].get<double>(), " (z ", p["agreement_z"].get<double>(),
                "); at g=", p["gamma"].get<int64_t>(), " tau ", p["measured_tau"].get<double>(),
                " measured, ", p["tau_iid_estimate"][p["gamma"].get<int64_t>() - 1].get<double>(), " i.i.d. estimate");
  log::info("evaluate: report in ", (stdfs::path(e.report_dir) / "report.md").string());
  return 0;
}

}  // namespace draftalign::eval

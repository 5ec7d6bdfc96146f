#include "evaluators/evaluate.h"

#include <chrono>
#include <cstdlib>
#include <map>
#include <sstream>
#include <tuple>

#include "common/device.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "data/prompts.h"
#include "data/shards.h"
#include "evaluators/report.h"
#include "evaluators/speculative.h"
#include "io/hf_checkpoint.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

namespace draftalign::eval {

namespace stdfs = std::filesystem;

namespace {

struct EvalPrompt {
  std::string id;
  std::vector<int64_t> tokens;
  uint64_t seed = 0;
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

// One pass over every prompt with one setting: appends its wall time to `point`, and with `keep_records` sets the
// counters and per-prompt records.
void run_pass(SpeculativeDecoder& dec, const std::vector<EvalPrompt>& prompts, int64_t gamma,
              const model::SamplingParams& sp, bool keep_records, SweepPoint& point) {
  const auto t0 = std::chrono::steady_clock::now();
  SpecCounters total;
  std::vector<PromptRun> records;
  for (const auto& p : prompts) {
    const Decoded d = dec.decode(p.tokens, gamma, sp, p.seed);
    total.add(d.counters);
    if (keep_records)
      records.push_back({p.id, static_cast<int64_t>(p.tokens.size()), d.finish, d.counters});
  }
  point.seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (keep_records) point.counters = total, point.prompts = std::move(records);
}

// sweep.jsonl in the report directory: the evaluation's progress. A header line with the fingerprint of the inputs,
// then one line per finished sweep point (who: "target-only" or the drafter's name, then sweep_point_json). The file
// is rewritten atomically after each point, so an interrupted evaluation resumes at the first unfinished point with
// the earlier points' counters and wall times as they were measured; a file made from other inputs is started over.
class SweepLog {
 public:
  SweepLog(stdfs::path file, const std::string& fingerprint) : file_(std::move(file)) {
    text_ = nlohmann::json({{"fingerprint", fingerprint}}).dump() + "\n";
    if (!stdfs::exists(file_)) return;
    std::istringstream in(fs::read_file(file_));
    std::string line;
    std::getline(in, line);
    const nlohmann::json head = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!head.is_object() || head.value("fingerprint", "") != fingerprint) {
      log::info("evaluate: ", file_.string(), " was made from other inputs; the sweep starts over");
      return;
    }
    for (int64_t n = 2; std::getline(in, line); ++n) {
      if (line.empty()) continue;
      try {
        const nlohmann::json j = nlohmann::json::parse(line);
        done_[key(j.at("who"), j.at("temperature"), j.at("gamma"))] = sweep_point_from_json(j);
      } catch (const nlohmann::json::exception& ex) {
        throw Error(str_cat(file_.string(), ":", n, ": not a sweep record (", ex.what(),
                            "); delete the file to run the whole evaluation again"));
      }
      text_ += line + "\n";
    }
    if (!done_.empty())
      log::info("evaluate: resuming: ", done_.size(), " sweep points already done in ", file_.string());
  }

  // The stored point of `who` at (temperature, gamma), or nullptr.
  const SweepPoint* find(const std::string& who, double temperature, int64_t gamma) const {
    const auto it = done_.find(key(who, temperature, gamma));
    return it == done_.end() ? nullptr : &it->second;
  }

  void add(const std::string& who, const SweepPoint& p) {
    nlohmann::json j = sweep_point_json(p);
    j["who"] = who;
    text_ += j.dump() + "\n";
    fs::write_file_atomic(file_, text_);
  }

 private:
  using Key = std::tuple<std::string, double, int64_t>;
  static Key key(const std::string& who, double t, int64_t g) { return {who, t, g}; }

  stdfs::path file_;
  std::string text_;  // the file's contents: the header and every finished point
  std::map<Key, SweepPoint> done_;
};

}  // namespace

std::string evaluate_fingerprint(const config::Config& cfg) {
  const config::EvaluateSection& e = cfg.evaluate;
  std::string s = str_cat("seed=", cfg.run.seed, " device=", cfg.run.device, " target=", cfg.target.dir, " dtype=",
                          cfg.target.dtype, " template=", cfg.target.chat_template, " top_p=", e.top_p, " top_k=",
                          e.top_k, " new=", e.max_new_tokens, " max=", e.max_prompts, " repeats=", e.repeats);
  for (int64_t g : e.gammas) s += str_cat(" g=", g);
  for (double t : e.temperatures) s += str_cat(" T=", t);
  auto stamp = [](const stdfs::path& f) {
    std::error_code ec;
    const auto size = stdfs::file_size(f, ec);
    const auto time = stdfs::last_write_time(f, ec).time_since_epoch().count();
    return str_cat(f.string(), ":", ec ? 0 : size, ":", ec ? 0 : time);
  };
  for (const auto& p : e.prompts) s += " prompts=" + stamp(p);
  for (const auto& d : e.drafters) s += " drafter=" + stamp(stdfs::path(d) / "model.safetensors");
  return data::checksum_hex(s);
}

int evaluate(const config::Config& cfg) {
  const config::EvaluateSection& e = cfg.evaluate;
  // 1. Inputs, checked before any weights are loaded.
  const io::LlamaConfig target_cfg = io::read_hf_config(stdfs::path(cfg.target.dir) / "config.json");
  io::HfCheckpoint::open(cfg.target.dir).check_llama();
  const auto tokenizer = tok::load_tokenizer(cfg.target.dir);
  const auto chat = tok::ChatTemplate::from_dir(cfg.target.dir, cfg.target.chat_template);
  for (const auto& d : e.drafters) check_drafter(d, target_cfg, cfg, *tokenizer);
  const data::PromptSet set = data::load_prompts(e.prompts, /*skip_bad=*/false, e.max_prompts);
  const int64_t max_gamma = *std::max_element(e.gammas.begin(), e.gammas.end());
  std::vector<EvalPrompt> prompts;
  int64_t too_long = 0;
  for (const auto& p : set.prompts) {
    EvalPrompt x{p.id, tokenizer->encode(chat.render(p.messages)),
                 model::splitmix64(model::splitmix64(static_cast<uint64_t>(cfg.run.seed)) ^
                                   static_cast<uint64_t>(p.index))};
    // Positions: the prompt, the response and one draft block past it must fit both models.
    if (static_cast<int64_t>(x.tokens.size()) + e.max_new_tokens + max_gamma + 1 > target_cfg.max_position_embeddings)
      ++too_long;
    else
      prompts.push_back(std::move(x));
  }
  if (too_long > 0)
    log::warn("evaluate: skipped ", too_long, " prompts longer than the target's ", target_cfg.max_position_embeddings,
              " positions minus evaluate.max_new_tokens and the longest draft");
  DA_CHECK(!prompts.empty(), "evaluate: every prompt is too long for evaluate.max_new_tokens = ", e.max_new_tokens);

  // 2. Models, in the target's compute dtype.
  const std::string dev = resolve_device(cfg.run.device);
  const torch::Device device = dev == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (cfg.run.threads > 0) torch::set_num_threads(static_cast<int>(cfg.run.threads));
  const bool bf16 = cfg.target.dtype == "bf16" || (cfg.target.dtype == "auto" && device.is_cuda());
  const torch::ScalarType dtype = bf16 ? torch::kBFloat16 : torch::kFloat32;
  auto target = model::load_llama(cfg.target.dir, device, dtype);
  target->eval();
  model::SamplingParams sp;
  sp.top_p = e.top_p, sp.top_k = e.top_k, sp.max_new_tokens = e.max_new_tokens;
  if (tokenizer->special().eos >= 0) sp.stop_ids.push_back(tokenizer->special().eos);
  for (int64_t id : target_cfg.eos_token_ids)
    if (std::find(sp.stop_ids.begin(), sp.stop_ids.end(), id) == sp.stop_ids.end()) sp.stop_ids.push_back(id);

  Report report;
  report.target_dir = cfg.target.dir, report.device = dev, report.dtype = bf16 ? "bf16" : "fp32";
  report.fingerprint = evaluate_fingerprint(cfg);
  report.target_params = target->num_params();
  report.prompt_files = e.prompts, report.prompts = static_cast<int64_t>(prompts.size());
  report.max_new_tokens = e.max_new_tokens, report.top_p = e.top_p, report.top_k = e.top_k, report.repeats = e.repeats;
  report.target_step_seconds = decode_step_seconds(*target, prompts[0].tokens);
  const int64_t passes = static_cast<int64_t>(e.temperatures.size()) * e.repeats *
                         (1 + static_cast<int64_t>(e.drafters.size() * e.gammas.size()));
  log::info("evaluate: ", prompts.size(), " prompts, ", e.drafters.size(), " drafters, gamma ",
            config::join([&] {
              std::vector<std::string> g;
              for (int64_t x : e.gammas) g.push_back(std::to_string(x));
              return g;
            }()),
            ", ", e.temperatures.size(), " temperatures, ", e.repeats, " timed runs each: ", passes, " passes on ", dev);
  log::Progress progress("evaluate", passes, "pass", stdout, -1, cfg.run.progress_interval_s);
  int64_t done = 0;
  fs::ensure_dir(e.report_dir);
  SweepLog sweeps(stdfs::path(e.report_dir) / "sweep.jsonl", report.fingerprint);
  auto sweep = [&](SpeculativeDecoder& dec, int64_t gamma, double temperature, const std::string& who) {
    if (const SweepPoint* p = sweeps.find(who, temperature, gamma)) {
      done += e.repeats;
      return *p;
    }
    sp.temperature = temperature;
    SweepPoint point;
    point.temperature = temperature, point.gamma = gamma;
    for (int64_t r = 0; r < e.repeats; ++r) {
      run_pass(dec, prompts, gamma, sp, r == 0, point);
      progress.update(++done, str_cat(who, " T=", temperature, " g=", gamma));
    }
    sweeps.add(who, point);
    return point;
  };

  // 3. The target alone (gamma = 0), then each drafter at each (temperature, gamma).
  {
    SpeculativeDecoder alone(*target, nullptr);
    for (double t : e.temperatures) report.baselines.push_back(sweep(alone, 0, t, "target-only"));
  }
  const std::vector<std::string> names = drafter_names(e.drafters);
  for (size_t i = 0; i < e.drafters.size(); ++i) {
    auto drafter = model::load_llama(e.drafters[i], device, dtype);
    drafter->eval();
    SpeculativeDecoder dec(*target, drafter.get());
    DrafterResult res;
    res.name = names[i], res.dir = e.drafters[i], res.params = drafter->num_params();
    res.step_seconds = decode_step_seconds(*drafter, prompts[0].tokens);
    for (double t : e.temperatures)
      for (int64_t g : e.gammas) res.points.push_back(sweep(dec, g, t, names[i]));
    report.drafters.push_back(std::move(res));
  }
  progress.finish();

  // 4. The report.
  const std::string why_no_plots = write_report(e.report_dir, report, plot_python(e.python));
  if (!why_no_plots.empty()) log::warn("evaluate: ", why_no_plots);
  const nlohmann::json j = report_json(report);
  for (const auto& d : j["drafters"])
    for (const auto& p : d["points"])
      log::info("evaluate: ", d["name"].get<std::string>(), " T=", p["temperature"].get<double>(), " g=",
                p["gamma"].get<int64_t>(), ": tau ", p["metrics"]["block_efficiency"].get<double>(), ", speed-up ",
                p["speedup"].get<double>(), "x");
  log::info("evaluate: report in ", (stdfs::path(e.report_dir) / "report.md").string());
  return 0;
}

}  // namespace draftalign::eval

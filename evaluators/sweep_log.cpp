// sweep_log.cpp: sweep.jsonl, an evaluation's progress (report.h's SweepLog), and the counters as JSON in and out.
#include <sstream>

#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "evaluators/report.h"

namespace draftalign::eval {

using nlohmann::json;
namespace stdfs = std::filesystem;

json counters_json(const SpecCounters& c) {
  return {{"num_drafts", c.num_drafts},
          {"num_draft_tokens", c.num_draft_tokens},
          {"num_accepted_tokens", c.num_accepted_tokens},
          {"num_accepted_tokens_per_pos", c.num_accepted_tokens_per_pos},
          {"acceptance_counts", c.acceptance_counts},
          {"num_emitted_tokens", c.num_emitted_tokens},
          {"num_target_calls", c.num_target_calls},
          {"calls_by_draft_length", c.calls_by_draft_length},
          {"num_drafter_calls", c.num_drafter_calls}};
}

namespace {

// A non-negative integer j[key], else an Error naming the key: nlohmann's get<int64_t> would cast any number.
int64_t count_at(const json& j, const char* key) {
  const json& v = j.at(key);
  DA_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0, "'", key, "' is not a non-negative integer");
  return v.get<int64_t>();
}

std::vector<int64_t> counts_at(const json& j, const char* key) {
  const json& v = j.at(key);
  DA_CHECK(v.is_array(), "'", key, "' is not a list");
  std::vector<int64_t> out;
  for (const json& x : v) {
    DA_CHECK(x.is_number_integer() && x.get<int64_t>() >= 0, "'", key,
             "' holds a value that is not a non-negative integer");
    out.push_back(x.get<int64_t>());
  }
  return out;
}

// A wall time: a finite non-negative number.
bool is_seconds(const json& x) { return x.is_number() && x.get<double>() >= 0 && x.get<double>() < 1e300; }

// A list of wall times.
std::vector<double> seconds_at(const json& j, const char* key) {
  const json& v = j.at(key);
  DA_CHECK(v.is_array(), "'", key, "' is not a list");
  std::vector<double> out;
  for (const json& x : v) {
    DA_CHECK(is_seconds(x), "'", key, "' holds a value that is not a time in seconds");
    out.push_back(x.get<double>());
  }
  return out;
}

SpecCounters counters_from_json(const json& j) {
  SpecCounters c;
  c.num_drafts = count_at(j, "num_drafts"), c.num_draft_tokens = count_at(j, "num_draft_tokens");
  c.num_accepted_tokens = count_at(j, "num_accepted_tokens");
  c.num_accepted_tokens_per_pos = counts_at(j, "num_accepted_tokens_per_pos");
  c.acceptance_counts = counts_at(j, "acceptance_counts");
  c.num_emitted_tokens = count_at(j, "num_emitted_tokens"), c.num_target_calls = count_at(j, "num_target_calls");
  c.calls_by_draft_length = counts_at(j, "calls_by_draft_length");
  c.num_drafter_calls = count_at(j, "num_drafter_calls");
  return c;
}

json step_times_json(const StepTimes& t) {
  return {{"target_seconds", t.target_seconds},
          {"target_calls", t.target_calls},
          {"drafter_seconds", t.drafter_seconds},
          {"drafter_calls", t.drafter_calls}};
}

StepTimes step_times_from_json(const json& j) {
  StepTimes t;
  t.target_seconds = seconds_at(j, "target_seconds"), t.target_calls = counts_at(j, "target_calls");
  DA_CHECK(t.target_seconds.size() == t.target_calls.size(), "'target_seconds' and 'target_calls' differ in length");
  DA_CHECK(is_seconds(j.at("drafter_seconds")), "'drafter_seconds' is not a time in seconds");
  t.drafter_seconds = j.at("drafter_seconds").get<double>(), t.drafter_calls = count_at(j, "drafter_calls");
  return t;
}

}  // namespace

json sweep_point_json(const SweepPoint& p) {
  json prompts = json::array();
  for (const auto& pr : p.prompts)
    prompts.push_back({{"prompt_id", pr.prompt_id},
                       {"prompt_tokens", pr.prompt_tokens},
                       {"finish", model::finish_name(pr.finish)},
                       {"counters", counters_json(pr.counters)},
                       {"seconds", pr.seconds},
                       {"baseline_seconds", pr.baseline_seconds},
                       {"baseline_tokens", pr.baseline_tokens}});
  return {{"temperature", p.temperature},
          {"gamma", p.gamma},
          {"counters", counters_json(p.counters)},
          {"seconds", p.seconds},
          {"prompts", prompts},
          {"baseline_counters", counters_json(p.baseline_counters)},
          {"baseline_seconds", p.baseline_seconds},
          {"times", step_times_json(p.times)},
          {"baseline_times", step_times_json(p.baseline_times)}};
}

SweepPoint sweep_point_from_json(const json& j) {
  SweepPoint p;
  DA_CHECK(j.at("temperature").is_number(), "'temperature' is not a number");
  p.temperature = j.at("temperature"), p.gamma = count_at(j, "gamma");
  p.counters = counters_from_json(j.at("counters"));
  p.seconds = seconds_at(j, "seconds");
  p.baseline_counters = counters_from_json(j.at("baseline_counters"));
  p.baseline_seconds = seconds_at(j, "baseline_seconds");
  p.times = step_times_from_json(j.at("times")), p.baseline_times = step_times_from_json(j.at("baseline_times"));
  DA_CHECK(j.at("prompts").is_array(), "'prompts' is not a list");
  for (const auto& pr : j.at("prompts")) {
    PromptRun run{pr.at("prompt_id"), count_at(pr, "prompt_tokens"),
                  model::finish_from_name(pr.at("finish").get<std::string>(), "'finish'"),
                  counters_from_json(pr.at("counters"))};
    run.seconds = seconds_at(pr, "seconds"), run.baseline_seconds = seconds_at(pr, "baseline_seconds");
    run.baseline_tokens = count_at(pr, "baseline_tokens");
    DA_CHECK(run.seconds.size() == p.seconds.size() && run.baseline_seconds.size() == p.seconds.size(),
             "a prompt's wall times are not one per repeat");
    p.prompts.push_back(std::move(run));
  }
  return p;
}

SweepLog::SweepLog(stdfs::path file, const std::string& fingerprint) : file_(std::move(file)) {
  text_ = json({{"fingerprint", fingerprint}}).dump() + "\n";
  if (!stdfs::exists(file_)) return;
  std::istringstream in(fs::read_file(file_));
  std::string line;
  std::getline(in, line);
  const json head = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!head.is_object() || !head.contains("fingerprint") || head["fingerprint"] != fingerprint) {
    log::info("evaluate: ", file_.string(), " was made from other inputs; the sweep starts over");
    return;
  }
  for (int64_t n = 2; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    auto bad = [&](const std::string& why) {
      return Error(str_cat(file_.string(), ":", n, ": not a sweep record (", why,
                           "); delete the file to run the whole evaluation again"));
    };
    try {
      const json j = json::parse(line);
      DA_CHECK(j.is_object() && j.contains("who") && j["who"].is_string(), "no 'who'");
      SweepPoint p = sweep_point_from_json(j);
      done_[{j["who"].get<std::string>(), p.temperature, p.gamma}] = std::move(p);
    } catch (const json::exception& ex) {
      throw bad(ex.what());
    } catch (const Error& ex) {
      throw bad(ex.what());
    }
    text_ += line + "\n";
  }
  if (!done_.empty()) log::info("evaluate: resuming: ", done_.size(), " sweep points already done in ", file_.string());
}

const SweepPoint* SweepLog::find(const std::string& who, double temperature, int64_t gamma) const {
  const auto it = done_.find({who, temperature, gamma});
  return it == done_.end() ? nullptr : &it->second;
}

bool SweepLog::all_found(const std::string& who, const std::vector<double>& temperatures,
                         const std::vector<int64_t>& gammas) const {
  for (double t : temperatures)
    for (int64_t g : gammas)
      if (find(who, t, g) == nullptr) return false;
  return true;
}

void SweepLog::add(const std::string& who, const SweepPoint& p) {
  json j = sweep_point_json(p);
  j["who"] = who;
  text_ += j.dump() + "\n";
  fs::write_file_atomic(file_, text_);
  ++added_;
}

}  // namespace draftalign::eval

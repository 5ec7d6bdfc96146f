// report_markdown.cpp: report.md, the tables of report.json (report.h's report_markdown), one function per section.
#include <algorithm>
#include <cstdio>

#include "common/error.h"
#include "evaluators/report.h"

namespace draftalign::eval {

using nlohmann::json;

namespace {

std::string fixed(double x, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

std::string temperature_name(double t) { return t == 0 ? "greedy (T = 0)" : "T = " + fixed(t, 2); }

// "1.234 [1.200, 1.268]"
std::string with_interval(const json& value, const json& ci, int digits = 3) {
  return str_cat(fixed(value.get<double>(), digits), " [", fixed(ci[0].get<double>(), digits), ", ",
                 fixed(ci[1].get<double>(), digits), "]");
}

std::string p_text(double p) { return p < 0.001 ? "< 0.001" : fixed(p, 3); }

// A row that stands for one training seed of a method whose combined row is in the table too.
bool is_seed_row(const json& d) { return d.contains("seed"); }

// A Markdown table with a row per drafter (of `drafters`) and a column per gamma; cell(point) fills it, and
// keep(point) chooses the points.
template <class Keep, class Cell>
std::string gamma_table(const json& drafters, Keep keep, Cell cell) {
  std::vector<int64_t> gammas;
  for (const auto& d : drafters)
    for (const auto& p : d["points"])
      if (keep(p) && std::find(gammas.begin(), gammas.end(), p["gamma"].get<int64_t>()) == gammas.end())
        gammas.push_back(p["gamma"].get<int64_t>());
  std::sort(gammas.begin(), gammas.end());
  std::string out = "| drafter", rule = "|---";
  for (int64_t g : gammas) out += str_cat(" | g=", g), rule += "|---:";
  out += " |\n" + rule + "|\n";
  for (const auto& d : drafters) {
    out += "| " + d["name"].get<std::string>();
    for (int64_t g : gammas) {
      std::string text;
      for (const auto& p : d["points"])
        if (keep(p) && p["gamma"].get<int64_t>() == g) text = cell(p);
      out += " | " + text;
    }
    out += " |\n";
  }
  return out + "\n";
}

const json* point_at(const json& drafter, int64_t gamma) {
  for (const auto& p : drafter["points"])
    if (p["gamma"].get<int64_t>() == gamma) return &p;
  return nullptr;
}

std::string header_section(const json& r) {
  const json& env = r["environment"];
  const json& ex = r["exact_greedy"];
  std::string md = "# Speculative decoding report\n\n";
  md += str_cat("- target: `", r["target"]["dir"].get<std::string>(), "` (", r["target"]["params"].get<int64_t>(),
                " parameters), ", r["dtype"].get<std::string>(), "\n");
  md += str_cat("- environment: ", env["device_name"].get<std::string>(), "; LibTorch ",
                env["libtorch"].get<std::string>(), ", CUDA ", env["cuda"].get<std::string>(), ", ",
                env["threads"].get<int64_t>(), " threads; commit ", env["git_commit"].get<std::string>(), "\n");
  std::string files;
  for (const auto& f : r["prompt_files"]) files += (files.empty() ? "`" : ", `") + f.get<std::string>() + "`";
  md += str_cat("- prompts: ", r["prompts"].get<int64_t>(), " from ", files, ", up to ", r["turns"].get<int64_t>(),
                " turns each: ", ex["items"].get<int64_t>(), " evaluated turns, each measured on up to ",
                r["max_new_tokens"].get<int64_t>(), " new tokens of the target's greedy answer; a later turn is asked "
                "after the target's own greedy answer to the one before, decoded up to ",
                r["context_max_new_tokens"].get<int64_t>(), " tokens",
                r["skipped_turns"].get<int64_t>() > 0
                    ? str_cat("; ", r["skipped_turns"].get<int64_t>(), " turns too long for the models were skipped")
                    : std::string(), "\n");
  md += str_cat("- intervals: 95% percentile bootstrap over ", r["bootstrap"]["clusters"].get<int64_t>(),
                " clusters of turns (every turn of one prompt, an MT-bench question, is one cluster and is resampled "
                "with it), ", r["bootstrap"]["resamples"].get<int64_t>(),
                " resamples; a row that combines training seeds resamples its seeds too (two-level); differences are "
                "paired over the same clusters\n\n");
  return md;
}

std::string exact_section(const json& r) {
  const json& ex = r["exact_greedy"];
  std::string md =
      "## Exact greedy block efficiency tau (one pass)\n\n"
      "The target's greedy answer is decoded once; each drafter reads prompt + answer in one teacher-forced pass, "
      "and greedy speculative decoding's counters follow exactly for every draft length g (tokens per target "
      "call, with 95% intervals). `prompt-lookup` drafts by n-gram lookup in the context and needs no model. A row "
      "named after a method whose seeds are listed below it pools those seeds (its interval resamples seeds and "
      "questions); claims about a method are made on that row.\n\n";
  md += "| drafter | kind | parameters | draft vocabulary (share of the answers' tokens) | training seeds |\n"
        "|---|---|---:|---|---|\n";
  for (const auto& d : ex["drafters"]) {
    std::string seeds = "-";
    if (d.contains("seeds")) {
      seeds.clear();
      for (const auto& s : d["seeds"]) seeds += (seeds.empty() ? "" : ", ") + std::to_string(s.get<int64_t>());
      seeds = "combined: " + seeds;
    } else if (d.contains("seed")) {
      seeds = str_cat("seed ", d["seed"].get<int64_t>(), " of ", d["group"].get<std::string>());
    }
    const std::string vocab = d.contains("draft_vocab_size")
                                  ? str_cat(d["draft_vocab_size"].get<int64_t>(), " (",
                                            fixed(100.0 * d["answer_coverage"].get<double>(), 1), "%)")
                                  : "all";
    md += str_cat("| ", d["name"].get<std::string>(), " | ", d["kind"].get<std::string>(), " | ",
                  d["params"].get<int64_t>(), " | ", vocab, " | ", seeds, " |\n");
  }
  md += "\n" + gamma_table(
                   ex["drafters"], [](const json&) { return true; },
                   [](const json& p) { return with_interval(p["tau"], p["tau_ci"]); });
  md +=
      "Acceptance at g = 1. A model drafter proposes at every target call (proposal rate 1); prompt lookup and the "
      "hybrids propose only where the context's trailing n-gram recurs, so their first-position acceptance is "
      "conditional on a proposal: the accepted tokens per target call compare all kinds.\n\n"
      "| drafter | proposal rate | first-position acceptance, given a draft | accepted per target call |\n"
      "|---|---:|---:|---:|\n";
  for (const auto& d : ex["drafters"])
    if (!d["points"].empty()) {
      const json& p = d["points"][0];
      md += str_cat("| ", d["name"].get<std::string>(), " | ", with_interval(p["proposal_rate"], p["proposal_rate_ci"]),
                    " | ", with_interval(p["first_position_acceptance"], p["first_position_acceptance_ci"]), " | ",
                    with_interval(p["accepted_per_call"], p["accepted_per_call_ci"]), " |\n");
    }
  md += "\n";

  const int64_t g = ex["family"]["gamma"].get<int64_t>();
  if (ex["turns"].size() > 1) {
    md += str_cat("### By turn (g = ", g, ")\n\n| drafter");
    std::string rule = "|---";
    for (const auto& t : ex["turns"]) md += str_cat(" | turn ", t.get<int64_t>()), rule += "|---:";
    md += " |\n" + rule + "|\n";
    for (const auto& d : ex["drafters"]) {
      const json* p = point_at(d, g);
      if (p == nullptr) continue;
      md += "| " + d["name"].get<std::string>();
      for (const auto& x : (*p)["by_turn"])
        md += " | " + (x["items"].get<int64_t>() > 0 ? with_interval(x["tau"], x["tau_ci"]) : std::string("-"));
      md += " |\n";
    }
    md += "\n";
  }
  if (!ex["categories"].empty()) {
    md += str_cat("### By category (g = ", g, "; single seeds of a combined method left out)\n\n| category | turns");
    std::string rule = "|---|---:";
    for (const auto& d : ex["drafters"])
      if (!is_seed_row(d)) md += " | " + d["name"].get<std::string>(), rule += "|---:";
    md += " |\n" + rule + "|\n";
    for (size_t c = 0; c < ex["categories"].size(); ++c) {
      std::string row, items;
      for (const auto& d : ex["drafters"]) {
        const json* p = point_at(d, g);
        if (p == nullptr || is_seed_row(d)) continue;
        const json& x = (*p)["by_category"][c];
        items = std::to_string(x["items"].get<int64_t>());
        row += " | " + with_interval(x["tau"], x["tau_ci"]);
      }
      md += str_cat("| ", ex["categories"][c].get<std::string>(), " | ", items, row, " |\n");
    }
    md += "\n";
  }
  return md;
}

std::string differences_section(const json& r) {
  const json& ex = r["exact_greedy"];
  const json& family = ex["family"];
  if (ex["differences"].empty()) return "";
  const int64_t m = family["size"].get<int64_t>();
  std::string md = str_cat(
      "### Paired differences in tau (g = ", family["gamma"].get<int64_t>(), ")\n\nThe family: ",
      family["contrasts"].get<std::string>(), ", ", m, " comparisons. ", family["correction"].get<std::string>(),
      ". Only a significant difference says one drafter is better; the 95% interval is per comparison, the corrected "
      "one holds for the whole family at once.\n\n"
      "| drafter | versus | difference [95%] | corrected interval | p | p (Holm) | significant |\n"
      "|---|---|---:|---:|---:|---:|---|\n");
  for (const auto& x : ex["differences"])
    md += str_cat("| ", x["drafter"].get<std::string>(), " | ", x["versus"].get<std::string>(), " | ",
                  with_interval(x["difference"], x["difference_ci"]), " | [",
                  fixed(x["corrected_ci"][0].get<double>(), 3), ", ", fixed(x["corrected_ci"][1].get<double>(), 3),
                  "] | ", p_text(x["p"].get<double>()), " | ", p_text(x["p_holm"].get<double>()), " | ",
                  x["significant"].get<bool>() ? "**yes**" : "no", " |\n");
  return md + "\n";
}

std::string timed_section(const json& r) {
  if (r["drafters"].empty()) return "";
  const json& timed = r["timed"];
  std::string md = str_cat(
      "## Timed speculative decoding\n\nThe real draft-then-verify decoder on ", timed["prompts"].get<int64_t>(),
      " evaluated turns (", timed["sample"].get<std::string>(), "), up to ", timed["max_new_tokens"].get<int64_t>(),
      " tokens each, one sequence at a time; top_p ", timed["top_p"].get<double>(), ", top_k ",
      timed["top_k"].get<int64_t>(), ". Every decoder is warmed up first (and on CUDA its graphs captured) outside the "
      "timed runs. Each of ", timed["repeats"].get<int64_t>(),
      " repeats decodes every turn plainly (the target alone) and then with the drafter, each timed from its first "
      "decode step (the prompt's prefill, the same work either way, is left out); each turn's time is the median of "
      "its repeats, and the speed-up is tokens/s with the drafter over tokens/s plain, summed over the "
      "turns, with a bootstrap interval over their clusters. `tau` is that of the timed turns. `bound` is what the "
      "counters and the step costs allow: emitted tokens x one plain step / (each target call's verification of its "
      "own block length + drafter calls x one drafter step), each cost the mean inside the timed decodes (a target "
      "call's by its block length, pooled over every decoder; a drafter step over its own row); a speed-up more than "
      "10% above it is flagged.\n\n");
  md += "| drafter | parameters | c (params) | c (latency) |\n|---|---:|---:|---:|\n";
  for (const auto& d : r["drafters"])
    md += str_cat("| ", d["name"].get<std::string>(), " | ", d["params"].get<int64_t>(), " | ",
                  fixed(d["param_ratio"].get<double>(), 2), " | ", fixed(d["latency_ratio"].get<double>(), 2), " |\n");
  md += "\n";
  std::vector<double> temps;
  for (const auto& d : r["drafters"])
    for (const auto& p : d["points"])
      if (std::find(temps.begin(), temps.end(), p["temperature"].get<double>()) == temps.end())
        temps.push_back(p["temperature"].get<double>());
  std::sort(temps.begin(), temps.end());
  for (double t : temps) {
    auto at_t = [t](const json& p) { return p["temperature"].get<double>() == t; };
    md += "### " + temperature_name(t) + "\n\nWall-clock speed-up over plain decoding [95%] (bound; tau of the timed "
          "turns):\n\n";
    md += gamma_table(r["drafters"], at_t, [](const json& p) {
      return str_cat(with_interval(p["speedup"], p["speedup_ci"], 2), " (", fixed(p["speedup_bound"].get<double>(), 2),
                     p["exceeds_bound"].get<bool>() ? ", **exceeds the bound**" : "", "; tau ",
                     fixed(p["tau"].get<double>(), 3), ")");
    });
    md += "Block efficiency tau of the timed turns:\n\n";
    md += gamma_table(r["drafters"], at_t, [](const json& p) { return with_interval(p["tau"], p["tau_ci"]); });
    md += "Measured first-position acceptance (given a draft):\n\n";
    md += gamma_table(r["drafters"], at_t, [](const json& p) {
      return with_interval(p["first_position_acceptance"], p["first_position_acceptance_ci"]);
    });
    md += "MBSU (measured-latency MBSU):\n\n";
    md += gamma_table(r["drafters"], at_t, [](const json& p) {
      if (p["mbsu"].is_null()) return std::string("n/a (no drafter model)");
      return str_cat(fixed(p["mbsu"].get<double>(), 2), " (", fixed(p["mbsu_latency"].get<double>(), 2), ")");
    });
  }
  return md;
}

std::string sampling_section(const json& r) {
  const json& sc = r["sampling"];
  if (sc["drafters"].empty()) return "";
  std::string md = str_cat(
      "## Speculative sampling: one-pass alpha against the real decoder\n\nThe target samples an answer to each of ",
      sc["turns"].get<int64_t>(), " evaluated turns (", sc["sample"].get<std::string>(), "; up to ",
      sc["max_new_tokens"].get<int64_t>(), " tokens); one teacher-forced pass of target and drafter over it gives the "
      "per-position acceptance alpha = sum_x min(p, q). `tau (i.i.d. estimate)` is (1 - alpha^(g+1)) / (1 - alpha), "
      "which assumes independent acceptances: an estimate, not a measurement. Beside them, the real speculative "
      "sampling decoder on the same turns and temperature: its measured first-position acceptance should equal alpha "
      "within sampling error (z = difference / combined standard error), and its measured tau is the number to "
      "trust.\n\n| drafter | T | alpha (one pass) | measured first-position acceptance | z | g | tau (i.i.d. "
      "estimate) | tau (measured) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& d : sc["drafters"])
    for (const auto& p : d["points"]) {
      const int64_t g = p["gamma"].get<int64_t>();
      md += str_cat("| ", d["name"].get<std::string>(), " | ", fixed(p["temperature"].get<double>(), 2), " | ",
                    with_interval(p["alpha"], p["alpha_ci"]), " | ",
                    with_interval(p["measured_first_position_acceptance"], p["measured_first_position_acceptance_ci"]),
                    " | ", fixed(p["agreement_z"].get<double>(), 2), " | ", g, " | ",
                    fixed(p["tau_iid_estimate"][g - 1].get<double>(), 3), " | ",
                    with_interval(p["measured_tau"], p["measured_tau_ci"]), " |\n");
    }
  return md + "\n";
}

// The last numeric value of a series, or null.
const json* last_number(const json& xs) {
  const json* b = nullptr;
  for (const json& x : xs)
    if (x.is_number()) b = &x;
  return b;
}

std::string curves_section(const json& curves, bool* any_alpha) {
  if (curves.empty()) return "";
  std::string md =
      "## Training curves\n\nFrom each drafter's training run (its metrics.jsonl): the training loss, and the "
      "held-out numbers logged while it trained. For distillation, held-out alpha is the token-averaged "
      "sum_x min(p, q) against the target's distributions on the held-out distillation records (their number and a "
      "95% bootstrap interval over held-out prompts where the run logged them); for pretraining, the held-out "
      "next-token loss.\n\n"
      "| drafter | steps | loss, first -> last | held-out | first -> last | last, 95% interval | records |\n"
      "|---|---:|---:|---|---:|---:|---:|\n";
  auto first_last = [](const json& xs) {
    const json* a = nullptr;
    for (const json& x : xs)
      if (x.is_number() && a == nullptr) a = &x;
    const json* b = last_number(xs);
    return a ? str_cat(fixed(a->get<double>(), 4), " -> ", fixed(b->get<double>(), 4)) : std::string("-");
  };
  for (const json& c : curves) {
    const json& v = c["validation"];
    const char* key = v.contains("val_alpha") ? "val_alpha" : v.contains("val_loss") ? "val_loss" : nullptr;
    *any_alpha = *any_alpha || v.contains("val_alpha");
    std::string ci = "-", records = "-";
    if (v.contains("val_alpha_lo") && v.contains("val_alpha_hi")) {
      const json *lo = last_number(v["val_alpha_lo"]), *hi = last_number(v["val_alpha_hi"]);
      if (lo != nullptr && hi != nullptr)
        ci = str_cat("[", fixed(lo->get<double>(), 4), ", ", fixed(hi->get<double>(), 4), "]");
    }
    if (v.contains("val_records"))
      if (const json* n = last_number(v["val_records"])) records = std::to_string(n->get<int64_t>());
    const json& steps = c["train"]["step"];
    md += str_cat("| ", c["name"].get<std::string>(), " | ", steps.empty() ? int64_t{0} : steps.back().get<int64_t>(),
                  " | ", first_last(c["train"]["loss"]), " | ", key ? key : "-", " | ",
                  key ? first_last(v[key]) : std::string("-"), " | ", ci, " | ", records, " |\n");
  }
  return md + "\n";
}

}  // namespace

std::string report_markdown(const json& r) {
  std::string md = header_section(r) + exact_section(r) + differences_section(r) + timed_section(r) +
                   sampling_section(r);
  bool any_alpha = false;
  const json& curves = r.value("training_curves", json::array());
  md += curves_section(curves, &any_alpha);
  md +=
      "## Plots\n\n![tau vs gamma](tau_vs_gamma.png)\n![acceptance by position](acceptance_by_position.png)\n"
      "![speed-up vs gamma](speedup_vs_gamma.png)\n";
  if (!curves.empty()) md += "![training loss](training_loss.png)\n";
  if (any_alpha) md += "![held-out alpha](heldout_alpha.png)\n";
  return md;
}

}  // namespace draftalign::eval

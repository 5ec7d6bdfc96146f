#include "trainers/magpie.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "common/checksum.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "config/fingerprint.h"
#include "data/magpie.h"
#include "data/prompts.h"
#include "data/shards.h"
#include "model/generation.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"
#include "train/runtime.h"

namespace draftalign::train {
namespace {

namespace stdfs = std::filesystem;
using data::NearDuplicates;
using data::Prompt;
using data::junk_reason;
using data::load_prompts;
using json = nlohmann::json;

struct MagpieCounts {
  int64_t samples = 0, kept = 0;
  std::map<std::string, int64_t> dropped;  // reason -> count
};

// What the kept prompts depend on (config/fingerprint.h): a manifest with another fingerprint means the file is made
// again.
std::string magpie_fingerprint(const config::Config& cfg) {
  return config::stage_fingerprint(cfg, "magpie/v2", {"run", "target", "magpie"});
}

// <magpie.output>.manifest.json: the settings' fingerprint, the sample and drop counts.
stdfs::path manifest_of(const config::MagpieSection& m) { return m.output + ".manifest.json"; }

// The manifest of magpie.output when it was made with these settings, else null.
json matching_manifest(const config::Config& cfg) {
  const stdfs::path out = cfg.magpie.output, manifest = manifest_of(cfg.magpie);
  if (!stdfs::exists(out) || !stdfs::exists(manifest)) return nullptr;
  const json old = json::parse(fs::read_file(manifest), nullptr, false);
  return old.is_object() && old.contains("plan") && old["plan"] == magpie_fingerprint(cfg) ? old : json(nullptr);
}

}  // namespace

bool magpie_complete(const config::Config& cfg) { return !matching_manifest(cfg).is_null(); }

int magpie(const config::Config& cfg) {
  const config::MagpieSection& m = cfg.magpie;
  const stdfs::path out = m.output, manifest = manifest_of(m);
  for (const auto& f : m.exclude) DA_CHECK(stdfs::is_regular_file(f), "magpie.exclude: ", f, ": prompt file not found");
  const std::string plan = magpie_fingerprint(cfg);
  MagpieCounts sum;
  if (const json old = matching_manifest(cfg); !old.is_null()) {
    log::info("magpie: ", out.string(), " holds ", old.contains("kept") ? old["kept"].dump() : "its",
              " prompts made with these settings; kept as it is");
    return 0;
  }

  // Everything the kept prompts must not repeat: every turn of every evaluation prompt.
  NearDuplicates seen(m.ngram, m.max_overlap);
  if (!m.exclude.empty())
    for (const Prompt& p : load_prompts(m.exclude, false).prompts) {
      seen.add(p.messages.back().content);
      for (const auto& t : p.later_turns) seen.add(t);
    }
  const int64_t excluded = seen.size();

  train::Target target = train::open_target(cfg);
  const tok::Tokenizer& tokenizer = *target.tokenizer;
  const tok::ChatTemplate& chat = target.chat;
  // Each is a render (a round trip to the template's co-process for a shipped template): once, not per sample.
  const std::string prefix_text = chat.user_prefix(m.system), turn_end = chat.user_turn_end();
  const std::vector<int64_t> prefix = tokenizer.encode(prefix_text);
  target.load_model(cfg, train::make_compute(cfg.run).device);
  model::SamplingParams sp;
  sp.temperature = m.temperature, sp.top_p = m.top_p, sp.max_new_tokens = m.max_new_tokens;
  sp.stop_strings = {turn_end};
  sp.stop_ids = target.stop_ids;
  model::Generator gen(*target.model, sp, m.batch_size, 0, &tokenizer);

  const int64_t max_samples = m.max_samples > 0 ? m.max_samples : 4 * m.count;
  const uint64_t base =
      model::splitmix64(model::splitmix64(static_cast<uint64_t>(cfg.run.seed)) ^ 0x6d61677069650000ULL);
  std::string lines;
  log::Progress progress("magpie", m.count, "prompt", stdout, -1, cfg.run.progress_interval_s);
  // Samples are judged in sample order, whatever the rounds they are drawn in: what is kept depends on the seed only.
  while (sum.kept < m.count && sum.samples < max_samples) {
    // A round: about what is still needed (a fifth more for the drops), at least a batch, at most four.
    const int64_t need = std::max(m.batch_size, (m.count - sum.kept) * 5 / 4);
    const int64_t round = std::min({4 * m.batch_size, need, max_samples - sum.samples});
    std::vector<model::Request> requests;
    for (int64_t i = 0; i < round; ++i) {
      const int64_t k = sum.samples + i;
      requests.push_back({k, prefix, model::splitmix64(base ^ static_cast<uint64_t>(k))});
    }
    const std::vector<model::Completion> done = gen.run(requests);
    for (size_t i = 0; i < done.size() && sum.kept < m.count; ++i) {
      const model::Completion& c = done[i];
      ++sum.samples;
      std::vector<int64_t> ids = c.tokens;
      while (!ids.empty() && target.is_stop(ids.back())) ids.pop_back();
      std::string text = tokenizer.decode(ids);
      const size_t end = text.find(turn_end);
      if (end != std::string::npos) text.resize(end);
      text = tok::strip(text);
      std::string why = c.finish == model::Finish::kLength ? "unfinished" : junk_reason(text, m);
      if (why.empty()) {
        const int64_t dup = seen.find(text);
        if (dup >= 0) why = dup < excluded ? "evaluation overlap" : "duplicate";
      }
      if (!why.empty()) {
        ++sum.dropped[why];
        continue;
      }
      seen.add(text);
      lines += json({{"instruction", text},
                     {"id", str_cat("target-", sum.kept)},
                     {"source", "target"},
                     {"sample", c.id},
                     {"seed", requests[i].seed},
                     {"temperature", m.temperature},
                     {"top_p", m.top_p},
                     {"target", cfg.target.dir}})
                   .dump() +
               "\n";
      ++sum.kept;
    }
    progress.update(sum.kept, str_cat(sum.samples, " samples"));
  }
  progress.finish(str_cat(sum.samples, " samples"));
  DA_CHECK(sum.kept > 0, "magpie: none of ", sum.samples, " samples was kept as a prompt");
  if (sum.kept < m.count)
    log::warn("magpie: kept ", sum.kept, " of the ", m.count, " prompts asked for after ", sum.samples,
              " samples (magpie.max_samples)");
  json dropped = json::object();
  for (const auto& [why, n] : sum.dropped) dropped[why] = n;
  fs::ensure_dir(out.parent_path().empty() ? stdfs::path(".") : out.parent_path());
  fs::write_file_atomic(out, lines);
  fs::write_file_atomic(
      manifest,
      json(
          {{"plan", plan}, {"kept", sum.kept}, {"samples", sum.samples}, {"dropped", dropped}, {"prefix", prefix_text}})
              .dump(2) +
          "\n");
  log::info("magpie: kept ", sum.kept, " of ", sum.samples, " samples -> ", out.string(), "; dropped ", dropped.dump());
  return 0;
}

cli::Stage magpie_stage() {
  return {
      .name = "magpie",
      .summary = "the target writes instruction prompts (Magpie: sampled from the bare user-turn prefix)",
      .description =
          "The target samples user turns from its chat template's bare prefix (system turn, then the opening of a\n"
          "user turn); unfinished, junk, duplicate and near-duplicate samples, and any that overlap the evaluation\n"
          "prompts (magpie.exclude), are dropped until magpie.count are kept. Writes magpie.output, a prompt JSONL\n"
          "with provenance (seed, temperature), and a manifest; list it in generate.prompts, with\n"
          "generate.prompt_weights for the mix with other prompt files.",
      .sections = {"run", "target", "magpie"},
      .run = magpie,
      .outputs =
          [](const config::Config& c) {
            return std::vector<std::string>{c.magpie.output, manifest_of(c.magpie).string()};
          },
      .is_complete = magpie_complete};
}

}  // namespace draftalign::train

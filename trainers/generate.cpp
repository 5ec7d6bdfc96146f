#include "trainers/generate.h"

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/checksum.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/preempt.h"
#include "config/fingerprint.h"
#include "data/prompts.h"
#include "data/shards.h"
#include "io/safetensors.h"
#include "model/generation.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"
#include "train/dist.h"
#include "train/runtime.h"
#include "trainers/generate_output.h"

namespace draftalign::train {
namespace {

namespace stdfs = std::filesystem;
using data::load_prompts;
using data::Prompt;
using data::PromptSet;
using data::shard_files;
using data::shard_name;
using json = nlohmann::json;
using torch::Tensor;

std::pair<int, int> shard_spec(const config::GenerateSection& g) {
  if (g.shard.empty()) {
    const train::DistEnv env = train::dist_env_from_environment();
    return {env.rank, env.world};
  }
  int i = -1, n = 0;
  char tail = 0;
  DA_CHECK(std::sscanf(g.shard.c_str(), "%d/%d%c", &i, &n, &tail) == 2 && n >= 1 && i >= 0 && i < n,
           "generate.shard: '", g.shard, "' is not i/n with 0 <= i < n (e.g. 0/4)");
  return {i, n};
}

// What the records depend on (config/fingerprint.h: the seed, the target by content, every generate option that
// changes a record, the prompt files by content): a directory made with other settings is not resumed.
std::string plan_fingerprint(const config::Config& cfg, int64_t requests) {
  return config::stage_fingerprint(cfg, "generate/v2", {"run", "target", "generate"},
                                   {{"requests", std::to_string(requests)}});
}

}  // namespace

std::optional<PlanFile> read_plan_file(const stdfs::path& dir) {
  const stdfs::path file = dir / kPlanFile;
  if (!stdfs::exists(file)) return std::nullopt;
  const json j = json::parse(fs::read_file(file), nullptr, false);
  if (!j.is_object()) return std::nullopt;
  PlanFile p;
  if (j.contains("plan") && j["plan"].is_string()) p.plan = j["plan"].get<std::string>();
  if (j.contains("requests") && j["requests"].is_number_integer()) p.requests = j["requests"].get<int64_t>();
  if (j.contains("shards") && j["shards"].is_number_integer()) p.shards = j["shards"].get<int64_t>();
  return p;
}

void claim_output_dir(const stdfs::path& out, const std::string& plan, int64_t requests, int64_t shards,
                      const char* what, const char* key) {
  fs::ensure_dir(out);
  const stdfs::path plan_file = out / kPlanFile;
  if (stdfs::exists(plan_file)) {
    const std::optional<PlanFile> old = read_plan_file(out);
    DA_CHECK(old && old->plan == plan, out.string(), " holds ", what, " (", plan_file.string(), "); use another ", key,
             " or delete it");
  } else {
    fs::write_file_atomic(plan_file, json({{"plan", plan}, {"requests", requests}, {"shards", shards}}).dump(2) + "\n");
  }
}

bool shard_is_complete(const stdfs::path& file, const std::string& plan) {
  if (!stdfs::exists(file)) return false;
  try {
    const auto f = io::SafetensorsFile::open(file);
    auto it = f.metadata().find("plan");
    return it != f.metadata().end() && it->second == plan;
  } catch (const Error& e) {
    log::warn("generate: redoing ", file.string(), ": ", e.what());
    return false;
  }
}

void write_shard(const stdfs::path& dir, int64_t k, const std::string& plan, const std::vector<Planned>& planned,
                 const std::vector<model::Completion>& out, const tok::Tokenizer& tokenizer, int64_t topk) {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask, finish;
  std::vector<int64_t> offsets = {0}, ids, prompt_index, seeds;
  std::vector<int32_t> prompt_lens;
  std::vector<Tensor> topk_ids, topk_lp;
  std::string preview;
  for (size_t i = 0; i < planned.size(); ++i) {
    const auto& p = planned[i];
    const auto& c = out[i];
    for (int64_t t : p.request.prompt) tokens.push_back(static_cast<int32_t>(t)), mask.push_back(0);
    for (int64_t t : c.tokens) tokens.push_back(static_cast<int32_t>(t)), mask.push_back(1);
    offsets.push_back(static_cast<int64_t>(tokens.size()));
    prompt_lens.push_back(static_cast<int32_t>(p.request.prompt.size()));
    ids.push_back(p.request.id);
    prompt_index.push_back(p.prompt_index);
    seeds.push_back(static_cast<int64_t>(p.request.seed));
    finish.push_back(static_cast<uint8_t>(c.finish));
    if (topk > 0) topk_ids.push_back(c.topk_ids.to(torch::kInt32)), topk_lp.push_back(c.topk_logprobs);
    preview += json({{"request_id", p.request.id}, {"prompt_id", p.prompt_id}, {"prompt", p.prompt_text},
                     {"response", tokenizer.decode(c.tokens)}, {"finish", model::finish_name(c.finish)},
                     {"prompt_tokens", p.request.prompt.size()}, {"response_tokens", c.tokens.size()}})
                   .dump(-1, ' ', false, json::error_handler_t::replace) + "\n";  // a cut UTF-8 sequence -> U+FFFD
  }
  auto t = [](auto& v, torch::ScalarType type) {
    return torch::from_blob(v.data(), {static_cast<int64_t>(v.size())}, type).clone();
  };
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"tokens", t(tokens, torch::kInt32)},         {"offsets", t(offsets, torch::kInt64)},
      {"prompt_lens", t(prompt_lens, torch::kInt32)}, {"loss_mask", t(mask, torch::kUInt8)},
      {"request_ids", t(ids, torch::kInt64)},       {"prompt_index", t(prompt_index, torch::kInt64)},
      {"seeds", t(seeds, torch::kInt64)},           {"finish", t(finish, torch::kUInt8)}};
  if (topk > 0) {
    tensors.push_back({"topk_ids", torch::cat(topk_ids)});
    const Tensor lp = torch::cat(topk_lp);
    tensors.push_back({"topk_logprobs", lp});
    tensors.push_back({"topk_mass", lp.exp().sum(-1)});  // per row; the offline teacher's rest bucket holds 1 - it
  }
  // The preview first: a shard file that exists always has its preview.
  fs::write_file_atomic(dir / (shard_name(k) + ".preview.jsonl"), preview);
  io::save_safetensors(dir / (shard_name(k) + ".safetensors"), tensors,
                       {{"format", "draftalign-generate"}, {"version", "1"}, {"plan", plan},
                        {"shard", std::to_string(k)}});
}

bool finalize(const stdfs::path& dir, const std::string& plan, int64_t shards, int64_t skipped, GenerateSummary& sum) {
  json list = json::array();
  int64_t records = 0, tokens = 0, response_tokens = 0;
  int64_t finishes[3] = {0, 0, 0};
  std::string preview;
  for (int64_t k = 0; k < shards; ++k) {
    const stdfs::path file = dir / (shard_name(k) + ".safetensors");
    if (!shard_is_complete(file, plan)) return false;
    const auto f = io::SafetensorsFile::open(file);
    const Tensor fin = f.get("finish"), mask = f.get("loss_mask");
    for (int64_t i = 0; i < fin.size(0); ++i) ++finishes[fin[i].item<uint8_t>()];
    const int64_t n = fin.size(0), t = mask.size(0), r = mask.sum().item<int64_t>();
    list.push_back({{"file", file.filename().string()},
                    {"records", n},
                    {"tokens", t},
                    {"response_tokens", r},
                    {"checksum", file_checksum_hex(file)}});
    records += n, tokens += t, response_tokens += r;
    preview += fs::read_file(dir / (shard_name(k) + ".preview.jsonl"));
  }
  json m = {{"format", "draftalign-generate"},
            {"version", 1},
            {"plan", plan},
            {"checksum", kChecksumAlgorithm},
            {"shards", list},
            {"records", records},
            {"tokens", tokens},
            {"response_tokens", response_tokens},
            {"skipped_prompts", skipped},
            {"finish", json::object()}};
  for (model::Finish f : {model::Finish::kEos, model::Finish::kStop, model::Finish::kLength})
    m["finish"][model::finish_name(f)] = finishes[static_cast<int>(f)];
  fs::write_files_atomic({{dir / "preview.jsonl", preview}, {dir / data::kManifestFile, m.dump(2) + "\n"}});
  sum.records = records;
  sum.response_tokens = response_tokens;
  return true;
}

int generate(const config::Config& cfg) {
  preempt::StopOnSignal stop_on_signal;  // SIGTERM/SIGINT/SIGUSR1: drop the shard in progress, keep the written ones
  const auto& g = cfg.generate;
  const auto [part, parts] = shard_spec(g);
  const stdfs::path out = g.output_dir;
  GenerateSummary sum;

  // Prompts -> requests.
  train::Target target = train::open_target(cfg);
  const tok::Tokenizer& tokenizer = *target.tokenizer;
  const io::LlamaConfig& target_cfg = target.config;
  for (const auto& f : g.prompts)
    DA_CHECK(f != cfg.magpie.output || stdfs::is_regular_file(f), f, ": prompt file not found (generate.prompts); it is ",
             "magpie.output, the prompts the target writes: run `draftalign magpie` first (the pipeline does, with ",
             "pipeline.target_prompts), or leave it out of generate.prompts");
  const std::vector<double> weights =
      g.prompt_weights.empty() ? std::vector<double>(g.prompts.size(), 1.0) : g.prompt_weights;
  const PromptSet prompts =
      load_prompts(g.prompts, g.on_bad_record == config::OnBadRecord::kSkip, g.max_prompts, weights);
  if (prompts.skipped > 0)
    log::warn("generate: skipped ", prompts.skipped, " malformed prompt lines (the first: ", prompts.first_skip_reason,
              ")");
  std::vector<Planned> planned;
  int64_t too_long = 0;
  for (const Prompt& p : prompts.prompts) {
    const std::string text = target.chat.render(p.messages);
    std::vector<int64_t> ids = tokenizer.encode(text);
    if (static_cast<int64_t>(ids.size()) + g.max_new_tokens > target_cfg.max_position_embeddings) {
      ++too_long;
      continue;
    }
    for (int64_t r = 0; r < g.responses_per_prompt; ++r) {
      Planned x;
      x.request.id = p.index * g.responses_per_prompt + r;
      x.request.prompt = ids;
      x.request.seed = model::splitmix64(model::splitmix64(static_cast<uint64_t>(cfg.run.seed)) ^
                                         static_cast<uint64_t>(x.request.id));
      x.prompt_index = p.index;
      x.prompt_id = p.id;
      x.prompt_text = p.messages.back().content;
      planned.push_back(std::move(x));
    }
  }
  if (too_long > 0)
    log::warn("generate: skipped ", too_long, " prompts longer than the target's ",
              target_cfg.max_position_embeddings, " positions minus generate.max_new_tokens");
  DA_CHECK(!planned.empty(), "generate: no prompt left to answer");
  sum.skipped_prompts = prompts.skipped + too_long;
  const int64_t n = static_cast<int64_t>(planned.size());
  sum.shards = (n + g.shard_size - 1) / g.shard_size;
  const std::string plan = plan_fingerprint(cfg, n);

  claim_output_dir(out, plan, n, sum.shards, "a generation made with other settings or prompts", "generate.output_dir");

  std::vector<int64_t> mine;
  for (int64_t k = part; k < sum.shards; k += parts)
    if (!shard_is_complete(out / (shard_name(k) + ".safetensors"), plan)) mine.push_back(k);
  log::info("generate: ", n, " requests (", prompts.prompts.size(), " prompts x ", g.responses_per_prompt, ") in ",
            sum.shards, " shards; this process (", part, "/", parts, ") has ", mine.size(), " left");

  if (!mine.empty()) {
    target.load_model(cfg, train::make_compute(cfg.run).device);
    model::SamplingParams sp;
    sp.temperature = g.temperature, sp.top_p = g.top_p, sp.top_k = g.top_k, sp.max_new_tokens = g.max_new_tokens;
    sp.stop_strings = g.stop;
    sp.stop_ids = train::stop_ids_for(tokenizer, target_cfg, g.stop_ids, "generate.stop_ids");
    DA_CHECK(g.topk_logprobs <= target_cfg.vocab_size, "generate.topk_logprobs = ", g.topk_logprobs,
             " is more than the target's vocabulary of ", target_cfg.vocab_size, " tokens");
    model::Generator gen(*target.model, sp, g.batch_size, g.topk_logprobs, &tokenizer);
    log::Progress progress("generate", static_cast<int64_t>(mine.size()), "shard", stdout, -1,
                           cfg.run.progress_interval_s);
    const auto start = std::chrono::steady_clock::now();
    int64_t tokens = 0;
    for (size_t s = 0; s < mine.size(); ++s) {
      const int64_t k = mine[s];
      auto stopped = [&] {
        return str_cat("generate stopped with ", s, " of this process's ", mine.size(), " shards written; ",
                       shard_name(k), " was dropped: run the same command again to do it and the rest");
      };
      preempt::throw_if_stop_requested(stopped());
      const int64_t lo = k * g.shard_size, hi = std::min(n, lo + g.shard_size);
      std::vector<Planned> part_plan(planned.begin() + lo, planned.begin() + hi);
      std::vector<model::Request> requests;
      for (const auto& p : part_plan) requests.push_back(p.request);
      const auto completions = gen.run(requests, [&](int64_t t) {
        preempt::throw_if_stop_requested(stopped());
        tokens += t;
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        progress.update(static_cast<int64_t>(s), str_cat(tokens, " tokens, ", static_cast<int64_t>(tokens / secs),
                                                         " tok/s"));
      });
      write_shard(out, k, plan, part_plan, completions, tokenizer, g.topk_logprobs);
      progress.update(static_cast<int64_t>(s + 1));
    }
    progress.finish(str_cat(tokens, " tokens"));
  }
  sum.complete = finalize(out, plan, sum.shards, sum.skipped_prompts, sum);
  if (sum.complete)
    log::info("generate: complete: ", sum.records, " records, ", sum.response_tokens, " response tokens; ",
              (out / data::kManifestFile).string(), ", ", (out / "preview.jsonl").string());
  else
    log::info("generate: this process's shards are done; manifest.json is written when every shard exists (the last "
              "process to finish writes it, or re-run generate)");
  return 0;
}

bool generate_complete(const config::Config& cfg) {
  // plan.json records the request count the plan was made for; the fingerprint covers everything that count comes
  // from (the prompt files by content, the target, the options), so it is not recounted here.
  const stdfs::path out = cfg.generate.output_dir;
  if (!stdfs::exists(out / data::kManifestFile)) return false;
  const std::optional<PlanFile> plan = read_plan_file(out);
  if (!plan || plan->requests < 0) return false;
  const json manifest = json::parse(fs::read_file(out / data::kManifestFile), nullptr, false);
  if (!manifest.is_object() || !manifest.contains("plan")) return false;
  const std::string expected = plan_fingerprint(cfg, plan->requests);
  return plan->plan == expected && manifest["plan"] == expected;
}

cli::Stage generate_stage() {
  return {
      .name = "generate",
      .summary = "the target answers instruction prompts (distillation data)",
      .description =
          "Batched KV-cache sampling (continuous batching) from the target on instruction prompts; writes\n"
          "prompt/response shards, a manifest and a JSONL preview. Resumable: a restarted run does only the shards\n"
          "that are missing. Ranks (torchrun/srun) or generate.shard=i/n processes take disjoint shards.",
      .sections = {"run", "target", "generate"},
      .run = generate,
      .outputs = [](const config::Config& c) { return std::vector<std::string>{c.generate.output_dir}; },
      .is_complete = generate_complete,
      .flags = {{"--shard", "generate.shard"}},
      .runs_in_parts = true};
}

}  // namespace draftalign::train

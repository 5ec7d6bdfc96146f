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

struct GenerateSummary {
  int64_t shards = 0, records = 0, skipped_prompts = 0, response_tokens = 0;
  bool complete = false;  // every shard exists and manifest.json is written
};

struct Planned {
  model::Request request;
  int64_t prompt_index = 0;
  std::string prompt_id, prompt_text;
};

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

// Makes `out` the directory of `plan`: writes plan.json, or checks the one there. A directory made for another plan
// is refused (its shards would mix with the new ones): `what` says what it holds, `key` which setting to change.
void claim_output_dir(const stdfs::path& out, const std::string& plan, int64_t requests, int64_t shards,
                      const char* what, const char* key) {
  fs::ensure_dir(out);
  const stdfs::path plan_file = out / "plan.json";
  if (stdfs::exists(plan_file)) {
    const json old = json::parse(fs::read_file(plan_file), nullptr, false);
    DA_CHECK(old.is_object() && old.contains("plan") && old["plan"] == plan, out.string(), " holds ", what, " (",
             plan_file.string(), "); use another ", key, " or delete it");
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

// Writes manifest.json and preview.jsonl when every shard is there; returns whether it did.
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
            {"finish", {{"eos", finishes[0]}, {"stop", finishes[1]}, {"length", finishes[2]}}}};
  fs::write_files_atomic({{dir / "preview.jsonl", preview}, {dir / "manifest.json", m.dump(2) + "\n"}});
  sum.records = records;
  sum.response_tokens = response_tokens;
  return true;
}

}  // namespace

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
              (out / "manifest.json").string(), ", ", (out / "preview.jsonl").string());
  else
    log::info("generate: this process's shards are done; manifest.json is written when every shard exists (the last "
              "process to finish writes it, or re-run generate)");
  return 0;
}

// --- data show / data stats -------------------------------------------------------------------------------------------
namespace {

struct Record {
  std::string shard;
  Tensor topk_mass;  // [response_len] the target's probability mass in the stored top k (empty without top-k)
  int64_t request = 0, prompt_index = 0, prompt_len = 0, response_len = 0;
  int finish = 0;
  std::vector<int64_t> tokens;  // filled for `show` only
};

// with_tokens: fill Record::tokens (`show`); with_topk_mass: fill Record::topk_mass (`stats`).
std::vector<Record> read_records(const stdfs::path& dir, bool with_tokens, bool with_topk_mass) {
  std::vector<Record> out;
  for (const auto& file : shard_files(dir)) {
    const auto f = io::SafetensorsFile::open(file);
    for (const char* name : {"tokens", "offsets", "prompt_lens", "request_ids", "prompt_index", "finish"})
      DA_CHECK(f.contains(name), file.string(), ": no tensor '", name, "' (not a generate shard)");
    const Tensor offsets = f.get("offsets"), plen = f.get("prompt_lens"), req = f.get("request_ids"),
                 pidx = f.get("prompt_index"), fin = f.get("finish"), tokens = f.get("tokens");
    const int64_t n = req.size(0);
    // The top-k mass per response token: stored by generate, or summed from the log-probs of an older shard.
    Tensor mass;
    if (with_topk_mass && f.contains("topk_mass")) mass = f.get("topk_mass").to(torch::kFloat64);
    else if (with_topk_mass && f.contains("topk_logprobs"))
      mass = f.get("topk_logprobs").to(torch::kFloat64).exp().sum(-1);
    int64_t row = 0;
    DA_CHECK(offsets.size(0) == n + 1 && plen.size(0) == n && fin.size(0) == n && pidx.size(0) == n &&
                 offsets[n].item<int64_t>() == tokens.size(0),
             file.string(), ": inconsistent record counts or offsets");
    for (int64_t i = 0; i < n; ++i) {
      Record r;
      r.shard = file.filename().string();
      r.request = req[i].item<int64_t>();
      r.prompt_index = pidx[i].item<int64_t>();
      const int64_t lo = offsets[i].item<int64_t>(), hi = offsets[i + 1].item<int64_t>();
      r.prompt_len = plen[i].item<int32_t>();
      r.response_len = hi - lo - r.prompt_len;
      DA_CHECK(lo <= hi && r.response_len >= 0, file.string(), ": record ", i, " has bad offsets");
      r.finish = fin[i].item<uint8_t>();
      DA_CHECK(r.finish <= 2, file.string(), ": record ", i, " has finish code ", r.finish);
      if (mass.defined()) {
        DA_CHECK(mass.dim() == 1 && row + r.response_len <= mass.size(0), file.string(), ": record ", i,
                 " has no top-k rows left");
        r.topk_mass = mass.narrow(0, row, r.response_len);
        row += r.response_len;
      }
      if (with_tokens) {
        const Tensor t = tokens.narrow(0, lo, hi - lo).to(torch::kInt64).contiguous();
        r.tokens.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
      }
      out.push_back(std::move(r));
    }
  }
  std::sort(out.begin(), out.end(), [](const Record& a, const Record& b) { return a.request < b.request; });
  return out;
}

std::string histogram(const char* title, std::vector<int64_t> v, int64_t bins) {
  std::sort(v.begin(), v.end());
  double mean = 0;
  for (int64_t x : v) mean += static_cast<double>(x) / static_cast<double>(v.size());
  std::string out = str_cat(title, ": min ", v.front(), ", median ", v[v.size() / 2], ", mean ",
                            static_cast<int64_t>(std::llround(mean)), ", max ", v.back(), "\n");
  const int64_t lo = v.front(), width = std::max<int64_t>(1, (v.back() - lo + bins) / bins);
  bins = std::min(bins, (v.back() - lo) / width + 1);  // no empty bins past the largest value
  std::vector<int64_t> count(static_cast<size_t>(bins), 0);
  for (int64_t x : v) ++count[static_cast<size_t>(std::min(bins - 1, (x - lo) / width))];
  const int64_t most = *std::max_element(count.begin(), count.end());
  for (int64_t b = 0; b < bins; ++b) {
    char line[96];
    std::snprintf(line, sizeof line, "  [%5lld, %5lld) %-40s %lld\n", static_cast<long long>(lo + b * width),
                  static_cast<long long>(lo + (b + 1) * width),
                  std::string(static_cast<size_t>(40 * count[b] / std::max<int64_t>(1, most)), '#').c_str(),
                  static_cast<long long>(count[b]));
    out += line;
  }
  return out;
}

// The distribution over response tokens of the target's probability mass inside the stored top k: what the offline
// teacher sees exactly; the rest (1 - mass) it sees only as one bucket.
std::string topk_mass_summary(const std::vector<Record>& records) {
  std::vector<Tensor> parts;
  for (const auto& r : records)
    if (r.topk_mass.defined() && r.topk_mass.numel() > 0) parts.push_back(r.topk_mass);
  if (parts.empty()) return "top-k mass: no top-k log-probs stored (generate.topk_logprobs = 0)\n";
  const Tensor m = std::get<0>(torch::cat(parts).sort());
  const int64_t n = m.size(0);
  auto q = [&](double f) { return m[std::min<int64_t>(n - 1, static_cast<int64_t>(f * static_cast<double>(n)))].item<double>(); };
  auto share_below = [&](double x) { return m.lt(x).to(torch::kFloat64).mean().item<double>(); };
  char line[256];
  std::snprintf(line, sizeof line,
                "top-k mass per response token (the offline teacher's exact part; the rest is one bucket): mean %.4f, "
                "min %.4f, p10 %.4f, median %.4f, p90 %.4f; below 0.9: %.1f%%, below 0.5: %.1f%%\n",
                m.mean().item<double>(), q(0.0), q(0.1), q(0.5), q(0.9), 100 * share_below(0.9),
                100 * share_below(0.5));
  return line;
}

std::string dataset_stats(const stdfs::path& dir, int64_t bins) {
  const auto records = read_records(dir, /*with_tokens=*/false, /*with_topk_mass=*/true);
  const auto files = shard_files(dir);
  int64_t expected = -1;
  if (stdfs::exists(dir / "plan.json")) {
    const json plan = json::parse(fs::read_file(dir / "plan.json"), nullptr, false);
    if (plan.is_object() && plan.contains("shards") && plan["shards"].is_number_integer()) expected = plan["shards"];
  }
  int64_t finish[3] = {0, 0, 0}, prompt_tokens = 0, response_tokens = 0;
  std::vector<int64_t> plens, rlens;
  for (const auto& r : records) {
    ++finish[r.finish];
    prompt_tokens += r.prompt_len, response_tokens += r.response_len;
    plens.push_back(r.prompt_len), rlens.push_back(r.response_len);
  }
  const double n = static_cast<double>(records.size());
  auto pct = [&](int64_t k) { return str_cat(k, " (", std::llround(1000.0 * k / n) / 10.0, "%)"); };
  std::string out = str_cat("dataset ", dir.string(), ": ", records.size(), " records in ", files.size(), " shards",
                            expected < 0                                       ? std::string()
                            : expected == static_cast<int64_t>(files.size()) ? " (complete)"
                                                                               : str_cat(" (", expected, " planned)"),
                            "\ntokens: ", prompt_tokens, " prompt, ", response_tokens, " response (the loss mask)\n",
                            "finish: eos ", pct(finish[0]), ", stop ", pct(finish[1]), ", length ", pct(finish[2]),
                            "\n");
  out += histogram("prompt tokens", plens, bins);
  out += histogram("response tokens", rlens, bins);
  out += topk_mass_summary(records);
  return out;
}

std::string dataset_show(const stdfs::path& dir, const stdfs::path& tokenizer_dir, int64_t first, int64_t samples) {
  const auto records = read_records(dir, /*with_tokens=*/true, /*with_topk_mass=*/false);
  const auto tokenizer = tok::load_tokenizer(tokenizer_dir);
  DA_CHECK(first < static_cast<int64_t>(records.size()), "data.first = ", first, " but ", dir.string(), " holds ",
           records.size(), " records");
  std::string out;
  for (int64_t i = first; i < std::min<int64_t>(first + samples, records.size()); ++i) {
    const Record& r = records[static_cast<size_t>(i)];
    const std::vector<int64_t> prompt(r.tokens.begin(), r.tokens.begin() + r.prompt_len);
    const std::vector<int64_t> response(r.tokens.begin() + r.prompt_len, r.tokens.end());
    out += str_cat("=== record ", i, ": request ", r.request, ", prompt ", r.prompt_index, ", ", r.shard, ", finish ",
                   model::finish_name(static_cast<model::Finish>(r.finish)), ", ", r.prompt_len, " prompt + ", r.response_len, " response tokens\n",
                   "--- prompt (as the target saw it)\n", tokenizer->decode(prompt), "\n--- response\n",
                   tokenizer->decode(response), "\n");
  }
  return out;
}

// data.dir, else generate.output_dir.
stdfs::path data_dir(const config::Config& cfg) {
  return cfg.data.dir.empty() ? cfg.generate.output_dir : cfg.data.dir;
}

}  // namespace

int data_stats(const config::Config& cfg) {
  std::fputs(dataset_stats(data_dir(cfg), cfg.data.bins).c_str(), stdout);
  return 0;
}

int data_show(const config::Config& cfg) {
  std::fputs(dataset_show(data_dir(cfg), cfg.target.dir, cfg.data.first, cfg.data.samples).c_str(), stdout);
  return 0;
}

// --- data import
// ------------------------------------------------------------------------------------------------------

namespace {

std::string rstrip(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

// One record per assistant turn of a conversation: the prompt is the conversation before the turn rendered with the
// generation prompt, the response what the full render adds after it (the turn and its end-of-turn token; the
// whitespace between turns is left out: the model stops at its end-of-turn token).
void import_conversation(const std::vector<tok::Message>& messages, const tok::ChatTemplate& chat,
                         const tok::Tokenizer& tokenizer, const std::string& where, int64_t conversation,
                         std::vector<Planned>& planned, std::vector<model::Completion>& done) {
  for (size_t a = 1; a < messages.size(); ++a) {
    if (messages[a].role != "assistant") continue;
    const std::vector<tok::Message> before(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(a));
    const std::vector<tok::Message> upto(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(a) + 1);
    std::string prompt, full;
    try {
      prompt = chat.render(before, /*add_generation_prompt=*/true), full = chat.render(upto, false);
    } catch (const Error& e) {
      throw Error(str_cat(where, ": ", e.what()));
    }
    DA_CHECK(full.rfind(prompt, 0) == 0, where, ": the chat template does not render message ", a,
             " after the prompt it renders for the conversation before it (the prompt is not a prefix), so its "
             "tokens cannot be told apart");
    const std::string response = rstrip(full.substr(prompt.size()));
    Planned p;
    p.request.id = static_cast<int64_t>(planned.size());
    p.request.prompt = tokenizer.encode(prompt);
    p.prompt_index = conversation;
    p.prompt_id = str_cat(where, "#", a);
    p.prompt_text = before.back().content;
    model::Completion c;
    c.id = p.request.id;
    c.tokens = tokenizer.encode(response);
    c.finish = model::Finish::kEos;
    DA_CHECK(!p.request.prompt.empty() && !c.tokens.empty(), where, ": message ", a, " renders to no tokens");
    planned.push_back(std::move(p));
    done.push_back(std::move(c));
  }
}

}  // namespace

int data_import(const config::Config& cfg) {
  const auto& d = cfg.data;
  DA_CHECK(!d.inputs.empty(), "data.inputs: no chat JSONL file given (data import)");
  const stdfs::path out = data_dir(cfg);
  const train::Target target = train::open_target(cfg);
  const tok::Tokenizer& tokenizer = *target.tokenizer;
  std::vector<Planned> planned;
  std::vector<model::Completion> done;
  int64_t conversations = 0, skipped = 0;
  // shard_size is part of the plan: a directory cut into other shards is refused, never left with stale shards.
  std::string first_skip, source = str_cat("import template=", cfg.target.chat_template, " shard_size=", d.shard_size,
                                           " tokenizer=", checksum_hex(fs::read_file(tokenizer.file())));
  for (const std::string& file : d.inputs) {
    DA_CHECK(stdfs::is_regular_file(file), file, ": chat file not found (data.inputs)");
    const std::string text = fs::read_file(file);
    source += str_cat(" ", stdfs::absolute(file).string(), ":", checksum_hex(text));
    size_t at = 0;
    for (int64_t line_no = 1; at < text.size(); ++line_no) {
      size_t end = text.find('\n', at);
      if (end == std::string::npos) end = text.size();
      const std::string line = text.substr(at, end - at);
      at = end + 1;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = str_cat(file, ":", line_no);
      const size_t before = planned.size();
      try {
        import_conversation(data::parse_conversation(line, where), target.chat, tokenizer, where, conversations,
                            planned, done);
        ++conversations;
      } catch (const Error& e) {
        planned.resize(before), done.resize(before);
        if (d.on_bad_record != config::OnBadRecord::kSkip) throw;
        if (skipped++ == 0) first_skip = e.what();
      }
    }
  }
  if (skipped > 0) log::warn("data import: skipped ", skipped, " malformed lines (the first: ", first_skip, ")");
  DA_CHECK(!planned.empty(), "data import: no conversation with an assistant turn in data.inputs");

  // The output is a generate directory: distill and `data show` read it as they read the target's own answers.
  const std::string plan = checksum_hex(source);
  const int64_t n = static_cast<int64_t>(planned.size()), shards = (n + d.shard_size - 1) / d.shard_size;
  claim_output_dir(out, plan, n, shards, "data made from other inputs or settings", "data.dir");
  for (int64_t k = 0; k < shards; ++k) {
    const int64_t lo = k * d.shard_size, hi = std::min(n, lo + d.shard_size);
    write_shard(out, k, plan, std::vector<Planned>(planned.begin() + lo, planned.begin() + hi),
                std::vector<model::Completion>(done.begin() + lo, done.begin() + hi), tokenizer, 0);
  }
  GenerateSummary sum;
  DA_CHECK(finalize(out, plan, shards, skipped, sum), out.string(), ": a shard just written is missing");
  log::info("data import: ", conversations, " conversations -> ", sum.records, " records (one per assistant turn), ",
            sum.response_tokens, " response tokens in ", shards, " shards; ", (out / "manifest.json").string());
  return 0;
}

}  // namespace draftalign::train

#include "trainers/data_tools.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "common/checksum.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "data/prompts.h"
#include "data/shards.h"
#include "io/safetensors.h"
#include "model/generation.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"
#include "train/runtime.h"
#include "trainers/generate_output.h"

namespace draftalign::train {

namespace stdfs = std::filesystem;
using data::shard_files;
using data::shard_name;
using json = nlohmann::json;
using torch::Tensor;

namespace {

struct Record {
  std::string shard;
  Tensor topk_mass;  // [response_len] the target's probability mass in the stored top k (empty without top-k)
  int64_t request = 0, prompt_index = 0, prompt_len = 0, response_len = 0;
  model::Finish finish = model::Finish::kLength;
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
      const int code = fin[i].item<uint8_t>();
      DA_CHECK(code <= static_cast<int>(model::Finish::kLength), file.string(), ": record ", i, " has finish code ",
               code);
      r.finish = static_cast<model::Finish>(code);
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
  const std::optional<PlanFile> plan = read_plan_file(dir);
  const int64_t expected = plan ? plan->shards : -1;
  int64_t finish[3] = {0, 0, 0}, prompt_tokens = 0, response_tokens = 0;
  std::vector<int64_t> plens, rlens;
  for (const auto& r : records) {
    ++finish[static_cast<int>(r.finish)];
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
                   model::finish_name(r.finish), ", ", r.prompt_len, " prompt + ", r.response_len, " response tokens\n",
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
            sum.response_tokens, " response tokens in ", shards, " shards; ", (out / data::kManifestFile).string());
  return 0;
}

cli::Stage data_stats_stage() {
  return {
      .name = "data stats",
      .summary = "counts, finish reasons and length histograms of generated data",
      .description =
          "Reads the shards of a generate output directory (data.dir, default generate.output_dir), complete or not,\n"
          "and prints record and token counts, finish reasons, and prompt and response length histograms.",
      .sections = {"generate", "data"},
      .run = data_stats,
      .records_config = false};
}

cli::Stage data_show_stage() {
  return {.name = "data show",
          .summary = "print generated records, decoded",
          .description =
              "Prints data.samples records from data.first of a generate output directory (data.dir, default\n"
              "generate.output_dir): the prompt as the target saw it (chat template included) and its response.",
          .sections = {"target", "generate", "data"},
          .run = data_show,
          .records_config = false};
}

cli::Stage data_import_stage() {
  return {
      .name = "data import",
      .summary = "turn chat JSONL (messages / ShareGPT) into distillation data",
      .description =
          "Renders each conversation of data.inputs with the target's chat template and writes a distillation data\n"
          "directory (data.dir, default generate.output_dir) in generate's format: one record per assistant turn, the\n"
          "loss on that turn's tokens. distill (online teacher) trains on it; `data show` prints it. Bad lines name\n"
          "file:line: the import stops, or skips and counts them (data.on_bad_record = skip).",
      .sections = {"run", "target", "generate", "data"},
      .run = data_import,
      .outputs = [](const config::Config& c) { return std::vector<std::string>{data_dir(c).string()}; }};
}

}  // namespace draftalign::train

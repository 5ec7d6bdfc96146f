// `draftalign generate` end to end, as the real binary, on a tiny random target that uses SmolLM2's tokenizer and chat
// template: SIGKILL during generation then restart gives byte-identical shards and manifest to an uninterrupted run;
// two independent processes (generate.shard=i/n) together give the same; every request appears exactly once; bad
// prompt lines and a changed plan are clear errors.
#include <gtest/gtest.h>

#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "data/magpie.h"
#include "data/prompts.h"
#include "data/shards.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "test_util.h"

namespace draftalign::data {
namespace {

namespace fsys = std::filesystem;
using nlohmann::json;
using testing::run_command;
using testing::ScratchDir;

using testing::kSmolDir;

fsys::path make_target(const ScratchDir& d) {
  const io::LlamaConfig c = testing::tiny_smol_config(2);
  torch::manual_seed(5);
  model::Llama m(c);
  {
    torch::NoGradGuard no_grad;
    m.named_parameters()["model.norm.weight"].mul_(30.0);  // peaked enough to end some answers early
    m.named_parameters()["lm_head.weight"].select(0, 2).mul_(2.0);
  }
  model::save_llama(m, d / "target", torch::kFloat32, kSmolDir);
  std::string prompts;
  for (int i = 0; i < 20; ++i) prompts += json({{"instruction", str_cat("Tell me about thing number ", i, ".")}}).dump() + "\n";
  testing::write_text(d / "prompts.jsonl", prompts);
  return d / "target";
}

std::string generate_cmd(const ScratchDir& d, const fsys::path& out, const std::string& extra = "") {
  return str_cat(DRAFTALIGN_BIN, " generate run.threads=1 run.output_dir=", out.string(), " target.dir=",
                 (d / "target").string(), " generate.prompts=[", (d / "prompts.jsonl").string(), "] generate.output_dir=",
                 out.string(), " generate.shard_size=2 generate.batch_size=2 generate.max_new_tokens=24",
                 " generate.topk_logprobs=3 ", extra);
}

// Every shard file's bytes and the manifest of a finished output directory.
std::map<std::string, std::string> contents(const fsys::path& out) {
  std::map<std::string, std::string> m;
  for (const auto& e : fsys::directory_iterator(out)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("shard-", 0) == 0 || name == "manifest.json" || name == "preview.jsonl")
      m[name] = testing::read_text(e.path());
  }
  return m;
}

TEST(Generate, KilledRunResumesToTheSameRecordsAndShardsSplitAcrossProcesses) {
  ScratchDir d;
  make_target(d);
  auto r = run_command(generate_cmd(d, d / "whole"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto whole = contents(d / "whole");
  ASSERT_EQ(whole.size(), 2u + 2 * 10) << "10 shards of 2 requests with their previews, the manifest and preview";
  const json manifest = json::parse(whole.at("manifest.json"));
  EXPECT_EQ(manifest["records"], 20);
  EXPECT_GT(manifest["finish"]["eos"].get<int>(), 0);
  EXPECT_GT(manifest["finish"]["length"].get<int>(), 0);

  std::multiset<int64_t> ids;
  double mass_sum = 0;
  int64_t mass_rows = 0;
  for (int k = 0; k < 10; ++k) {
    const auto f = io::SafetensorsFile::open(d / "whole" / str_cat("shard-0000", k, ".safetensors"));
    const auto req = f.get("request_ids");
    for (int64_t i = 0; i < req.size(0); ++i) ids.insert(req[i].item<int64_t>());
    const auto offsets = f.get("offsets"), mask = f.get("loss_mask"), plen = f.get("prompt_lens");
    EXPECT_EQ(offsets[-1].item<int64_t>(), mask.size(0));
    EXPECT_EQ(f.get("topk_logprobs").size(0), mask.sum().item<int64_t>()) << "one top-k row per response token";
    const auto mass = f.get("topk_mass");
    EXPECT_TRUE(torch::allclose(mass, f.get("topk_logprobs").exp().sum(-1))) << "the top-k mass of each row";
    EXPECT_TRUE((mass > 0).all().item<bool>() && (mass < 1 + 1e-5).all().item<bool>());
    mass_sum += mass.to(torch::kFloat64).sum().item<double>(), mass_rows += mass.size(0);
    EXPECT_EQ(mask.narrow(0, 0, plen[0].item<int>()).sum().item<int64_t>(), 0) << "no loss on the prompt";
  }
  std::multiset<int64_t> want;
  for (int64_t i = 0; i < 20; ++i) want.insert(i);
  EXPECT_EQ(ids, want) << "every request exactly once";

  const fsys::path out = d / "killed";
  r = run_command(str_cat("timeout 120 bash -c '", generate_cmd(d, out), " > ", (d / "log").string(),
                          " 2>&1 & pid=$!; while [ ! -f ", (out / "shard-00001.safetensors").string(),
                          " ]; do sleep 0.01; done; kill -9 $pid; wait $pid; echo killed=$?'"));
  ASSERT_HAS(r.output, "killed=137");
  EXPECT_FALSE(fsys::exists(out / "manifest.json"));
  r = run_command(generate_cmd(d, out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(contents(out), whole);

  const fsys::path split = d / "split";
  r = run_command(generate_cmd(d, split, "generate.shard=1/2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "manifest.json is written when every shard exists");
  r = run_command(generate_cmd(d, split, "generate.shard=0/2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(contents(split), whole);

  // data stats / data show read what generate wrote.
  r = run_command(str_cat(DRAFTALIGN_BIN, " data stats data.dir=", (d / "whole").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "20 records in 10 shards (complete)");
  EXPECT_HAS(r.output, str_cat(manifest["response_tokens"].get<int64_t>(), " response (the loss mask)"));
  EXPECT_HAS(r.output, str_cat("finish: eos ", manifest["finish"]["eos"].get<int64_t>(), " ("));
  EXPECT_HAS(r.output, "response tokens: min ");
  char mean[64];
  std::snprintf(mean, sizeof mean, "the rest is one bucket): mean %.4f, min ", mass_sum / mass_rows);
  EXPECT_HAS(r.output, mean);
  r = run_command(str_cat(DRAFTALIGN_BIN, " data show data.samples=2 data.first=7 data.dir=", (d / "whole").string(),
                          " target.dir=", (d / "target").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "=== record 7: request 7");
  EXPECT_HAS(r.output, "<|im_start|>user\nTell me about thing number 8.<|im_end|>");
  EXPECT_EQ(r.output.find("=== record 9"), std::string::npos);
  r = run_command(str_cat(DRAFTALIGN_BIN, " data stats data.dir=", d.path().string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, "no shard-*.safetensors");
  r = run_command(str_cat(DRAFTALIGN_BIN, " data"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_HAS(r.output, "'data' needs a subcommand: data stats, data show, data import");

  r = run_command(generate_cmd(d, out, "generate.temperature=0.5"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, "made with other settings");
}

// The answers of each prompt, in request order, read from every shard of `out`.
std::vector<std::vector<int32_t>> responses(const fsys::path& out) {
  std::vector<std::vector<int32_t>> all;
  for (const auto& file : shard_files(out)) {
    const auto f = io::SafetensorsFile::open(file);
    const auto tokens = f.get("tokens"), offsets = f.get("offsets"), plen = f.get("prompt_lens");
    for (int64_t i = 0; i + 1 < offsets.size(0); ++i) {
      const int64_t lo = offsets[i].item<int64_t>() + plen[i].item<int>(), hi = offsets[i + 1].item<int64_t>();
      const auto r = tokens.slice(0, lo, hi).contiguous();
      all.emplace_back(r.data_ptr<int32_t>(), r.data_ptr<int32_t>() + r.numel());
    }
  }
  return all;
}

// The default answers are greedy (generate.temperature = 0, the distillation data chosen on the development split):
// the responses of one prompt are the same whatever their seeds, and sampled ones (T = 1) are not.
TEST(Generate, GreedyByDefaultSoEveryResponseOfAPromptIsTheSame) {
  ScratchDir d;
  make_target(d);
  EXPECT_EQ(config::Config().generate.temperature, 0.0);
  auto r = run_command(generate_cmd(d, d / "greedy", "generate.responses_per_prompt=2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto greedy = responses(d / "greedy");
  ASSERT_EQ(greedy.size(), 40u);
  for (size_t i = 0; i < greedy.size(); i += 2) EXPECT_EQ(greedy[i], greedy[i + 1]) << "prompt " << i / 2;
  r = run_command(generate_cmd(d, d / "sampled", "generate.responses_per_prompt=2 generate.temperature=1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto sampled = responses(d / "sampled");
  ASSERT_EQ(sampled.size(), 40u);
  int differ = 0;
  for (size_t i = 0; i < sampled.size(); i += 2) differ += sampled[i] != sampled[i + 1];
  EXPECT_GT(differ, 10) << "sampled answers of one prompt differ";
}

// Preemption and failed writes. SIGTERM mid-run drops the shard in progress and exits 75 with the written shards
// whole; ENOSPC/EIO at each write point of a shard (its preview, then its safetensors) and of the manifest (written
// with preview.jsonl as one) fails with one error line naming the file and errno, leaves the shards already written
// and nothing half-written; each time the same command then finishes to the uninterrupted run's bytes.
TEST(Generate, ASignalOrAFailedWriteKeepsTheWrittenShardsAndTheRunResumes) {
  ScratchDir d;
  make_target(d);
  auto r = run_command(generate_cmd(d, d / "whole"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto whole = contents(d / "whole");
  auto written_shards_are_whole = [&](const fsys::path& out) {
    const auto now = contents(out);
    for (const auto& [name, bytes] : now) EXPECT_TRUE(bytes == whole.at(name)) << name << " differs";
    EXPECT_EQ(now.count("manifest.json"), 0u);
    EXPECT_EQ(testing::temp_files_under(out), std::vector<std::string>());
    return now.size();
  };

  const fsys::path out = d / "signalled";
  r = run_command(str_cat("timeout 120 bash -c '", generate_cmd(d, out), " > ", (d / "log").string(),
                          " 2>&1 & pid=$!; while [ ! -f ", (out / "shard-00001.safetensors").string(),
                          " ]; do sleep 0.01; done; kill -TERM $pid; wait $pid; echo rc=$?'"));
  ASSERT_HAS(r.output, "rc=75");
  const std::string log = testing::read_text(d / "log");
  EXPECT_HAS(log, "stopped (SIGTERM): generate stopped with ");
  EXPECT_HAS(log, "was dropped: run the same command again");
  EXPECT_GE(written_shards_are_whole(out), 4u);  // shards 0 and 1 with their previews
  r = run_command(generate_cmd(d, out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(contents(out), whole);

  for (const std::string match : {"shard-00003", "/manifest.json", "/preview.jsonl"}) {
    const auto faults = testing::write_faults(generate_cmd(d, d / "trace"), match);
    fs::remove_tree(d / "trace");
    ASSERT_GE(faults.size(), 2u) << match;
    std::printf("%zu write points of %s faulted\n", faults.size(), match.c_str());
    for (const testing::WriteFault& fault : faults) {
      SCOPED_TRACE(fault.spec + " at " + fault.point);
      const fsys::path run = d / "faulted";
      fs::remove_tree(run);
      r = run_command(str_cat("DRAFTALIGN_FAULT=", fault.spec, " ", generate_cmd(d, run)));
      ASSERT_NO_FATAL_FAILURE(testing::expect_one_write_error(r, fault));
      const size_t kept = written_shards_are_whole(run);
      EXPECT_GE(kept, match == "shard-00003" ? 6u : 20u);  // shards 0-2 (4 too, had it begun), or every shard
      r = run_command(generate_cmd(d, run));
      ASSERT_EQ(r.exit_code, 0) << r.output;
      EXPECT_EQ(contents(run), whole);
    }
  }
}

TEST(Generate, BadPromptLinesAreNamedOrSkipped) {
  ScratchDir d;
  make_target(d);
  testing::write_text(d / "prompts.jsonl", "{\"instruction\": \"Hi\"}\n{\"instruction\": 3}\n{\"prompt\": \"Yo\"}\n");
  auto r = run_command(generate_cmd(d, d / "a"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, (d / "prompts.jsonl").string() + ":2: \"instruction\" must be a string");
  r = run_command(generate_cmd(d, d / "b", "generate.on_bad_record=skip"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "skipped 1 malformed prompt lines");
  EXPECT_EQ(json::parse(testing::read_text(d / "b/manifest.json"))["records"], 2);

  // The default mix lists magpie's output: missing, it names the stage that writes it.
  const std::string magpie = (d / "magpie.jsonl").string();
  r = run_command(generate_cmd(d, d / "c", str_cat("generate.on_bad_record=skip generate.prompts=[",
                                                   (d / "prompts.jsonl").string(), ",", magpie, "] magpie.output=", magpie)));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, magpie + ": prompt file not found (generate.prompts); it is magpie.output, the prompts the "
                                "target writes: run `draftalign magpie` first");
}

// Magpie with the real target: SmolLM2 writes user turns from its bare chat prefix. The kept prompts are requests
// that load_prompts reads, none overlaps an MT-bench turn (the check of DemoPrompts.TrainingPromptsHoldNoMtBenchQuestion:
// neither normalised text holds the other), drops are counted, the file is the same with another batch size, and a
// second run with the same settings keeps the file as it is.
TEST(Magpie, TheTargetWritesPromptsReproduciblyWithoutMtBenchOverlap) {
  ScratchDir d;
  const fsys::path mt = fsys::path(DRAFTALIGN_SOURCE_DIR) / ".cache/prompts/mt-bench.jsonl";
  ASSERT_TRUE(fsys::exists(mt)) << "run `bash tools/test.sh` (tools/make_prompts.py makes " << mt << ")";
  auto magpie = [&](const std::string& out, int batch) {
    return run_command(str_cat(DRAFTALIGN_BIN, " magpie run.threads=2 run.output_dir=", (d / "run").string(), " target.dir=", kSmolDir.string(),
                               " magpie.count=6 magpie.max_new_tokens=40 magpie.exclude=[", mt.string(),
                               "] magpie.batch_size=", batch, " magpie.output=", (d / out).string()));
  };
  auto r = magpie("a.jsonl", 8);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string a = testing::read_text(d / "a.jsonl");
  const PromptSet set = load_prompts({(d / "a.jsonl").string()}, false);
  ASSERT_EQ(set.prompts.size(), 6u);
  const json manifest = json::parse(testing::read_text(d / "a.jsonl.manifest.json"));
  int64_t dropped = 0;
  for (const auto& [why, n] : manifest["dropped"].items()) dropped += n.get<int64_t>();
  EXPECT_EQ(manifest["kept"].get<int64_t>() + dropped, manifest["samples"].get<int64_t>());
  EXPECT_HAS(manifest["prefix"].get<std::string>(), "<|im_start|>user\n");
  std::vector<std::string> turns;
  std::istringstream in(testing::read_text(mt));
  for (std::string line; std::getline(in, line);)
    for (const auto& t : json::parse(line)["turns"]) turns.push_back(normalise_text(t.get<std::string>()));
  std::istringstream kept(a);
  for (std::string line; std::getline(kept, line);) {
    const json j = json::parse(line);
    const std::string text = j["instruction"];
    std::printf("target-written: %s\n", text.c_str());
    EXPECT_EQ(j["source"], "target");
    EXPECT_TRUE(j.contains("seed") && j.contains("temperature") && j.contains("sample"));
    EXPECT_EQ(junk_reason(text, config::MagpieSection{}), "");
    const std::string t = normalise_text(text);
    for (const std::string& q : turns)
      EXPECT_TRUE(t.find(q) == std::string::npos && q.find(t) == std::string::npos) << text << " overlaps " << q;
  }
  r = magpie("b.jsonl", 5);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(testing::read_text(d / "b.jsonl") == a) << "another batch size, other prompts";
  r = magpie("a.jsonl", 8);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "kept as it is");
}

}  // namespace
}  // namespace draftalign::data

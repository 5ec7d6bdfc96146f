// `draftalign pipeline` and `draftalign export` end to end, as the real binary, on a tiny world: a random 2-layer
// target with SmolLM2's tokenizer, a small corpus and prompt set. The first run does every stage and ends with a
// report comparing the pretrained drafter with each distilled one; a second run skips every stage; with one distilled
// drafter deleted, only that run and the evaluation are done again. Export writes a bf16 Hugging Face directory that
// transformers opens and uses as the assistant model of speculative decoding, with the output equal to the target's.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tiny_models.h"
#include "trainers/distill.h"
#include "trainers/pipeline.h"

namespace draftalign::train {
namespace {

namespace fsys = std::filesystem;
using nlohmann::json;
using testing::run_command;

struct World {
  testing::ScratchDir d;
  World() {
    testing::save_tiny(d / "target", 2, 5, 30.0);
    const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "house", "red", "big"};
    std::string corpus, prompts;
    for (int i = 0; i < 200; ++i) {
      std::string text;
      for (int w = 0; w < 20 + i % 30; ++w) text += str_cat(words[(i * 7 + w * w) % 13], w % 9 == 8 ? ". " : " ");
      corpus += json({{"text", text}}).dump() + "\n";
    }
    for (int i = 0; i < 20; ++i)
      prompts += json({{"instruction", str_cat("Write a line about the number ", i, ".")}}).dump() + "\n";
    testing::write_text(d / "corpus.jsonl", corpus);
    testing::write_text(d / "prompts.jsonl", prompts);
    const std::string o = (d / "out").string();
    testing::write_text(d / "pipeline.yaml", str_cat(R"(# draftalign pipeline (test)
run: {output_dir: ")", o, R"(", threads: 2, log_every: 5}
target: {dir: ")", (d / "target").string(), R"("}
prepare: {inputs: [")", (d / "corpus.jsonl").string(), R"("], output_dir: ")", o, R"(/shards", val_fraction: 0.05}
pretrain:
  output_dir: ")", o, R"(/pretrain"
  embedding_init: normal
  model: {hidden_size: 32, intermediate_size: 64, num_layers: 1, num_heads: 4, num_kv_heads: 2, max_seq_len: 256}
  train: {steps: 8, seq_len: 32, micro_batch_size: 4, eval_every: 0, eval_batches: 1, save_every: 4,
          optim: {lr: 0.01, min_lr: 0.001, warmup_steps: 2}}
generate: {prompts: [")", (d / "prompts.jsonl").string(), R"("], output_dir: ")", o, R"(/data", max_new_tokens: 16,
           batch_size: 8, max_prompts: 0, shard_size: 10, topk_logprobs: 5}
distill:
  output_dir: ")", o, R"(/distill"
  val_fraction: 0.2
  train: {steps: 4, seq_len: 64, micro_batch_size: 4, eval_every: 0, eval_batches: 1, save_every: 0,
          optim: {lr: 0.001, min_lr: 0.0001, warmup_steps: 1}}
evaluate: {prompts: [")", (d / "prompts.jsonl").string(), R"("], report_dir: ")", o, R"(/report", hybrid: false, gammas: [1, 2],
           temperatures: [0, 1], max_new_tokens: 8, max_prompts: 2, repeats: 1, timed_prompts: 2,
           timed_max_new_tokens: 8, python: "off"}
pipeline: {losses: [tvdpp, fkl], target_prompts: false}
export: {checkpoint: ")", o, R"(/distill/tvdpp-token-q/final", output_dir: ")", o, R"(/export"}
)"));
  }
  testing::CommandResult run(const std::string& command, const std::string& extra = "") const {
    return run_command(str_cat(DRAFTALIGN_BIN, " ", command, " --config ", (d / "pipeline.yaml").string(), " ", extra));
  }
};

// The stages chain through ${...} references: a path the user set is kept; only distill.loss and the drafters
// evaluated are the pipeline's, the user's own drafters evaluated after its.
TEST(Pipeline, StageConfigKeepsWhatTheUserSet) {
  config::Config cfg;
  cfg.pretrain.data_dir = "my-shards";
  cfg.distill.student = "mine/final";
  cfg.distill.data_dir = "my-pairs";
  cfg.distill.output_dir = "d";
  cfg.pipeline.losses = {"tvdpp", "fkl"};
  cfg.evaluate.drafters = {"extra", "mine/final"};
  const config::Config c = train::pipeline_stage_config(cfg, "fkl");
  EXPECT_EQ(c.pretrain.data_dir, "my-shards");
  EXPECT_EQ(c.distill.student, "mine/final");
  EXPECT_EQ(c.distill.data_dir, "my-pairs");
  EXPECT_EQ(c.distill.loss, config::Loss::kFkl);
  EXPECT_EQ(c.evaluate.drafters,
            (std::vector<std::string>{"mine/final", "d/tvdpp-token-q/final", "d/fkl/final", "extra"}));
}

// pipeline.losses names runs: a loss, or a TVD++ variant by its run directory's name, which with_run and
// distill_run_name map both ways; so an ablation of the TVD++ options is a pipeline config.
TEST(Pipeline, LossesNameRunsThatRoundTrip) {
  const config::DistillSection d;
  for (const std::string& run : config::distill_run_choices()) {
    const std::string name = train::distill_run_name(config::with_run(d, run));
    EXPECT_EQ(name, run == "tvdpp" ? "tvdpp-token-q" : run);  // bare tvdpp: the section's options (the defaults)
  }
  const config::DistillSection v = config::with_run(d, "tvdpp-batch-uniform-vocab");
  EXPECT_EQ(v.loss, config::Loss::kTvdpp);
  EXPECT_EQ(v.tvdpp_scope, config::TvdppScope::kBatch);
  EXPECT_EQ(v.tvdpp_weighting, config::TvdppWeighting::kUniform);
  EXPECT_EQ(v.tvdpp_stats, config::TvdppStats::kVocab);
  EXPECT_HAS(testing::error_of([&] { config::with_run(d, "tvdpp-row-q"); }), "pipeline.losses: expected one of:");

  config::Config cfg;
  cfg.distill.output_dir = "d";
  cfg.pipeline.losses = {"fkl", "tvdpp-batch-uniform"};
  const config::Config c = train::pipeline_stage_config(cfg, "tvdpp-batch-uniform");
  EXPECT_EQ(c.distill.tvdpp_scope, config::TvdppScope::kBatch);
  EXPECT_EQ(c.distill.tvdpp_weighting, config::TvdppWeighting::kUniform);
  EXPECT_EQ(c.evaluate.drafters[2], "d/tvdpp-batch-uniform/final");
}

TEST(Pipeline, RunsEveryStageThenSkipsWhatIsCompleteAndRedoesWhatIsMissing) {
  World w;
  auto r = w.run("pipeline");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fsys::path out = w.d / "out";
  const json rep = json::parse(testing::read_text(out / "report" / "report.json"));
  std::vector<std::string> names;
  for (const auto& d : rep["drafters"]) names.push_back(d["name"]);
  EXPECT_EQ(names, (std::vector<std::string>{"prompt-lookup", "pretrain", "tvdpp-token-q", "fkl"}));
  EXPECT_EQ(rep["drafters"][2]["dir"], (out / "distill" / "tvdpp-token-q" / "final").string());
  EXPECT_EQ(rep["drafters"][1]["points"].size(), 4u);  // 2 temperatures x 2 gammas
  EXPECT_EQ(rep["exact_greedy"]["drafters"].size(), 4u);
  EXPECT_EQ(rep["exact_greedy"]["items"], 2);  // 2 prompts of one turn
  // The report's training curves are each run's own metrics.jsonl: the loss of every logged step and, for the
  // distilled drafters, held-out alpha from before the first step to the last.
  ASSERT_EQ(rep["training_curves"].size(), 3u);
  for (const json& c : rep["training_curves"]) {
    const std::string name = c["name"];
    const fsys::path run = name == "pretrain" ? out / "pretrain" : out / "distill" / name;
    std::vector<int64_t> steps, val_steps;
    std::istringstream in(testing::read_text(run / "metrics.jsonl"));
    for (std::string line; std::getline(in, line);) {
      const json j = json::parse(line);
      if (j.contains("loss")) steps.push_back(j["step"]);
      if (j.contains("val_alpha")) val_steps.push_back(j["step"]);
    }
    EXPECT_EQ(c["train"]["step"].get<std::vector<int64_t>>(), steps) << name;
    EXPECT_FALSE(steps.empty()) << name;
    if (name == "pretrain") continue;
    EXPECT_EQ(c["validation"]["step"].get<std::vector<int64_t>>(), val_steps) << name;
    EXPECT_EQ(val_steps.front(), 0) << name;
    EXPECT_EQ(val_steps.back(), 4) << name;
  }
  // What the pipeline set itself is said and recorded.
  EXPECT_HAS(r.output, "pipeline: distill.loss = fkl for this run (from pipeline.losses");
  EXPECT_HAS(testing::read_text(out / "pipeline-distill-fkl.config.yaml"), "loss: \"fkl\"");
  EXPECT_HAS(testing::read_text(out / "pipeline-evaluate.config.yaml"), (out / "distill" / "fkl" / "final").string());

  r = w.run("pipeline");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "is up to date");              // prepare-data
  EXPECT_HAS(r.output, "pretrain is complete");
  EXPECT_HAS(r.output, "generate: complete");
  EXPECT_HAS(r.output, "distill tvdpp is complete");
  EXPECT_HAS(r.output, "distill fkl is complete");
  EXPECT_HAS(r.output, "was made from these drafters and settings, skipped");
  EXPECT_EQ(r.output.find("distill: step"), std::string::npos) << "a complete stage ran again";

  fs::remove_tree(out / "distill" / "fkl" / "final");
  r = w.run("pipeline");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "distill tvdpp is complete");
  EXPECT_EQ(r.output.find("distill fkl is complete"), std::string::npos);
  EXPECT_TRUE(fsys::exists(out / "distill" / "fkl" / "final" / "model.safetensors"));
  EXPECT_EQ(r.output.find("settings, skipped"), std::string::npos) << "the evaluation must see the new drafter";

  // Export the TVD++ drafter as bf16: a Hugging Face directory transformers opens, with the tokenizer.
  r = w.run("export", "export.dtype=bf16");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"})
    EXPECT_TRUE(fsys::exists(out / "export" / f)) << f;
  const json cfg = json::parse(testing::read_text(out / "export" / "config.json"));
  EXPECT_EQ(cfg["torch_dtype"], "bfloat16");
  const auto hf = run_command(str_cat(
      DRAFTALIGN_TEST_PYTHON, " -c \"import sys, transformers; m = transformers.AutoModelForCausalLM.from_pretrained(",
      "sys.argv[1]); print(type(m).__name__, m.num_parameters(), m.dtype)\" ", (out / "export").string()));
  EXPECT_EQ(hf.exit_code, 0) << hf.output;
  EXPECT_HAS(hf.output, "LlamaForCausalLM");
  EXPECT_HAS(hf.output, "torch.bfloat16");

  // Speculative decoding in transformers (tools/check_hf_assisted.py): generate(..., assistant_model=drafter), greedy,
  // equals the target's own greedy output, with the pipeline's target and with the real SmolLM2 target (same
  // vocabulary). A bf16 export of SmolLM2 itself, as the drafter of SmolLM2, must also be accepted: fewer target calls
  // than tokens, so the assisted path really ran.
  r = w.run("export", str_cat("export.checkpoint=", testing::kSmolDir.string(),
                              " export.output_dir=", (out / "export-smol").string(), " export.dtype=bf16"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto assisted = [&](const fsys::path& target, const std::vector<fsys::path>& drafters) {
    std::string cmd = str_cat(DRAFTALIGN_TEST_PYTHON, " ", DRAFTALIGN_SOURCE_DIR, "/tools/check_hf_assisted.py ",
                              target.string(), " --max-new-tokens 24");
    for (const auto& d : drafters) cmd += " " + d.string();
    const auto res = run_command(cmd + " 2>/dev/null");
    EXPECT_EQ(res.exit_code, 0) << res.output;
    std::vector<json> lines;
    std::istringstream in(res.output);
    for (std::string line; std::getline(in, line);)
      if (!line.empty() && line[0] == '{') lines.push_back(json::parse(line));
    EXPECT_EQ(lines.size(), drafters.size()) << res.output;
    for (const json& l : lines) EXPECT_EQ(l["equal"], l["prompts"]) << l.dump();
    return lines;
  };
  assisted(w.d / "target", {out / "export"});
  const auto smol = assisted(testing::kSmolDir, {out / "export", out / "export-smol"});
  ASSERT_EQ(smol.size(), 2u);
  EXPECT_GT(smol[1]["new_tokens"].get<int64_t>(), 40);
  EXPECT_LT(smol[1]["target_calls_assisted"].get<int64_t>() * 2, smol[1]["target_calls_plain"].get<int64_t>())
      << smol[1].dump();

  r = w.run("export", "export.checkpoint=" + (w.d / "nothing").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, "nothing is not a directory");
}

}  // namespace
}  // namespace draftalign::train

// `draftalign pipeline` and `draftalign export` end to end, as the real binary, on a tiny world: a random 2-layer
// target with SmolLM2's tokenizer, a small corpus and prompt set. The first run does every stage and ends with a
// report comparing the pretrained drafter with each distilled one; a second run skips every stage; with one distilled
// drafter deleted, only that run is done again (and the evaluation when its bytes changed). Export writes a bf16
// Hugging Face directory that transformers opens and uses as the assistant model of speculative decoding, with the
// output equal to the target's.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "tiny_models.h"
#include "config/fingerprint.h"
#include "evaluators/evaluate.h"
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
    const std::string name = config::distill_run_name(config::with_run(d, run));
    // bare tvdpp: the section's options (the defaults)
    EXPECT_EQ(name, run == "tvdpp" ? "tvdpp-token-q" : run == "eagle3-tvdpp" ? "eagle3-tvdpp-token-q" : run);
  }
  // eagle3-<loss>: an EAGLE-3 head trained with the loss; a bare loss is the model drafter whatever the section says.
  const config::DistillSection h = config::with_run(d, "eagle3-tvdpp-batch-q");
  EXPECT_EQ(h.kind, config::DrafterKind::kEagle3);
  EXPECT_EQ(h.tvdpp_scope, config::TvdppScope::kBatch);
  EXPECT_EQ(config::with_run(h, "fkl").kind, config::DrafterKind::kModel);
  EXPECT_HAS(testing::error_of([&] { config::with_run(d, "eagle3-ce"); }), "pipeline.losses: expected one of:");
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

// pipeline.seeds: each distillation once per seed (distill.seed, its directory <run>/seed-<n>), the evaluation lists
// every seed's drafter; with seed_pretraining each seed pretrains too and its distillations start from its own drafter.
TEST(Pipeline, StageConfigWithSeeds) {
  config::Config cfg;
  cfg.distill.output_dir = "d", cfg.distill.student = "p/final", cfg.pretrain.output_dir = "p";
  cfg.pipeline.losses = {"tvdpp", "fkl"};
  cfg.pipeline.seeds = {1, 2};
  cfg.evaluate.drafters = {};
  config::Config c = train::pipeline_stage_config(cfg, "fkl", 2);
  EXPECT_EQ(c.distill.seed, 2);
  EXPECT_EQ(c.distill.student, "p/final") << "one shared pretraining";
  EXPECT_EQ(config::distill_run_dir(c.distill), "d/fkl/seed-2");
  EXPECT_EQ(c.evaluate.drafters, (std::vector<std::string>{"p/final", "d/tvdpp-token-q/seed-1/final",
                                                           "d/tvdpp-token-q/seed-2/final", "d/fkl/seed-1/final",
                                                           "d/fkl/seed-2/final"}));
  cfg.pipeline.seed_pretraining = true;
  cfg.evaluate.drafters = {"p/final", "mine"};  // the default's unseeded pretraining is not made: only "mine" stays
  c = train::pipeline_stage_config(cfg, "fkl", 2);
  EXPECT_EQ(c.distill.student, "p/seed-2/final");
  EXPECT_EQ(c.evaluate.drafters, (std::vector<std::string>{"p/seed-1/final", "p/seed-2/final",
                                                           "d/tvdpp-token-q/seed-1/final",
                                                           "d/tvdpp-token-q/seed-2/final", "d/fkl/seed-1/final",
                                                           "d/fkl/seed-2/final", "mine"}));
  // A seed list with a duplicate is one clear error naming the key.
  cfg.pipeline.seeds = {1, 2, 1};
  const auto problems = cfg.cross_checks();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].key, "pipeline.seeds");
  EXPECT_HAS(problems[0].message, "seed 1 is listed twice");
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
  // Every stage's is_complete says yes: nothing runs again.
  for (const char* stage : {"prepare-data", "pretrain", "generate", "distill tvdpp", "distill fkl", "evaluate"})
    EXPECT_HAS(r.output, std::string("pipeline: ") + stage + " is complete (");
  EXPECT_EQ(r.output.find("distill: step"), std::string::npos) << "a complete stage ran again";

  // The evaluation's fingerprint holds the drafters' bytes: a drafter trained again to the same bytes (CPU training
  // with a fixed seed and thread count usually is) keeps the report; different bytes make it evaluate again.
  const std::string before = testing::read_text(out / "distill" / "fkl" / "final" / "model.safetensors");
  fs::remove_tree(out / "distill" / "fkl" / "final");
  r = w.run("pipeline");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "distill tvdpp is complete");
  EXPECT_EQ(r.output.find("distill fkl is complete"), std::string::npos);
  EXPECT_TRUE(fsys::exists(out / "distill" / "fkl" / "final" / "model.safetensors"));
  const bool same = testing::read_text(out / "distill" / "fkl" / "final" / "model.safetensors") == before;
  EXPECT_EQ(r.output.find("evaluate is complete") != std::string::npos, same) << "retrained to the same bytes: " << same;

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

  // A stage that runs in parts (generate with generate.shard) is checked again after it runs: the pipeline stops
  // there, naming what is missing, and nothing after it runs.
  fs::remove_tree(out / "data");
  r = w.run("pipeline", "generate.shard=0/2");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_HAS(r.output, "pipeline: generate ran, but " + (out / "data").string() + " is not complete");
  EXPECT_TRUE(fsys::exists(out / "data" / "shard-00000.safetensors"));
  EXPECT_EQ(r.output.find("distill: step"), std::string::npos) << "a stage after the incomplete one ran";
}

// Seeds end to end: every pretraining and distillation once per seed, each from its own seed's drafter, different
// weights per seed; the report has each seed's row and the combined row of each method, and its family of comparisons
// holds only the combined rows (and prompt lookup). A duplicate seed and a contrast naming no drafter fail before
// any stage runs.
TEST(Pipeline, SeedsTrainEachRunOncePerSeedAndTheReportCombinesThem) {
  World w;
  const std::string seeds = "pipeline.seeds=[3,4] pipeline.seed_pretraining=true pipeline.losses=[fkl]";
  auto r = w.run("pipeline", seeds + " evaluate.contrasts=['fkl vs nothing']");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_HAS(r.output, "evaluate.contrasts[0]: 'nothing' is not a row of this report");
  EXPECT_FALSE(fsys::exists(w.d / "out" / "shards")) << "checked before any stage";
  r = w.run("pipeline", "pipeline.seeds=[3,3]");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_HAS(r.output, "pipeline.seeds");

  r = w.run("pipeline", seeds + " evaluate.contrasts=['fkl vs pretrain','fkl vs prompt-lookup']");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fsys::path out = w.d / "out";
  for (const char* dir : {"pretrain/seed-3", "pretrain/seed-4", "distill/fkl/seed-3", "distill/fkl/seed-4"})
    EXPECT_TRUE(fsys::exists(out / dir / "final" / "model.safetensors")) << dir;
  EXPECT_NE(testing::read_text(out / "distill/fkl/seed-3/final/model.safetensors"),
            testing::read_text(out / "distill/fkl/seed-4/final/model.safetensors"));
  EXPECT_HAS(testing::read_text(out / "pipeline-distill-fkl-seed-4.config.yaml"),
             "student: \"" + (out / "pretrain/seed-4/final").string());
  const json rep = json::parse(testing::read_text(out / "report" / "report.json"));
  std::vector<std::string> rows;
  for (const auto& d : rep["exact_greedy"]["drafters"]) rows.push_back(d["name"]);
  EXPECT_EQ(rows, (std::vector<std::string>{"prompt-lookup", "pretrain", "pretrain/seed-3", "pretrain/seed-4", "fkl",
                                            "fkl/seed-3", "fkl/seed-4"}));
  const json& fkl = rep["exact_greedy"]["drafters"][4];
  EXPECT_EQ(fkl["seeds"], json({3, 4}));
  // The combined row pools its seeds' counters.
  const json& a = rep["exact_greedy"]["drafters"][5]["points"][0]["counters"];
  const json& b = rep["exact_greedy"]["drafters"][6]["points"][0]["counters"];
  EXPECT_EQ(fkl["points"][0]["counters"]["num_target_calls"].get<int64_t>(),
            a["num_target_calls"].get<int64_t>() + b["num_target_calls"].get<int64_t>());
  const json& diffs = rep["exact_greedy"]["differences"];
  ASSERT_EQ(diffs.size(), 2u);
  EXPECT_EQ(diffs[0]["drafter"], "fkl");
  EXPECT_EQ(diffs[0]["versus"], "pretrain");
  EXPECT_EQ(rep["exact_greedy"]["family"]["size"], 2);
  EXPECT_HAS(testing::read_text(out / "report" / "report.md"), "| fkl | model | ");
}

// The pipeline re-runs an evaluation whenever any option that changes its numbers changes: every option of the run,
// target and evaluate sections is changed in turn (a file or directory option by rewriting a file it names, same
// size and time), and evaluation_complete must say no; an option tagged as changing nothing (run.threads, the
// plotting interpreter) or an output path leaves it complete. A prompt file named by another path, or copied, is the
// same input. (Mutations checked: leaving the sampling_* options and bootstrap_resamples out of the fingerprint, as
// the hand-written one did, fails on each of them. The rewritten files keep their size and time, so a stamp by size
// and mtime could not pass.)
TEST(Pipeline, EvaluateFingerprintCoversEveryOption) {
  testing::ScratchDir d;
  testing::save_tiny(d / "target", 1, 3, 10.0);
  testing::save_tiny(d / "drafter", 1, 4, 1.0, d / "target");
  testing::write_text(d / "prompts.jsonl", "{\"prompt\": \"hello\"}\n");
  config::Config base;
  base.target.dir = (d / "target").string();
  base.evaluate.drafters = {(d / "drafter").string()};
  base.evaluate.prompts = {(d / "prompts.jsonl").string()};
  base.evaluate.report_dir = (d / "report").string();
  testing::write_text(d / "report" / "report.json", json({{"fingerprint", eval::evaluate_fingerprint(base)}}).dump());
  ASSERT_TRUE(eval::evaluation_complete(base));

  // Each option changed within its bounds.
  auto mutate = [](config::Field& f) {
    struct V {
      const config::Field& f;
      void operator()(int64_t* v) const { *v = f.bounds.contains(static_cast<double>(*v + 1)) ? *v + 1 : *v - 1; }
      void operator()(double* v) const { *v = f.bounds.contains(*v + 0.5) ? *v + 0.5 : *v / 2; }
      void operator()(bool* v) const { *v = !*v; }
      void operator()(std::string* v) const {
        if (f.choices.empty()) {
          *v += "x";
          return;
        }
        for (const auto& c : f.choices)
          if (c != *v) {
            *v = c;
            return;
          }
      }
      void operator()(std::vector<int64_t>* v) const { v->push_back(v->empty() ? 1 : v->back() + 1); }
      void operator()(std::vector<double>* v) const { v->push_back(0.5); }
      void operator()(std::vector<std::string>* v) const { v->push_back(f.choices.empty() ? "x" : f.choices.back()); }
      void operator()(const config::EnumRef& e) const {
        for (const auto& c : f.choices)
          if (c != e.names[static_cast<size_t>(e.get())]) {
            e.set(config::index_of_name(c, e.names, f.path));
            return;
          }
      }
      void operator()(const config::WordOrPathRef& w) const { *w.path += "x"; }
    };
    std::visit(V{f}, f.target);
  };
  // A file's bytes changed in place: same size, same modification time.
  auto rewrite = [](const fsys::path& file) {
    const auto when = fsys::last_write_time(file);
    std::string bytes = testing::read_text(file);
    const std::string old = bytes;
    bytes[bytes.size() / 2] ^= 0x01;
    testing::write_text(file, bytes);
    fsys::last_write_time(file, when);
    return old;
  };
  // The options left out, named here so that tagging another one as changing nothing is a visible change to this test.
  const std::set<std::string> left_out = {"run.output_dir",      "run.threads",        "run.log_every",
                                          "run.progress_interval_s", "run.dist_timeout_s", "run.report_to",
                                          "run.wandb_project",   "evaluate.report_dir", "evaluate.python"};
  int result = 0, inputs = 0, silent = 0;
  config::Config probe = base;
  const config::Schema fields = config::schema_of(probe);
  for (const config::Field& field : fields.fields()) {
    const std::string& path = field.path;
    if (path.rfind("run.", 0) != 0 && path.rfind("target.", 0) != 0 && path.rfind("evaluate.", 0) != 0) continue;
    SCOPED_TRACE(path);
    if (field.role == config::Role::kInputFile || field.role == config::Role::kInputDir) {
      const fsys::path file = path == "target.dir"          ? d / "target" / "config.json"
                              : path == "evaluate.drafters" ? d / "drafter" / "model.safetensors"
                                                            : d / "prompts.jsonl";
      const std::string old = rewrite(file);
      EXPECT_FALSE(eval::evaluation_complete(base)) << "a changed input file of " << path;
      testing::write_text(file, old);
      ++inputs;
      continue;
    }
    config::Config c = base;
    config::Schema schema = config::schema_of(c);
    config::Field& f = const_cast<config::Field&>(*schema.find(path));
    const std::string before = f.value_text();
    mutate(f);
    ASSERT_NE(f.value_text(), before) << "the test could not change " << path;
    if (field.role == config::Role::kResult) {
      EXPECT_FALSE(eval::evaluation_complete(c)) << path << " changed from " << before << " to " << f.value_text();
      ++result;
    } else {
      EXPECT_TRUE(left_out.count(path)) << path << " is tagged as changing no number";
      EXPECT_EQ(eval::evaluate_fingerprint(c), eval::evaluate_fingerprint(base)) << path << " is not in it";
      ++silent;
    }
  }
  EXPECT_GE(result, 25);  // every evaluate option that changes a number, the seed, the device, the target's dtype...
  EXPECT_EQ(inputs, 3);
  EXPECT_EQ(silent, static_cast<int>(left_out.size()));
  config::Config threads = base;
  threads.run.threads = 7;
  EXPECT_TRUE(eval::evaluation_complete(threads)) << "run.threads changes no number";
  ASSERT_TRUE(eval::evaluation_complete(base)) << "every file restored";
  // The same prompts by a relative path, or copied: the same input.
  config::Config moved = base;
  fsys::copy_file(d / "prompts.jsonl", d / "copy.jsonl");
  moved.evaluate.prompts = {(d / "copy.jsonl").string()};
  EXPECT_TRUE(eval::evaluation_complete(moved));
  moved.evaluate.prompts = {fsys::relative(d / "prompts.jsonl").string()};
  EXPECT_TRUE(eval::evaluation_complete(moved));
}

}  // namespace
}  // namespace draftalign::train

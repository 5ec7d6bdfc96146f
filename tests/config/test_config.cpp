#include <gtest/gtest.h>

#include "config/loader.h"
#include "test_util.h"

namespace draftalign::config {
namespace {

using testing::ScratchDir;
using testing::write_text;

// Loads `yaml` from a scratch file and returns the error message (empty when it loads).
struct Attempt {
  std::string file, error;
  LoadedConfig loaded;
};

Attempt attempt(const ScratchDir& dir, const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  Attempt a;
  a.file = (dir / "cfg.yaml").string();
  write_text(a.file, yaml);
  a.error = testing::error_of([&] { a.loaded = load_config(a.file, overrides); });
  return a;
}

TEST(ConfigLoad, ValuesAndTheirOrigins) {
  ScratchDir dir;
  auto a = attempt(dir,
                   "run:\n"
                   "  seed: 7\n"
                   "pretrain:\n"
                   "  train:\n"
                   "    steps: 50\n"
                   "    optim: {lr: 0.002, min_lr: 0.0, warmup_steps: 10}\n"
                   "evaluate:\n"
                   "  gammas: [1, 3]\n"
                   "  temperatures: [0, 0.7]\n"
                   "  drafters:\n"
                   "    - a/b\n"
                   "    - c\n");
  ASSERT_EQ(a.error, "");
  const Config& c = a.loaded.cfg;
  EXPECT_EQ(c.run.seed, 7);
  EXPECT_EQ(c.pretrain.train.steps, 50);
  EXPECT_DOUBLE_EQ(c.pretrain.train.optim.lr, 0.002);
  EXPECT_EQ(c.evaluate.gammas, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(c.evaluate.temperatures, (std::vector<double>{0.0, 0.7}));
  EXPECT_EQ(c.evaluate.drafters, (std::vector<std::string>{"a/b", "c"}));
  EXPECT_EQ(c.run.output_dir, Config().run.output_dir) << "untouched keys keep their defaults";
  EXPECT_EQ(a.loaded.where("run.seed"), a.file + ":2:3");
  EXPECT_EQ(a.loaded.where("pretrain.train.optim.lr"), a.file + ":6:13");
  EXPECT_EQ(a.loaded.where("run.threads"), a.file + ": default");
}

TEST(ConfigLoad, EmptyFileAndNoFileGiveTheDefaults) {
  ScratchDir dir;
  auto a = attempt(dir, "# nothing but a comment\n");
  ASSERT_EQ(a.error, "");
  Config defaults;
  EXPECT_EQ(to_yaml(a.loaded.raw, ""), to_yaml(defaults, ""));
  LoadedConfig none = load_config("", {});
  EXPECT_EQ(to_yaml(none.raw, ""), to_yaml(defaults, ""));
  EXPECT_EQ(to_yaml(none.cfg, ""), to_yaml(a.loaded.cfg, ""));
}

TEST(ConfigLoad, ReferencesFollowRunOutputDirIntoEveryStage) {
  ScratchDir dir;
  // The defaults chain every stage's directories to run.output_dir, and one stage's input to another's output.
  auto a = attempt(dir,
                   "run:\n  output_dir: runs/mine\n"
                   "distill:\n  output_dir: \"${run.output_dir}/kd-${distill.loss}\"\n",
                   {"evaluate.drafters=[x, \"${pretrain.output_dir}/final\"]"});
  ASSERT_EQ(a.error, "");
  const Config& c = a.loaded.cfg;
  EXPECT_EQ(c.prepare.output_dir, "runs/mine/shards");
  EXPECT_EQ(c.pretrain.data_dir, "runs/mine/shards");
  EXPECT_EQ(c.pretrain.output_dir, "runs/mine/pretrain");
  EXPECT_EQ(c.generate.output_dir, "runs/mine/distill-data");
  EXPECT_EQ(c.distill.data_dir, "runs/mine/distill-data");
  EXPECT_EQ(c.distill.student, "runs/mine/pretrain/final");
  EXPECT_EQ(c.distill.output_dir, "runs/mine/kd-tvdpp");
  EXPECT_EQ(c.evaluate.report_dir, "runs/mine/report");
  EXPECT_EQ(c.evaluate.drafters, (std::vector<std::string>{"x", "runs/mine/pretrain/final"}));
  EXPECT_EQ(c.export_.checkpoint, "runs/mine/kd-tvdpp/tvdpp-token-q/final");
  // As written, for --print-config.
  EXPECT_EQ(a.loaded.raw.distill.output_dir, "${run.output_dir}/kd-${distill.loss}");
  EXPECT_EQ(a.loaded.raw.export_.checkpoint, "${distill.output_dir}/tvdpp-token-q/final");
}

TEST(ConfigErrors, BadReferencesNameTheKeyAndWhereItWasSet) {
  ScratchDir dir;
  auto a = attempt(dir, "run:\n  seed: 1\nprepare:\n  output_dir: \"${run.output_di}/shards\"\n");
  EXPECT_EQ(a.error, a.file + ":4:3: key 'prepare.output_dir': ${run.output_di} names no string option (did you mean "
                     "${run.output_dir}?)");
  a = attempt(dir, "pretrain:\n  output_dir: \"${pretrain.train.steps}\"\n");
  EXPECT_HAS(a.error, "key 'pretrain.output_dir': ${pretrain.train.steps} names no string option");
  a = attempt(dir, "run:\n  output_dir: \"runs/${run.device\"\n");
  EXPECT_HAS(a.error, a.file + ":2:3: key 'run.output_dir': '${' without its closing '}' in 'runs/${run.device'");
  a = attempt(dir, "run:\n  output_dir: \"${prepare.output_dir}\"\n");
  EXPECT_HAS(a.error, a.file + ":2:3: key 'run.output_dir': references go round in a circle: run.output_dir -> "
                      "prepare.output_dir -> run.output_dir");
  a = attempt(dir, "", {"generate.prompts=[a.jsonl, \"${nothing.here}\"]"});
  EXPECT_HAS(a.error, "override 'generate.prompts=[a.jsonl, \"${nothing.here}\"]': key 'generate.prompts': "
                      "${nothing.here} names no string option");
}

TEST(ConfigErrors, UnknownKeyNamesFilePlaceKeyAndSuggests) {
  ScratchDir dir;
  auto a = attempt(dir, "pretrain:\n  train:\n    optim:\n      lrr: 0.1\n");
  EXPECT_HAS(a.error, a.file + ":4:7");
  EXPECT_HAS(a.error, "unknown key 'pretrain.train.optim.lrr'");
  EXPECT_HAS(a.error, "did you mean 'lr'?");
  EXPECT_HAS(a.error, "min_lr");  // lists the valid keys
}

TEST(ConfigErrors, UnknownSection) {
  ScratchDir dir;
  auto a = attempt(dir, "run: {seed: 1}\ndistil:\n  loss: fkl\n");
  EXPECT_HAS(a.error, a.file + ":2:1");
  EXPECT_HAS(a.error, "unknown key 'distil'");
  EXPECT_HAS(a.error, "did you mean 'distill'?");
}

TEST(ConfigErrors, WrongType) {
  ScratchDir dir;
  auto a = attempt(dir, "pretrain:\n  train:\n    steps: many\n");
  EXPECT_HAS(a.error, a.file + ":3:12");
  EXPECT_HAS(a.error, "key 'pretrain.train.steps'");
  EXPECT_HAS(a.error, "expected an integer in [1, inf), got 'many'");
  a = attempt(dir, "pretrain:\n  model:\n    tie_embeddings: 3\n");
  EXPECT_HAS(a.error, "expected true or false, got '3'");
  a = attempt(dir, "run:\n  seed: [1, 2]\n");
  EXPECT_HAS(a.error, "expected an integer in [0, inf), got a list");
  a = attempt(dir, "run:\n  output_dir: {a: 1}\n");
  EXPECT_HAS(a.error, "expected a string, got a mapping");
  a = attempt(dir, "pretrain:\n  train:\n    steps: 1.5\n");
  EXPECT_HAS(a.error, "expected an integer");
}

TEST(ConfigErrors, QuotedNumberIsAString) {
  ScratchDir dir;
  auto a = attempt(dir, "run:\n  seed: \"12\"\n");
  EXPECT_HAS(a.error, "key 'run.seed': expected an integer");
}

TEST(ConfigErrors, OutOfRange) {
  ScratchDir dir;
  auto a = attempt(dir, "pretrain:\n  train:\n    optim:\n      lr: -0.5\n");
  EXPECT_HAS(a.error, a.file + ":4:11");
  EXPECT_HAS(a.error, "key 'pretrain.train.optim.lr': expected a number in (0, inf), got '-0.5'");
  a = attempt(dir, "generate:\n  top_p: 1.5\n");
  EXPECT_HAS(a.error, "expected a number in (0, 1], got '1.5'");
  a = attempt(dir, "evaluate:\n  gammas: [2, 0, 3]\n");
  EXPECT_HAS(a.error, a.file + ":2:15");  // the offending element
  EXPECT_HAS(a.error, "expected a list of integers in [1, inf), got '0'");
  a = attempt(dir, "evaluate:\n  draft_stop_prob: 1.0\n");  // a stop threshold outside [0, 1) (0 is off)
  EXPECT_HAS(a.error, "key 'evaluate.draft_stop_prob': expected a number in [0, 1), got '1.0'");
  a = attempt(dir, "evaluate:\n  draft_stop_prob: -0.2\n");
  EXPECT_HAS(a.error, "expected a number in [0, 1), got '-0.2'");
}

TEST(ConfigErrors, ChoiceSuggestsTheNearest) {
  ScratchDir dir;
  auto a = attempt(dir, "distill:\n  loss: tvdp\n");
  EXPECT_HAS(a.error, "key 'distill.loss': expected one of: tvdpp, fkl, rkl, tvd, ce, got 'tvdp'");
  EXPECT_HAS(a.error, "did you mean 'tvdpp'?");
  a = attempt(dir, "pipeline:\n  losses: [tvdpp, kl]\n");
  EXPECT_HAS(a.error, "key 'pipeline.losses'");
  EXPECT_HAS(a.error, "got 'kl'");
}

// train.resume is a word (auto, none) or a checkpoint directory, typed: code reads the choice, never compares text.
TEST(ConfigLoad, ResumeIsAWordOrADirectory) {
  ScratchDir dir;
  auto a = attempt(dir, "");
  ASSERT_EQ(a.error, "");
  EXPECT_EQ(a.loaded.cfg.pretrain.train.resume.choice, ResumeFrom::kLatest);
  a = attempt(dir, "pretrain:\n  train:\n    resume: none\n");
  ASSERT_EQ(a.error, "");
  EXPECT_EQ(a.loaded.cfg.pretrain.train.resume.choice, ResumeFrom::kNothing);
  EXPECT_EQ(a.loaded.cfg.pretrain.train.resume.path, "");
  // Any other text is a directory, references expanded; it dumps and loads back as the same path.
  a = attempt(
      dir, "run:\n  output_dir: runs/r\n",
      {"distill.train.resume=${run.output_dir}/pretrain/checkpoints/step-0000010", "pretrain.train.resume=auto"});
  ASSERT_EQ(a.error, "");
  const Resume& r = a.loaded.cfg.distill.train.resume;
  EXPECT_EQ(r.choice, ResumeFrom::kCheckpoint);
  EXPECT_EQ(r.path, "runs/r/pretrain/checkpoints/step-0000010");
  EXPECT_EQ(a.loaded.cfg.pretrain.train.resume.choice, ResumeFrom::kLatest);
  write_text(dir / "dump.yaml", to_yaml(a.loaded.cfg, "dump"));
  const LoadedConfig back = load_config((dir / "dump.yaml").string(), {});
  EXPECT_EQ(back.cfg.distill.train.resume.choice, ResumeFrom::kCheckpoint);
  EXPECT_EQ(back.cfg.distill.train.resume.path, r.path);
  // Empty, or not a string: an error naming the key and what it accepts.
  a = attempt(dir, "distill:\n  train:\n    resume: \"\"\n");
  EXPECT_HAS(a.error, "key 'distill.train.resume': expected one of: auto, none, or a path (a checkpoint directory)");
  a = attempt(dir, "distill:\n  train:\n    resume: [a]\n");
  EXPECT_HAS(a.error, "key 'distill.train.resume': expected one of: auto, none, or a path");
}

TEST(ConfigErrors, DuplicateKey) {
  ScratchDir dir;
  auto a = attempt(dir, "run:\n  seed: 1\n  seed: 2\n");
  EXPECT_HAS(a.error, a.file + ":3:3");
  EXPECT_HAS(a.error, "key 'run.seed': appears twice");
}

TEST(ConfigErrors, SyntaxError) {
  ScratchDir dir;
  auto a = attempt(dir, "run:\n  seed: [1, 2\n");
  EXPECT_HAS(a.error, a.file + ":");
  EXPECT_HAS(a.error, "YAML syntax error");
}

TEST(ConfigErrors, SectionMustBeAMapping) {
  ScratchDir dir;
  auto a = attempt(dir, "run: 5\n");
  EXPECT_HAS(a.error, "key 'run': expected a mapping of keys, got '5'");
  a = attempt(dir, "- a\n- b\n");
  EXPECT_HAS(a.error, "expected a mapping of sections");
}

TEST(ConfigErrors, MissingFile) {
  ScratchDir dir;
  EXPECT_HAS(testing::error_of([&] { load_config((dir / "absent.yaml").string(), {}); }),
             (dir / "absent.yaml").string() + ": config file not found");
}

TEST(ConfigErrors, CrossCheckNamesTheKeyAndItsPlace) {
  ScratchDir dir;
  auto a = attempt(dir, "distill:\n  train:\n    optim:\n      lr: 0.001\n      min_lr: 0.01\n");
  EXPECT_HAS(a.error, a.file + ":5:7: key 'distill.train.optim.min_lr': must not exceed distill.train.optim.lr");
  a = attempt(dir, "pretrain:\n  model:\n    hidden_size: 100\n    num_heads: 3\n");
  EXPECT_HAS(a.error, "key 'pretrain.model.num_heads': must divide pretrain.model.hidden_size (100)");
  a = attempt(dir, "pretrain:\n  model:\n    draft_vocab_size: 60000\n");  // a draft vocabulary past the vocabulary
  EXPECT_HAS(a.error, "pretrain.model.draft_vocab_size");
  EXPECT_HAS(a.error, "60000 is larger than the vocabulary (pretrain.model.vocab_size 49152)");
}

TEST(ConfigOverrides, AppliedAfterTheFileInOrder) {
  ScratchDir dir;
  auto a = attempt(dir, "run: {seed: 1}\n",
                   {"run.seed=2", "run.seed=3", "evaluate.gammas=[2, 4]", "evaluate.temperatures=0.5",
                    "pretrain.init_from=", "distill.loss=fkl", "target.dir=/models/llama 2"});
  ASSERT_EQ(a.error, "");
  EXPECT_EQ(a.loaded.cfg.run.seed, 3);
  EXPECT_EQ(a.loaded.cfg.evaluate.gammas, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(a.loaded.cfg.evaluate.temperatures, (std::vector<double>{0.5}));
  EXPECT_EQ(a.loaded.cfg.pretrain.init_from, "");
  EXPECT_EQ(a.loaded.cfg.distill.loss, config::Loss::kFkl);
  EXPECT_EQ(a.loaded.cfg.target.dir, "/models/llama 2");
  EXPECT_EQ(a.loaded.where("run.seed"), "override 'run.seed=3'");
}

TEST(ConfigOverrides, Errors) {
  ScratchDir dir;
  EXPECT_HAS(attempt(dir, "", {"run.sed=1"}).error, "override 'run.sed=1': unknown key 'run.sed'");
  EXPECT_HAS(attempt(dir, "", {"run.sed=1"}).error, "did you mean 'seed'?");
  EXPECT_HAS(attempt(dir, "", {"nosuch.key=1"}).error, "unknown key 'nosuch.key'");
  EXPECT_HAS(attempt(dir, "", {"run.seed=abc"}).error, "override 'run.seed=abc': key 'run.seed': expected an integer");
  EXPECT_HAS(attempt(dir, "", {"run=3"}).error, "key 'run': is a section");
  EXPECT_HAS(attempt(dir, "", {"=3"}).error, "expected section.key=value");
  EXPECT_HAS(attempt(dir, "", {"evaluate.gammas=[1,"}).error, "value is not valid YAML");
}

TEST(ConfigDump, RoundTripsEveryValue) {
  ScratchDir dir;
  Config c;
  c.run.seed = 99;
  c.run.output_dir = "out dir/with \"quotes\"";
  c.pretrain.train.optim.lr = 3e-4;
  c.distill.ce_weight = 0.25;
  c.evaluate.temperatures = {0.0, 0.6, 1.0};
  c.generate.stop = {"\n\nUser:", "</s>"};
  c.pretrain.model.llama.tie_word_embeddings = false;
  const std::string yaml = to_yaml(c, "test dump");
  write_text(dir / "dump.yaml", yaml);
  LoadedConfig back = load_config((dir / "dump.yaml").string(), {});
  EXPECT_EQ(to_yaml(back.raw, "test dump"), yaml);
  EXPECT_EQ(back.cfg.run.output_dir, c.run.output_dir);
  EXPECT_EQ(back.cfg.generate.stop, c.generate.stop);
  EXPECT_DOUBLE_EQ(back.cfg.pretrain.train.optim.lr, 3e-4);
}

TEST(ConfigHelp, ListsEveryOptionOfTheSectionsWithDefaultAndMeaning) {
  Config c;
  Schema schema = schema_of(c);
  const std::string help = options_help(c, {"run", "pretrain"});
  int listed = 0;
  for (const Field& f : schema.fields()) {
    const bool wanted = f.path.rfind("run.", 0) == 0 || f.path.rfind("pretrain.", 0) == 0;
    const bool shown = help.find("  " + f.path + " = " + f.value_text() + "\n      " + f.help) != std::string::npos;
    EXPECT_EQ(shown, wanted) << f.path;
    listed += shown;
  }
  EXPECT_GT(listed, 20);
}

}  // namespace
}  // namespace draftalign::config

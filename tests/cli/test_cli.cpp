#include <gtest/gtest.h>

#include "cli/commands.h"
#include "test_util.h"

namespace draftalign::cli {
namespace {

using testing::run_command;
using testing::ScratchDir;

const std::string kBin = DRAFTALIGN_BIN;
const char* kCommands[] = {"prepare-data", "pretrain", "generate", "distill", "evaluate", "export", "pipeline"};

// Two stages, one with a flag of its own.
std::vector<Stage> flag_stages() {
  return {Stage{"generate", "", "", {}, nullptr, nullptr, nullptr, {{"--shard", "generate.shard"}}},
          Stage{"pretrain", "", "", {}, nullptr}};
}

TEST(ParseArgs, ConfigOverridesAndHelp) {
  Invocation a = parse_args({"pretrain", "--config", "x.yaml", "run.seed=3", "pretrain.train.steps=9"});
  EXPECT_EQ(a.command, "pretrain");
  EXPECT_EQ(a.config_file, "x.yaml");
  EXPECT_EQ(a.overrides, (std::vector<std::string>{"run.seed=3", "pretrain.train.steps=9"}));
  EXPECT_FALSE(a.help);
  EXPECT_EQ(parse_args({"pipeline", "configs/demo.yaml"}).config_file, "configs/demo.yaml");
  EXPECT_EQ(parse_args({"pipeline", "--config=a.yml"}).config_file, "a.yml");
  EXPECT_EQ(parse_args({"generate", "--shard", "1/4"}, flag_stages()).overrides,
            (std::vector<std::string>{"generate.shard=1/4"}));
  EXPECT_HAS(testing::error_of([] {
               parse_args({"generate", "--shard"}, flag_stages());
             }),
             "--shard needs a value (generate.shard)");
  EXPECT_TRUE(parse_args({"evaluate", "-h"}).help);
  EXPECT_THROW(parse_args({"pretrain", "--config"}), Error);
  EXPECT_THROW(parse_args({"pretrain", "--verbose"}), Error);
  EXPECT_THROW(parse_args({"pretrain", "stray"}), Error);
  // One config file per run; --shard only where it means something (generate).
  EXPECT_HAS(testing::error_of([] {
               parse_args({"pretrain", "--config", "a.yaml", "--config", "b.yaml"});
             }),
             "two config files ('a.yaml' and 'b.yaml')");
  EXPECT_HAS(testing::error_of([] { parse_args({"pretrain", "a.yaml", "--config=b.yaml"}); }), "two config files");
  EXPECT_HAS(testing::error_of([] {
               parse_args({"pretrain", "--shard", "0/2"}, flag_stages());
             }),
             "--shard is an option of generate only, not of pretrain");
  EXPECT_HAS(testing::error_of([] { parse_args({"generate", "--shard", "0/2"}); }), "unexpected argument '--shard'");
}

// The front end with a stage that records what it was given.
struct Fixture {
  std::string out, err;
  int code = -1;
  int runs = 0;
  int64_t seed_seen = -1;
  void call(const std::vector<std::string>& args) {
    std::vector<Stage> commands = {
        {"train",
         "a test stage",
         "Trains nothing.",
         {"run"},
         [this](const config::Config& c) {
           ++runs;
           seed_seen = c.run.seed;
           return 0;
         }},
    };
    std::FILE* o = std::tmpfile();
    std::FILE* e = std::tmpfile();
    code = run_cli(args, commands, [] { return std::string("extra\n"); }, o, e);
    out = testing::read_and_close(o);
    err = testing::read_and_close(e);
  }
};

TEST(RunCli, RunsTheStageAndRecordsTheResolvedConfig) {
  ScratchDir dir;
  Fixture f;
  f.call({"train", "run.seed=41", "run.output_dir=" + dir.path().string()});
  EXPECT_EQ(f.code, 0) << f.err;
  EXPECT_EQ(f.runs, 1);
  EXPECT_EQ(f.seed_seen, 41);
  EXPECT_HAS(f.out, "seed: 41");
  const std::string written = testing::read_text(dir / "train.config.yaml");
  EXPECT_HAS(written, "resolved config of `draftalign train`");
  EXPECT_HAS(written, "seed: 41");
}

TEST(RunCli, ExitCodes) {
  Fixture f;
  f.call({"trian"});
  EXPECT_EQ(f.code, kUsage);
  EXPECT_HAS(f.err, "unknown command 'trian' (did you mean 'train'?)");
  f.call({"train", "--bogus"});
  EXPECT_EQ(f.code, kUsage);
  EXPECT_HAS(f.err, "unexpected argument '--bogus'");
  f.call({"train", "run.seed=x"});
  EXPECT_EQ(f.code, kFailed);
  EXPECT_HAS(f.err, "error: override 'run.seed=x': key 'run.seed': expected an integer");
  f.call({"--version"});
  EXPECT_EQ(f.code, kOk);
  EXPECT_HAS(f.out, "extra");
  f.call({});
  EXPECT_EQ(f.code, kUsage);
  EXPECT_EQ(f.runs, 0);
}

TEST(RunCli, PrintConfigPrintsAndRunsNothing) {
  ScratchDir dir;
  Fixture f;
  f.call({"train", "--print-config", "run.seed=5", "run.output_dir=" + (dir / "o").string()});
  EXPECT_EQ(f.code, kOk) << f.err;
  EXPECT_EQ(f.runs, 0);
  EXPECT_HAS(f.out, "seed: 5");
  EXPECT_FALSE(std::filesystem::exists(dir / "o"));
}

// The real binary.
TEST(Binary, TopLevelHelpListsEveryCommand) {
  auto r = run_command(kBin + " --help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* c : kCommands) EXPECT_HAS(r.output, std::string("  ") + c + " ");
  r = run_command(kBin);
  EXPECT_EQ(r.exit_code, kUsage);
}

TEST(Binary, EveryCommandHasHelpWithEveryOption) {
  for (const char* c : kCommands) {
    auto r = run_command(kBin + " " + c + " --help");
    EXPECT_EQ(r.exit_code, 0) << c << ": " << r.output;
    EXPECT_HAS(r.output, std::string("usage: draftalign ") + c);
    EXPECT_HAS(r.output,
               "  run.output_dir = \"runs/demo\"\n      the run's directory: the resolved config of each command, and "
               "${run.output_dir} in the stage directories");
  }
  auto r = run_command(kBin + " distill --help");
  EXPECT_HAS(r.output, "  distill.loss = \"tvdpp\"\n      distillation loss (one of: tvdpp, fkl, rkl, tvd, ce)");
  EXPECT_HAS(r.output, "  distill.train.steps = 300\n      optimizer steps");
}

TEST(Binary, VersionNamesLibTorch) {
  auto r = run_command(kBin + " --version");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "LibTorch 2.");
  EXPECT_HAS(r.output, "draftalign CUDA kernels built: ");
}

TEST(Binary, BadYamlIsOneClearErrorAndNonZeroExit) {
  ScratchDir dir;
  const auto cfg = dir / "bad.yaml";
  testing::write_text(cfg, "run:\n  seed: 1\n  output_dri: x\n");
  auto r = run_command(kBin + " pretrain --config " + cfg.string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_HAS(r.output, "error: " + cfg.string() + ":3:3: unknown key 'run.output_dri' (did you mean 'output_dir'?)");
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << "one line: " << r.output;

  testing::write_text(cfg, "pretrain:\n  train:\n    grad_accum: 0\n");
  r = run_command(kBin + " pretrain --config " + cfg.string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, cfg.string() + ":3:17: key 'pretrain.train.grad_accum': expected an integer in [1, inf), got '0'");

  r = run_command(kBin + " pretrain --config " + (dir / "missing.yaml").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, "missing.yaml: config file not found");
}

TEST(Binary, PipelineUnderALauncherWithSeveralRanksRefusesBeforeAnyStage) {
  ScratchDir dir;
  auto r = run_command("WORLD_SIZE=2 RANK=1 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 " + kBin + " pipeline run.output_dir=" +
                       (dir / "out").string());
  EXPECT_EQ(r.exit_code, kFailed) << r.output;
  EXPECT_HAS(r.output, "error: pipeline: runs its stages in one process, but the launcher started 2; launch the "
                       "stages one by one instead");
  EXPECT_EQ(r.output.find("[1/"), std::string::npos) << "no stage may run";
  EXPECT_FALSE(std::filesystem::exists(dir / "out" / "shards"));
}

TEST(Binary, PipelineStopsAtTheFirstBadInputWithOneError) {
  ScratchDir dir;
  auto r = run_command(kBin + " pipeline " DRAFTALIGN_SOURCE_DIR "/configs/demo.yaml run.output_dir=" +
                       (dir / "out").string() + " target.dir=" + testing::kSmolDir.string() + " prepare.inputs=[" +
                       (dir / "nope.jsonl").string() + "] prepare.output_dir=" + (dir / "shards").string());
  EXPECT_EQ(r.exit_code, kFailed) << r.output;
  // The stage count follows the demo's pipeline.losses; the first stage is prepare-data whatever it is.
  const size_t first = r.output.find("pipeline: [1/");
  ASSERT_NE(first, std::string::npos) << r.output;
  EXPECT_EQ(r.output.compare(r.output.find("] ", first), 15, "] prepare-data:"), 0) << r.output.substr(first, 80);
  EXPECT_HAS(r.output, "error: " + (dir / "nope.jsonl").string() + ": input file not found (prepare.inputs)");
  EXPECT_EQ(r.output.find("pipeline: [2/"), std::string::npos) << "no stage after the failed one may run";
}

}  // namespace
}  // namespace draftalign::cli

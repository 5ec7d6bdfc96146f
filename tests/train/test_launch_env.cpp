// Launch detection from the environment: torchrun, a task of an srun step, and everything else as one process, in
// particular a batch script, which Slurm gives SLURM_PROCID=0 and SLURM_NTASKS=<job tasks> without being a step.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "test_util.h"
#include "train/launch_env.h"

namespace draftalign::train {
namespace {

using testing::error_of;
using Env = std::map<std::string, std::string>;

DistEnv launch_of(const Env& env) {
  return dist_env_from([&](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

// The launch and the process's place in it.
void expect_place(const DistEnv& e, Launcher launcher, int rank, int world, int local_rank, int local_world) {
  EXPECT_EQ(e.launcher, launcher);
  EXPECT_EQ(e.rank, rank);
  EXPECT_EQ(e.world, world);
  EXPECT_EQ(e.local_rank, local_rank);
  EXPECT_EQ(e.local_world, local_world);
}

TEST(LaunchEnv, NoLauncherIsOneProcess) { expect_place(launch_of({}), Launcher::kSingle, 0, 1, 0, 1); }

TEST(LaunchEnv, TorchrunGivesRankWorldAndLocalRank) {
  const DistEnv e = launch_of({{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "4"},
                               {"MASTER_ADDR", "node0"}, {"MASTER_PORT", "29511"},
                               {"TORCHELASTIC_USE_AGENT_STORE", "True"}});
  expect_place(e, Launcher::kTorchrun, 5, 8, 1, 4);
  EXPECT_EQ(e.master_addr, "node0");
  EXPECT_EQ(e.master_port, 29511);
  EXPECT_TRUE(e.agent_store);
  EXPECT_HAS(error_of([] { launch_of({{"RANK", "8"}, {"WORLD_SIZE", "8"}}); }), "RANK=8 is not below WORLD_SIZE=8");
  EXPECT_HAS(error_of([] { launch_of({{"RANK", "x"}}); }), "environment variable RANK='x' is not an integer");
}

// What sbatch --ntasks=8 --ntasks-per-node=4 -N 2 gives the batch script: the job's task count, but no step.
Env batch_script() {
  return {{"SLURM_JOB_ID", "200505"}, {"SLURM_PROCID", "0"},      {"SLURM_NTASKS", "8"},
          {"SLURM_LOCALID", "0"},     {"SLURM_NODEID", "0"},      {"SLURM_NTASKS_PER_NODE", "4"},
          {"SLURM_TASKS_PER_NODE", "4(x2)"}, {"SLURM_JOB_NUM_NODES", "2"}};
}

TEST(LaunchEnv, ABatchScriptIsOneProcess) { expect_place(launch_of(batch_script()), Launcher::kSingle, 0, 1, 0, 1); }

// A task of `srun` inside that job: srun adds the step's variables. Task 6 is the third task on the second node.
TEST(LaunchEnv, AnSrunStepTaskGivesItsPlace) {
  Env env = batch_script();
  env["SLURM_STEP_ID"] = "0";
  env["SLURM_PROCID"] = "6";
  env["SLURM_LOCALID"] = "2";
  env["SLURM_NODEID"] = "1";
  env["SLURM_STEP_NUM_TASKS"] = "7";  // the step may use fewer tasks than the job
  env["SLURM_STEP_TASKS_PER_NODE"] = "4,3";
  env["MASTER_ADDR"] = "gnode10";
  const DistEnv e = launch_of(env);
  expect_place(e, Launcher::kSrunStep, 6, 7, 2, 3);
  EXPECT_EQ(e.master_addr, "gnode10");

  env.erase("MASTER_ADDR");
  EXPECT_HAS(error_of([&] { launch_of(env); }), "srun step with 7 tasks: set MASTER_ADDR");
  env["MASTER_ADDR"] = "gnode10";
  env["SLURM_LOCALID"] = "3";
  EXPECT_HAS(error_of([&] { launch_of(env); }), "SLURM_LOCALID=3 is not below this node's task count 3");
}

TEST(LaunchEnv, SlurmTasksPerNodeLists) {
  EXPECT_EQ(slurm_tasks_on_node("8", 0, "V"), 8);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 0, "V"), 2);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 2, "V"), 2);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 3, "V"), 1);
  EXPECT_EQ(slurm_tasks_on_node("4,3(x2),1", 2, "V"), 3);
  EXPECT_HAS(error_of([] { slurm_tasks_on_node("2(x3),1", 4, "V"); }), "V='2(x3),1' is not a Slurm tasks-per-node");
  for (const char* bad : {"", "x", "2(3)", "2(x)", "2(x3", "2;1", "0"})
    EXPECT_HAS(error_of([&] { slurm_tasks_on_node(bad, 0, "V"); }), "is not a Slurm tasks-per-node list") << bad;
}

}  // namespace
}  // namespace draftalign::train

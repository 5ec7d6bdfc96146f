// launch_env.h: who this process is in a multi-process launch, read once from the launcher's environment. Three
// launches are recognised:
//   torchrun    RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (torchrun sets them all);
//   srun step   a task of a Slurm job step, recognised by SLURM_STEP_ID, which srun sets for every task it launches:
//               SLURM_PROCID (rank), SLURM_STEP_NUM_TASKS (world), SLURM_LOCALID (local rank), and this node's entry
//               of SLURM_STEP_TASKS_PER_NODE ("2(x3),1": 2 tasks on each of the first three nodes, 1 on the fourth;
//               the node is SLURM_NODEID) as the local world; MASTER_ADDR / MASTER_PORT set by the user;
//   single      anything else. A batch script (sbatch --ntasks=8) also has SLURM_PROCID=0 and SLURM_NTASKS=8, but it
//               is one process: the job's task count is what srun steps may use, not processes that exist. Trusting
//               it made a plain `sbatch` run wait for 7 ranks that never come.
// Torch-free: the CLI reads it before any stage runs (only rank 0 prints), the process group and generate's shard split
// read it after.
#pragma once

#include <functional>
#include <string>

namespace draftalign::train {

enum class Launcher { kSingle, kTorchrun, kSrunStep };

struct DistEnv {
  Launcher launcher = Launcher::kSingle;
  int rank = 0, world = 1, local_rank = 0, local_world = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool agent_store = false;  // torchrun's agent hosts the TCPStore; every rank is a client
};

// The launch described by an environment: `get(name)` is the variable's value, or null when unset. Malformed values
// are Errors naming the variable. Pure, so that the tests give each launcher's environment.
DistEnv dist_env_from(const std::function<const char*(const char*)>& get);

// dist_env_from over this process's environment.
DistEnv dist_env_from_environment();

// The entry of a Slurm tasks-per-node list ("2(x3),1") for node `node`; an Error naming `variable` if malformed or
// too short.
int slurm_tasks_on_node(const std::string& list, int node, const char* variable);

}  // namespace draftalign::train

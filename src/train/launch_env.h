// launch_env.h: who this process is in a multi-process launch, read once from the launcher's environment:
// torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, or srun's SLURM_PROCID,
// SLURM_NTASKS, SLURM_LOCALID (MASTER_ADDR / MASTER_PORT then set by the user). Torch-free: the CLI reads it before
// any stage runs (only rank 0 prints), the process group and generate's shard split read it after.
#pragma once

#include <string>

namespace draftalign::train {

struct DistEnv {
  int rank = 0, world = 1, local_rank = 0, local_world = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool agent_store = false;  // torchrun's agent hosts the TCPStore; every rank is a client
};

// A single process when no launcher variable is set. Malformed values are Errors naming the variable.
DistEnv dist_env_from_environment();

}  // namespace draftalign::train

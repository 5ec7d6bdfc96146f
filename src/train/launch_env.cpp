#include "train/launch_env.h"

#include <cstdlib>

#include "common/error.h"

namespace draftalign::train {
namespace {

// The integer value of an environment variable, or `fallback` when unset.
int env_int(const char* name, int fallback, int lo) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  DA_CHECK(*end == '\0' && x >= lo && x < (1L << 30), "environment variable ", name, "='", v,
           "' is not an integer >= ", lo);
  return static_cast<int>(x);
}

}  // namespace

DistEnv dist_env_from_environment() {
  DistEnv e;
  const bool torchrun = std::getenv("RANK") != nullptr || std::getenv("WORLD_SIZE") != nullptr;
  const bool slurm = !torchrun && std::getenv("SLURM_PROCID") != nullptr && std::getenv("SLURM_NTASKS") != nullptr;
  if (torchrun) {
    e.rank = env_int("RANK", 0, 0);
    e.world = env_int("WORLD_SIZE", 1, 1);
    e.local_rank = env_int("LOCAL_RANK", e.rank, 0);
    e.local_world = env_int("LOCAL_WORLD_SIZE", e.world, 1);
  } else if (slurm) {
    e.rank = env_int("SLURM_PROCID", 0, 0);
    e.world = env_int("SLURM_NTASKS", 1, 1);
    e.local_rank = env_int("SLURM_LOCALID", 0, 0);
    e.local_world = env_int("SLURM_NTASKS_PER_NODE", 1, 1);
  }
  DA_CHECK(e.rank < e.world, "RANK=", e.rank, " is not below WORLD_SIZE=", e.world);
  if (const char* a = std::getenv("MASTER_ADDR"); a != nullptr && *a != '\0') e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", 29500, 1);
  DA_CHECK(e.master_port < 65536, "environment variable MASTER_PORT=", e.master_port, " is not a TCP port");
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  e.agent_store = agent != nullptr && std::string(agent) == "True";
  if (e.world > 1 && slurm && std::getenv("MASTER_ADDR") == nullptr)
    throw Error("running under srun with SLURM_NTASKS > 1: set MASTER_ADDR (the first node's hostname) and MASTER_PORT");
  return e;
}

}  // namespace draftalign::train

#include "train/launch_env.h"

#include <cstdlib>

#include "common/error.h"

namespace draftalign::train {
namespace {

using Getter = std::function<const char*(const char*)>;

bool is_set(const Getter& get, const char* name) {
  const char* v = get(name);
  return v != nullptr && *v != '\0';
}

// The integer value of a variable, or `fallback` when unset.
int env_int(const Getter& get, const char* name, int fallback, int lo) {
  const char* v = get(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  DA_CHECK(*end == '\0' && x >= lo && x < (1L << 30), "environment variable ", name, "='", v,
           "' is not an integer >= ", lo);
  return static_cast<int>(x);
}

}  // namespace

int slurm_tasks_on_node(const std::string& list, int node, const char* variable) {
  // Comma-separated items "count" or "count(xrepeat)".
  auto bad = [&] {
    return Error(str_cat("environment variable ", variable, "='", list,
                         "' is not a Slurm tasks-per-node "
                         "list such as 2(x3),1 with an entry for node ",
                         node));
  };
  const char* p = list.c_str();
  int first = 0;  // the first node of the current item
  while (*p != '\0') {
    char* end = nullptr;
    const long count = std::strtol(p, &end, 10);
    if (end == p || count < 1) throw bad();
    long repeat = 1;
    p = end;
    if (*p == '(') {
      if (p[1] != 'x') throw bad();
      repeat = std::strtol(p + 2, &end, 10);
      if (end == p + 2 || repeat < 1 || *end != ')') throw bad();
      p = end + 1;
    }
    if (*p != ',' && *p != '\0') throw bad();
    if (node < first + repeat) return static_cast<int>(count);
    first += static_cast<int>(repeat);
    if (*p == ',') ++p;
  }
  throw bad();
}

DistEnv dist_env_from(const Getter& get) {
  DistEnv e;
  if (is_set(get, "RANK") || is_set(get, "WORLD_SIZE")) {
    e.launcher = Launcher::kTorchrun;
    e.rank = env_int(get, "RANK", 0, 0);
    e.world = env_int(get, "WORLD_SIZE", 1, 1);
    e.local_rank = env_int(get, "LOCAL_RANK", e.rank, 0);
    e.local_world = env_int(get, "LOCAL_WORLD_SIZE", e.world, 1);
  } else if (is_set(get, "SLURM_STEP_ID") && is_set(get, "SLURM_PROCID")) {
    e.launcher = Launcher::kSrunStep;
    e.rank = env_int(get, "SLURM_PROCID", 0, 0);
    e.world = env_int(get, "SLURM_STEP_NUM_TASKS", env_int(get, "SLURM_NTASKS", 1, 1), 1);
    e.local_rank = env_int(get, "SLURM_LOCALID", 0, 0);
    e.local_world = is_set(get, "SLURM_STEP_TASKS_PER_NODE")
                        ? slurm_tasks_on_node(get("SLURM_STEP_TASKS_PER_NODE"), env_int(get, "SLURM_NODEID", 0, 0),
                                              "SLURM_STEP_TASKS_PER_NODE")
                        : 1;
    DA_CHECK(e.local_rank < e.local_world, "SLURM_LOCALID=", e.local_rank, " is not below this node's task count ",
             e.local_world, " (SLURM_STEP_TASKS_PER_NODE)");
  }
  DA_CHECK(e.rank < e.world, "RANK=", e.rank, " is not below WORLD_SIZE=", e.world);
  if (is_set(get, "MASTER_ADDR")) e.master_addr = get("MASTER_ADDR");
  e.master_port = env_int(get, "MASTER_PORT", 29500, 1);
  DA_CHECK(e.master_port < 65536, "environment variable MASTER_PORT=", e.master_port, " is not a TCP port");
  const char* agent = get("TORCHELASTIC_USE_AGENT_STORE");
  e.agent_store = agent != nullptr && std::string(agent) == "True";
  if (e.world > 1 && e.launcher == Launcher::kSrunStep && !is_set(get, "MASTER_ADDR"))
    throw Error(str_cat("running as a task of an srun step with ", e.world,
                        " tasks: set MASTER_ADDR (the first node's hostname) and MASTER_PORT"));
  return e;
}

DistEnv dist_env_from_environment() {
  return dist_env_from([](const char* name) -> const char* { return std::getenv(name); });
}

}  // namespace draftalign::train

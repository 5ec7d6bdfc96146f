// commands.h: the `draftalign <command> [--config FILE] [section.key=value ...]` front end.
// Parsing, help, config loading, printing and recording the resolved config, and error reporting are here, once, for
// every subcommand; a subcommand itself is a Stage (cli/stage.h), defined in its own file in trainers/ or evaluators/.
// Exit codes: 0 success, 1 a failed run or a bad config/input file, 2 bad command-line usage, 75 stopped by a signal
// with its state saved (common/preempt.h: re-run the same command to resume); 128 + N: stopped at once by a second
// signal N.
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "common/preempt.h"
#include "cli/stage.h"
#include "config/loader.h"

namespace draftalign::cli {

enum ExitCode { kOk = 0, kFailed = 1, kUsage = 2, kPreempted = preempt::kExitPreempted };

struct Invocation {
  std::string command;
  std::string config_file;
  std::vector<std::string> overrides;
  bool help = false;
  bool print_config = false;  // print the resolved config and exit without running
};

// Parses argv[1..] (argv[1] the command); `stages` gives each command's own flags (Stage::flags). Throws Error with a
// usage message on bad arguments.
Invocation parse_args(const std::vector<std::string>& args, const std::vector<Stage>& stages = {});

// The whole front end. `version_info` adds lines to `--version` (LibTorch, CUDA).
int run_cli(const std::vector<std::string>& args, const std::vector<Stage>& stages,
            const std::function<std::string()>& version_info, std::FILE* out = stdout, std::FILE* err = stderr);

// Reads the launcher's environment (torchrun or srun, train/launch_env.h) so only rank 0 prints before the process
// group exists.
void init_rank_from_env();

}  // namespace draftalign::cli

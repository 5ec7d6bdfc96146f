// stage.h: a stage describes itself once: its command name and help, the config sections it reads, how it runs, what
// it writes and whether that is already done. Each stage's file (trainers/, evaluators/) defines its Stage beside the
// code that runs it; the binary's command table (cli/main.cpp) is a list of them, and `pipeline` runs them in order,
// skipping a stage that is complete:
//   for (step : steps) if (!step.stage.is_complete(step.cfg)) step.stage.run(step.cfg);
// Torch-free: the front end (cli/commands.h) and its tests use it without the stages.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "config/config.h"

namespace draftalign::cli {

// A command-line flag a stage takes besides section.key=value: `--name VALUE` is the override key=VALUE.
struct Flag {
  std::string name;  // "--shard"
  std::string key;   // "generate.shard"
};

struct Stage {
  std::string name;                   // one word, or two for a tool with subcommands ("data show")
  std::string summary;                // one line, for `draftalign --help`
  std::string description;            // a paragraph, for `draftalign <name> --help`
  std::vector<std::string> sections;  // the config sections it reads (its --help lists their options)
  // Runs it: the resolved config in, an exit code out (0 unless the stage says otherwise); a failure throws Error.
  std::function<int(const config::Config&)> run;
  // What it writes under `cfg` (directories or files): the pipeline's log names them. Null for a read-only tool.
  std::function<std::vector<std::string>(const config::Config&)> outputs;
  // Whether those outputs exist and were made from `cfg` (a fingerprint built from the schema, config/fingerprint.h,
  // recorded beside them; for a training run, its final drafter and last checkpoint). Null: it always runs.
  std::function<bool(const config::Config&)> is_complete;
  std::vector<Flag> flags;
  // A stage prints its resolved config and records it in <run.output_dir>/<name>.config.yaml; a read-only tool
  // (`data show`) does neither.
  bool records_config = true;
  // Whether `run` may return with its outputs incomplete by design (generate with generate.shard writes one part of
  // them). The pipeline checks such a stage again after it runs and stops, naming what is missing; any other stage is
  // complete once `run` returns (its tests check is_complete after run), so its inputs are not hashed a second time.
  bool runs_in_parts = false;
};

}  // namespace draftalign::cli

#include "cli/commands.h"

#include "common/fs.h"
#include "common/log.h"
#include "train/launch_env.h"

namespace draftalign::cli {
namespace {

std::string top_help(const std::vector<Stage>& commands) {
  std::string out =
      "draftalign " DRAFTALIGN_VERSION
      ": train draft models for speculative decoding, aligned to a chat-tuned target\n\n"
      "usage: draftalign <command> [--config FILE.yaml] [section.key=value ...]\n"
      "       draftalign <command> --help     every option of the command, with its default and meaning\n"
      "       draftalign <command> [--config FILE.yaml] [overrides] --print-config   "
      "the config with the overrides applied, run nothing\n"
      "       draftalign --version\n\ncommands:\n";
  for (const auto& c : commands) {
    char line[160];
    std::snprintf(line, sizeof line, "  %-13s %s\n", c.name.c_str(), c.summary.c_str());
    out += line;
  }
  out +=
      "\nOptions come from the YAML file, then from section.key=value overrides (lists as [a, b]); with no\n"
      "--config the embedded defaults are used (the demo: configs/demo.yaml spells them out).\n"
      "Exit codes: 0 ok, 1 failed run or bad config/input, 2 bad usage.\n";
  return out;
}

std::string command_help(const Stage& c) {
  config::Config defaults;
  std::string flags;
  for (const auto& f : c.flags) flags += str_cat("  ", f.name, " VALUE    the same as ", f.key, "=VALUE\n");
  return str_cat("usage: draftalign ", c.name, " [--config FILE.yaml] [section.key=value ...]\n\n", c.description,
                 flags.empty() ? std::string() : "\n\nflags:\n" + flags.substr(0, flags.size() - 1),
                 "\n\noptions (key = default, then meaning and accepted values):\n",
                 config::options_help(defaults, c.sections));
}

bool is_yaml_name(const std::string& a) {
  auto ends = [&](const std::string& suffix) {
    return a.size() > suffix.size() && a.compare(a.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return a[0] != '-' && (ends(".yaml") || ends(".yml"));
}

// The stage named `name` among `stages`, or null.
const Stage* find_stage(const std::vector<Stage>& stages, const std::string& name) {
  for (const auto& s : stages)
    if (s.name == name) return &s;
  return nullptr;
}

// The override a stage's own flag (Stage::flags) stands for, or null when `stage` has no flag `a`.
const Flag* find_flag(const Stage* stage, const std::string& a) {
  if (stage != nullptr)
    for (const auto& f : stage->flags)
      if (f.name == a) return &f;
  return nullptr;
}

}  // namespace

Invocation parse_args(const std::vector<std::string>& args, const std::vector<Stage>& stages) {
  Invocation inv;
  auto set_config = [&](const std::string& file) {
    if (!inv.config_file.empty())
      throw Error(str_cat("two config files ('", inv.config_file, "' and '", file,
                          "'): a run reads one; put changes to it on the command line as section.key=value"));
    inv.config_file = file;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (i == 0 && !a.empty() && a[0] != '-') {
      inv.command = a;
    } else if (a == "--help" || a == "-h") {
      inv.help = true;
    } else if (a == "--print-config") {
      inv.print_config = true;
    } else if (a == "--config" || a == "-c") {
      if (i + 1 >= args.size()) throw Error(a + " needs a file name");
      set_config(args[++i]);
    } else if (const Flag* flag = find_flag(find_stage(stages, inv.command), a)) {  // generate --shard i/n
      if (i + 1 >= args.size()) throw Error(str_cat(a, " needs a value (", flag->key, ")"));
      inv.overrides.push_back(flag->key + "=" + args[++i]);
    } else if (a.rfind("--config=", 0) == 0 && a.size() > 9) {
      set_config(a.substr(9));
    } else if (!a.empty() && a[0] != '-' && a.find('=') != std::string::npos) {
      inv.overrides.push_back(a);
    } else if (is_yaml_name(a)) {
      set_config(a);  // `draftalign pipeline configs/demo.yaml`
    } else {
      std::vector<std::string> owners;  // the stages that do take `a`
      for (const auto& s : stages)
        if (find_flag(&s, a) != nullptr) owners.push_back(s.name);
      if (!owners.empty())
        throw Error(str_cat(a, " is an option of ", config::join(owners), " only, not of ",
                            inv.command.empty() ? "this command" : inv.command));
      throw Error(str_cat("unexpected argument '", a, "' (options are --config FILE, --help, section.key=value)"));
    }
  }
  return inv;
}

void init_rank_from_env() {
  try {
    const train::DistEnv env = train::dist_env_from_environment();
    log::set_rank(env.rank, env.world);
  } catch (const Error&) {
    // A malformed variable: stay rank 0 of 1 here; the stage that joins the process group reports it.
  }
}

int run_cli(const std::vector<std::string>& args, const std::vector<Stage>& stages,
            const std::function<std::string()>& version_info, std::FILE* out, std::FILE* err) {
  if (args.empty()) {
    std::fputs(top_help(stages).c_str(), err);
    return kUsage;
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(top_help(stages).c_str(), out);
    return kOk;
  }
  if (args[0] == "--version") {
    std::fprintf(out, "draftalign %s\n%s", DRAFTALIGN_VERSION, version_info ? version_info().c_str() : "");
    return kOk;
  }
  std::vector<std::string> argv = args;
  // Two-word commands: `draftalign data show ...`.
  if (argv.size() > 1 && find_stage(stages, argv[0] + " " + argv[1]) != nullptr) {
    argv[0] += " " + argv[1];
    argv.erase(argv.begin() + 1);
  }
  const Stage* cmd = find_stage(stages, argv[0]);
  if (cmd == nullptr) {
    std::vector<std::string> subcommands;
    for (const auto& c : stages)
      if (c.name.rfind(argv[0] + " ", 0) == 0) subcommands.push_back(c.name);
    if (!subcommands.empty()) {
      std::fprintf(err, "error: '%s' needs a subcommand: %s\n", argv[0].c_str(), config::join(subcommands).c_str());
      return kUsage;
    }
    std::vector<std::string> names;
    for (const auto& c : stages) names.push_back(c.name);
    const std::string near = config::closest(args[0], names);
    std::fprintf(err, "error: unknown command '%s'%s; run draftalign --help\n", args[0].c_str(),
                 near.empty() ? "" : (" (did you mean '" + near + "'?)").c_str());
    return kUsage;
  }

  Invocation inv;
  try {
    inv = parse_args(argv, stages);
  } catch (const Error& e) {
    std::fprintf(err, "error: %s\nusage: draftalign %s [--config FILE.yaml] [section.key=value ...]\n", e.what(),
                 cmd->name.c_str());
    return kUsage;
  }
  if (inv.help) {
    std::fputs(command_help(*cmd).c_str(), out);
    return kOk;
  }

  try {
    config::LoadedConfig loaded = config::load_config(inv.config_file, inv.overrides);
    const std::string from = inv.config_file.empty() ? "the embedded defaults" : inv.config_file;
    const std::string header = str_cat("resolved config of `draftalign ", cmd->name, "` from ", from);
    if (inv.print_config) {
      // As written, ${...} references kept: the text to start a config file from.
      const std::string as_written = str_cat("config of `draftalign ", cmd->name, "` from ", from);
      std::fputs(config::to_yaml(loaded.raw, as_written).c_str(), out);
      return kOk;
    }
    // Rank 0 prints the resolved config and records it next to the outputs: every artifact says what produced it.
    if (log::rank() == 0 && cmd->records_config) {
      const std::string yaml = config::to_yaml(loaded.cfg, header);
      std::fprintf(out, "%s\n", yaml.c_str());
      fs::write_file_atomic(std::filesystem::path(loaded.cfg.run.output_dir) / (cmd->name + ".config.yaml"), yaml);
    }
    return cmd->run(loaded.cfg);
  } catch (const preempt::Preempted& e) {
    const int signo = preempt::stop_signal();
    std::fprintf(err, "stopped (%s): %s\n",
                 signo ? preempt::signal_name(signo).c_str() : "a signal reached another rank", e.what());
    return kPreempted;
  } catch (const Error& e) {
    std::fprintf(err, "error: %s\n", e.what());
    return kFailed;
  } catch (const std::exception& e) {
    // Not one of ours (LibTorch, JSON, the standard library): still one line and a failed exit, not an abort.
    std::fprintf(err, "error: internal error in '%s': %s\n", cmd->name.c_str(), e.what());
    return kFailed;
  }
}

}  // namespace draftalign::cli

// loader.h: YAML file + `section.key=value` overrides -> a validated Config, in this one place.
// Every error is one message that names the file (or the override), line:column, the key and what was expected;
// the CLI prints it and exits non-zero. Every value remembers where it came from, so later stages can report a bad
// input file at the place in the YAML that named it (LoadedConfig::error_at).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "config/config.h"

namespace draftalign::config {

// `${section.key}` inside a string option (or an element of a list of strings) stands for the value of that string
// option, itself expanded, as torchtune's `${output_dir}`: the stage directories default to "${run.output_dir}/..."
// so that `run.output_dir=runs/mine` moves every output. A reference to no string option, an unclosed `${` or a
// circle of references is an error naming where the value was set.
struct LoadedConfig {
  Config cfg;  // references expanded: what the stages use and what is recorded next to their outputs
  Config raw;  // as written, references kept: what --print-config prints
  std::string source;                         // the YAML file, or "" for the embedded defaults
  std::map<std::string, std::string> origin;  // key -> "file:line:col" or "override 'key=value'"

  // Where `key` was set: its origin, else "<file>: default" / "default".
  std::string where(const std::string& key) const;
  // An Error that names the place `key` was set, the key and the problem.
  Error error_at(const std::string& key, const std::string& problem) const;
};

// Loads `file` ("" = defaults only), then applies overrides in order, expands the references, then runs the
// cross-option checks.
LoadedConfig load_config(const std::string& file, const std::vector<std::string>& overrides);

// The whole resolved config as YAML with a comment per option (written next to a run's outputs).
std::string to_yaml(Config& cfg, const std::string& header_comment);

// `--help` text for the options under `sections` (top-level section names).
std::string options_help(Config& cfg, const std::vector<std::string>& sections);

}  // namespace draftalign::config

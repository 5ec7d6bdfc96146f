// fingerprint.h: what a stage's outputs depend on, as one checksum, built from the schema (schema.h) rather than by
// hand: every option of the stage's config sections by value, except those tagged Role::kNoEffect (threads, log
// intervals, trackers, plotting) or Role::kOutput (where it writes), and every file its Role::kInputFile and
// Role::kInputDir options name by the XXH3-64 of its content (a directory: each regular file directly inside, by
// name). Paths themselves are not in it, so a relative and an absolute path to the same file, or a copy of it, give
// the same fingerprint, and a file rewritten with other content at the same size and time does not.
// A stage records its fingerprint beside its outputs and is complete when the recorded one equals the config's.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "config/config.h"

namespace draftalign::config {

// The fingerprint of `stage` (a name, with a version: "evaluate/v3") over the options under `sections` (dotted
// prefixes: "run", "target", "evaluate"), and `extra` (name, value) pairs the stage adds (e.g. a count it derives).
std::string stage_fingerprint(const Config& cfg, const std::string& stage, const std::vector<std::string>& sections,
                              const std::vector<std::pair<std::string, std::string>>& extra = {});

// The line-per-option text the checksum is taken over, for tests and for saying what changed.
std::string fingerprint_text(const Config& cfg, const std::vector<std::string>& sections);

}  // namespace draftalign::config

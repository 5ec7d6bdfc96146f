// bench_args.h: the `--name value` options of the benchmark binaries, and writing their JSON result.
#pragma once

#include <cstdio>
#include <map>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include "common/fs.h"

namespace draftalign::bench {

using Option = std::variant<std::string*, int64_t*>;

// Fills the options from argv; false (after a message) on an unknown option or a missing value.
inline bool parse_options(int argc, char** argv, const std::map<std::string, Option>& options) {
  for (int i = 1; i < argc; i += 2) {
    auto it = options.find(argv[i]);
    if (it == options.end() || i + 1 >= argc) {
      std::fprintf(stderr, "%s: unknown option or missing value: %s\n", argv[0], argv[i]);
      return false;
    }
    if (auto* s = std::get_if<std::string*>(&it->second)) **s = argv[i + 1];
    else *std::get<int64_t*>(it->second) = std::stoll(argv[i + 1]);
  }
  return true;
}

// The result to `out` (atomically), or to stdout when `out` is empty.
inline void write_result(const nlohmann::json& j, const std::string& out) {
  const std::string text = j.dump() + "\n";
  if (out.empty())
    std::fputs(text.c_str(), stdout);
  else
    fs::write_file_atomic(out, text);
}

}  // namespace draftalign::bench

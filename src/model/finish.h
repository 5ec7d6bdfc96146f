// finish.h: why an answer ended, for the generator (model/generation.h), the speculative decoder and the reports.
// Without torch, so that the report's translation units stay light.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"

namespace draftalign::model {

// A stop token, a stop string, or the length limit. generate's shards store it as 0, 1, 2 (the enum's values); JSON
// and the console as its name ("eos", "stop", "length").
enum class Finish : uint8_t { kEos = 0, kStop = 1, kLength = 2 };

inline const char* finish_name(Finish f) {
  switch (f) {
    case Finish::kEos: return "eos";
    case Finish::kStop: return "stop";
    case Finish::kLength: return "length";
  }
  return "?";
}

// The Finish named `name`; anything else is an Error naming `where`.
inline Finish finish_from_name(const std::string& name, const std::string& where) {
  for (Finish f : {Finish::kEos, Finish::kStop, Finish::kLength})
    if (name == finish_name(f)) return f;
  throw Error(str_cat(where, ": '", name, "' is not a finish reason (eos, stop or length)"));
}

}  // namespace draftalign::model

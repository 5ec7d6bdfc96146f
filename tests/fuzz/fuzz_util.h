// fuzz_util.h: what every libFuzzer target shares. A target hands the input to one parser of a user-supplied file,
// the way the program does (most parsers read a path: the input is written to a file first), and catches only
// draftalign::Error, the one way a parser may reject a file. Anything else is a finding that libFuzzer reports and
// keeps: a sanitizer report (ASan: out-of-bounds, use-after-free, leak; UBSan: overflow, bad cast, ...), a crash, a
// hang (-timeout), or another exception escaping the parser (nlohmann::json's, std::out_of_range, ...).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/log.h"

namespace draftalign::fuzz {

// A directory of this process's own, in memory when /dev/shm is there (a file per input, written thousands of
// times a second): $DRAFTALIGN_FUZZ_SCRATCH, which tools/fuzz.sh sets and removes afterwards (libFuzzer's exits skip
// atexit handlers), else one named by the process id.
inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path base = std::filesystem::is_directory("/dev/shm") ? std::filesystem::path("/dev/shm")
                                                                                  : std::filesystem::temp_directory_path();
    const char* given = std::getenv("DRAFTALIGN_FUZZ_SCRATCH");
    auto d = given != nullptr && *given != '\0' ? std::filesystem::path(given)
                                                 : base / ("draftalign-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    log::set_rank(1, 2);  // info lines are rank 0's: keep the fuzzer's output to its own
    return d;
  }();
  return dir;
}

// Writes `bytes` to `path` (plainly: not the atomic writer's temp file, fsync and rename, thousands of times a second).
inline void write_input(const std::filesystem::path& path, std::string_view bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0)
    __builtin_trap();  // the fuzzer's own directory: not a finding in the parser, but nothing can go on
}

// Writes the input to scratch()/name and returns the path.
inline std::filesystem::path input_file(const std::string& name, std::string_view bytes) {
  const auto path = scratch() / name;
  write_input(path, bytes);
  return path;
}

inline std::string_view text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Runs `parse`; a draftalign::Error (the file rejected with a message) is an expected outcome, and it must say
// something.
template <class F>
void expect_only_errors(F&& parse) {
  try {
    parse();
  } catch (const Error& e) {
    if (std::string_view(e.what()).empty()) __builtin_trap();
  }
}

}  // namespace draftalign::fuzz

// test_util.h: small helpers shared by the tests: a scratch directory per test, file writing, running a command.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/fs.h"
#include "io/hf_config.h"

// EXPECT_HAS(text, part): `part` occurs in `text`; the message shows both.
#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "missing '" << (needle) << "' in: " << (haystack)

#define ASSERT_HAS(haystack, needle) \
  ASSERT_NE(std::string(haystack).find(needle), std::string::npos) << "missing '" << (needle) << "' in: " << (haystack)

namespace draftalign::testing {

// A fresh directory under the system temp dir, removed when the test ends; copied first into
// $DRAFTALIGN_KEEP_SCRATCH/<its name> when that is set (tools/fuzz_seeds.sh takes the files the tests make from there).
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            (std::string("draftalign-") + info->test_suite_name() + "-" + info->name() + "-" +
             std::to_string(::getpid()));
    fs::remove_tree(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    if (const char* keep = std::getenv("DRAFTALIGN_KEEP_SCRATCH"); keep != nullptr && *keep != '\0') {
      std::error_code ec;
      std::filesystem::copy(path_, std::filesystem::path(keep) / path_.filename(),
                            std::filesystem::copy_options::recursive | std::filesystem::copy_options::skip_symlinks,
                            ec);
    }
    fs::remove_tree(path_);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// A tiny Llama with SmolLM2's vocabulary and special ids (so SmolLM2's tokenizer and chat template fit it), for the
// end-to-end tests of the stages that run the real binary on a target: hidden 32, 4 heads of 8 over 2 KV heads.
inline io::LlamaConfig tiny_smol_config(int64_t layers) {
  io::LlamaConfig c;
  c.vocab_size = 49152, c.hidden_size = 32, c.intermediate_size = 64, c.num_hidden_layers = layers;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 8, c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-5, c.rope_theta = 10000, c.tie_word_embeddings = false;
  c.bos_token_id = 1, c.eos_token_ids = {2}, c.pad_token_id = 2;
  return c;
}

// Chi-square goodness of fit of `counts` against `expected` probabilities (cells with an expected count below 5
// merged); returns {statistic, critical value at p = 0.0005}.
inline std::pair<double, double> chi_square(const std::map<int64_t, int64_t>& counts, const std::vector<double>& expected,
                                     int64_t n) {
  double stat = 0, small_expected = 0, small_observed = 0;
  int64_t cells = 0;
  for (size_t x = 0; x < expected.size(); ++x) {
    const double e = expected[x] * n;
    const double o = counts.count(static_cast<int64_t>(x)) ? counts.at(static_cast<int64_t>(x)) : 0;
    if (e < 5) {
      small_expected += e, small_observed += o;
      continue;
    }
    stat += (o - e) * (o - e) / e, ++cells;
  }
  if (small_expected > 0) stat += (small_observed - small_expected) * (small_observed - small_expected) / std::max(small_expected, 1e-9), ++cells;
  const double df = cells - 1, z = 3.29;  // Wilson-Hilferty quantile of chi-square(df)
  const double crit = df * std::pow(1 - 2 / (9 * df) + z * std::sqrt(2 / (9 * df)), 3);
  return {stat, crit};
}

inline void write_text(const std::filesystem::path& p, const std::string& text) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Reads back everything written to a std::tmpfile() and closes it.
inline std::string read_and_close(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

// The message of the draftalign::Error that `body` throws, or "" when it throws none.
template <class F>
std::string error_of(F&& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs a shell command line and returns its exit code and combined output.
inline CommandResult run_command(const std::string& cmdline) {
  CommandResult r;
  std::FILE* pipe = ::popen((cmdline + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// A failure to inject (common/fs.h, DRAFTALIGN_FAULT) and the write point it hits.
struct WriteFault {
  std::string spec;   // the DRAFTALIGN_FAULT value: "ENOSPC@<match>#<n>"
  std::string point;  // as traced: "<path> write|sync"
  std::string file;   // the file name of that path
  bool nospace;       // ENOSPC, else EIO
};

// The write points (DRAFTALIGN_FAULT=trace) that `cmd` passes whose path contains `match`, in order; of the writes of
// one file only the first and the last are kept, so each file is faulted at its first write, its last and its sync.
// Returns a fault for each, alternating ENOSPC and EIO.
inline std::vector<WriteFault> write_faults(const std::string& cmd, const std::string& match) {
  const CommandResult r = run_command("DRAFTALIGN_FAULT=trace " + cmd);
  std::vector<std::string> points;
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("write point: ", 0) == 0 && line.find(match) != std::string::npos) points.push_back(line.substr(13));
  std::vector<WriteFault> faults;
  for (size_t i = 0; i < points.size(); ++i) {
    const bool inner_write = i > 0 && i + 1 < points.size() && points[i] == points[i - 1] && points[i] == points[i + 1];
    if (inner_write) continue;
    const bool nospace = faults.size() % 2 == 0;
    faults.push_back({str_cat(nospace ? "ENOSPC@" : "EIO@", match, "#", i + 1), points[i],
                      std::filesystem::path(points[i].substr(0, points[i].rfind(' '))).filename().string(), nospace});
  }
  return faults;
}

// The lines of `output` that start with "error:".
inline std::vector<std::string> error_lines(const std::string& output) {
  std::vector<std::string> lines;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("error:", 0) == 0) lines.push_back(line);
  return lines;
}

// A run that hit `f` failed as a failed write must: exit code 1 and exactly one error line, naming the file and the
// errno. Call it under ASSERT_NO_FATAL_FAILURE.
inline void expect_one_write_error(const CommandResult& r, const WriteFault& f) {
  ASSERT_EQ(r.exit_code, 1) << r.output;
  const std::vector<std::string> errors = error_lines(r.output);
  ASSERT_EQ(errors.size(), 1u) << r.output;
  EXPECT_HAS(errors[0], f.file);
  EXPECT_HAS(errors[0], f.nospace ? "No space left on device, errno 28" : "errno 5");
}

// Files under `dir` whose names hold ".tmp-" (a write that was not finished or cleaned up).
inline std::vector<std::string> temp_files_under(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  if (!std::filesystem::exists(dir)) return out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) out.push_back(e.path().string());
  return out;
}

#ifdef DRAFTALIGN_SOURCE_DIR
// The real target, converted from its GGUF by tools/prepare_target.py (run by tools/test.sh).
inline const std::filesystem::path kSmolDir =
    std::filesystem::path(DRAFTALIGN_SOURCE_DIR) / ".cache/models/SmolLM2-135M-Instruct";

// Where tools/make_goldens.py (run by tools/test.sh) puts the values computed with transformers. A missing part is a
// failure, not a skip: the parity tests are the point of the suite.
inline std::filesystem::path golden_path(const std::string& part) {
  const std::filesystem::path p = std::filesystem::path(DRAFTALIGN_SOURCE_DIR) / ".cache" / "golden" / part;
  if (!std::filesystem::exists(p))
    ADD_FAILURE() << p << " is missing: run `bash tools/test.sh` (it prepares the SmolLM2 target and the goldens), or "
                  << "`.venv/bin/python tools/make_goldens.py`";
  return p;
}
#endif

}  // namespace draftalign::testing

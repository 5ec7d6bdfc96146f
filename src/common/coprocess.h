// coprocess.h: a Python helper started by the binary and spoken to in JSON lines: the script (embedded at build
// time) runs as `python -c <script>` with stdin and stdout on one socket pair, stderr inherited. The chat template
// renderer (tokenizer/chat.cpp) and the W&B sidecar (common/trackers.cpp) are two.
#pragma once

#include <sys/types.h>

#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

namespace draftalign {

// The Python the helpers run in: $DRAFTALIGN_PYTHON, else the one chosen at build time (the project venv's).
std::string python_interpreter();

class Coprocess {
 public:
  // Starts `script`. `context` begins every error message (a file, a run directory); `role` names the helper in them
  // ("the chat template renderer"); `hint` follows a failure to start it.
  Coprocess(std::string context, std::string role, const std::string& script, const std::string& hint);
  // Closes the socket (the script reads end of input) and waits for the script to exit.
  ~Coprocess();
  Coprocess(const Coprocess&) = delete;
  Coprocess& operator=(const Coprocess&) = delete;

  // Sends one JSON line and returns the answer line; an answer {"error": ...} throws Error "<context>: <prefix>..."
  // with it. Calls from several threads are serialised.
  nlohmann::json call(const nlohmann::json& request, const std::string& error_prefix = "");
  // Closes the socket and waits; returns the exit status (as waitpid's).
  int finish();

  const std::string& python() const { return python_; }

 private:
  std::string context_, role_, python_, buffer_;
  pid_t pid_ = -1;
  int fd_ = -1;
  std::mutex mu_;
};

}  // namespace draftalign

#include "common/coprocess.h"

#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/error.h"

extern char** environ;

namespace draftalign {

std::string python_interpreter() {
  const char* env = std::getenv("DRAFTALIGN_PYTHON");
  return env != nullptr && *env != '\0' ? env : DRAFTALIGN_PYTHON_DEFAULT;
}

Coprocess::Coprocess(std::string context, std::string role, const std::string& script, const std::string& hint)
    : context_(std::move(context)), role_(std::move(role)), python_(python_interpreter()) {
  int sv[2];
  DA_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, context_, ": socketpair failed for ", role_,
           " (", std::strerror(errno), ")");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, sv[1], 0);
  posix_spawn_file_actions_adddup2(&actions, sv[1], 1);
  std::string dash_c = "-c", text = script;
  char* argv[] = {python_.data(), dash_c.data(), text.data(), nullptr};
  const int rc = posix_spawnp(&pid_, python_.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  close(sv[1]);
  if (rc != 0) {
    close(sv[0]);
    pid_ = -1;
    throw Error(str_cat(context_, ": cannot start '", python_, "' for ", role_, " (", std::strerror(rc), "); ", hint));
  }
  fd_ = sv[0];
}

Coprocess::~Coprocess() { finish(); }

int Coprocess::finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ >= 0) close(fd_), fd_ = -1;
  int status = 0;
  if (pid_ > 0) {
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }
  return status;
}

nlohmann::json Coprocess::call(const nlohmann::json& request, const std::string& error_prefix) {
  std::lock_guard<std::mutex> lock(mu_);
  DA_CHECK(fd_ >= 0, context_, ": ", role_, " has been stopped");
  const std::string line = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  for (size_t sent = 0; sent < line.size();) {
    const ssize_t n = send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    DA_CHECK(n > 0, context_, ": ", role_, " ('", python_, "') is not running");
    sent += static_cast<size_t>(n);
  }
  size_t end;
  while ((end = buffer_.find('\n')) == std::string::npos) {
    char chunk[65536];
    const ssize_t n = recv(fd_, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    DA_CHECK(n > 0, context_, ": ", role_, " ('", python_, "') exited without an answer; its messages are above");
    buffer_.append(chunk, static_cast<size_t>(n));
  }
  nlohmann::json answer;
  try {
    answer = nlohmann::json::parse(buffer_.substr(0, end));
  } catch (const nlohmann::json::exception&) {
    throw Error(str_cat(context_, ": ", role_, " answered a line that is not JSON: ", buffer_.substr(0, end)));
  }
  buffer_.erase(0, end + 1);
  if (answer.contains("error")) throw Error(str_cat(context_, ": ", error_prefix, answer["error"].get<std::string>()));
  return answer;
}

}  // namespace draftalign

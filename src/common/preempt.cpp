#include "common/preempt.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>

#include "common/error.h"

namespace draftalign::preempt {
namespace {

constexpr int kSignals[] = {SIGTERM, SIGINT, SIGUSR1};
constexpr size_t kPathMax = 4096;

std::atomic<int> requested{0};  // the first signal's number
std::mutex install_mutex;
int installs = 0;
struct sigaction previous[3];

// Temp-file slots: 0 free, 1 being filled, 2 holds a path the handler may unlink.
std::atomic<int> slot_state[kMaxTempFiles];
char slot_path[kMaxTempFiles][kPathMax];

// Only async-signal-safe calls below: write, unlink, _exit.
void say(const char* a, const char* b, const char* c) {
  for (const char* s : {a, b, c}) {
    const ssize_t n = ::write(STDERR_FILENO, s, ::strlen(s));
    (void)n;
  }
}

const char* name_of(int signo) {
  switch (signo) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGUSR1:
      return "SIGUSR1";
    default:
      return "a signal";
  }
}

void on_signal(int signo) {
  int none = 0;
  if (requested.compare_exchange_strong(none, signo)) {
    say("draftalign: ", name_of(signo),
        " received: stopping at the next safe point and saving the state (a second signal stops at once)\n");
    return;
  }
  for (int i = 0; i < kMaxTempFiles; ++i)
    if (slot_state[i].load() == 2) ::unlink(slot_path[i]);
  say("draftalign: ", name_of(signo), " received again: stopping now; files being written were removed\n");
  ::_exit(128 + signo);
}

}  // namespace

StopOnSignal::StopOnSignal() {
  std::lock_guard<std::mutex> lock(install_mutex);
  if (installs++ > 0) return;
  struct sigaction sa;
  ::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (size_t i = 0; i < 3; ++i) ::sigaction(kSignals[i], &sa, &previous[i]);
}

StopOnSignal::~StopOnSignal() {
  std::lock_guard<std::mutex> lock(install_mutex);
  if (--installs > 0) return;
  for (size_t i = 0; i < 3; ++i) ::sigaction(kSignals[i], &previous[i], nullptr);
}

bool stop_requested() { return requested.load() != 0; }
int stop_signal() { return requested.load(); }
std::string signal_name(int signo) { return name_of(signo); }

void throw_if_stop_requested(const std::string& where) {
  if (requested.load() != 0) throw Preempted(where);
}

int register_temp_file(const std::string& path) {
  if (path.size() >= kPathMax) return -1;
  for (int i = 0; i < kMaxTempFiles; ++i) {
    int free = 0;
    if (!slot_state[i].compare_exchange_strong(free, 1)) continue;
    ::memcpy(slot_path[i], path.c_str(), path.size() + 1);
    slot_state[i].store(2);
    return i;
  }
  return -1;
}

void unregister_temp_file(int slot) {
  if (slot < 0 || slot >= kMaxTempFiles) return;
  slot_state[slot].store(0);
}

}  // namespace draftalign::preempt

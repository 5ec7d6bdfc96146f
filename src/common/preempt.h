// preempt.h: stopping cleanly when a cluster preempts the job. Slurm sends SIGTERM at the end of a job's time (or
// SIGUSR1 ahead of it with --signal=USR1@90), Kubernetes SIGTERM before its grace period's SIGKILL, a user SIGINT
// (Ctrl-C). While a StopOnSignal lives, the first of these only sets a flag; the long-running loops read it at their
// safe points (train_loop after an optimizer step, generate during a shard, evaluate between sweep points), save what
// they have atomically and throw Preempted, which the CLI turns into exit code kExitPreempted: re-run the same
// command and it resumes. A second signal exits at once with 128 + the signal number: the temporary file of a write in
// progress is removed, and finished files are never torn, since every write is temp + fsync + rename (common/fs.h).
#pragma once

#include <stdexcept>
#include <string>

namespace draftalign::preempt {

// The exit code of a preempted run that saved its state: EX_TEMPFAIL of sysexits.h ("try again later"). Launchers
// requeue on it (Slurm: `scontrol requeue`, or a loop around srun).
constexpr int kExitPreempted = 75;

// Installs the handler for SIGTERM, SIGINT and SIGUSR1 while alive; nested guards share one installation and the
// last one restores the previous handlers. A signal that arrived stays requested after the guard is gone.
class StopOnSignal {
 public:
  StopOnSignal();
  ~StopOnSignal();
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;
};

// Whether a stop was requested, and by which signal (0: none).
bool stop_requested();
int stop_signal();
std::string signal_name(int signo);  // "SIGTERM"

// Thrown by a stage that has saved its state on a stop request; `what` says where it stopped and what was kept.
class Preempted : public std::runtime_error {
 public:
  explicit Preempted(const std::string& what) : std::runtime_error(what) {}
};

// Throws Preempted(where) when a stop was requested.
void throw_if_stop_requested(const std::string& where);

// The temporary files of writes in progress, which a second signal removes before it exits (common/fs.cpp registers
// AtomicWriter's). At most kMaxTempFiles at once; beyond that a file is simply not removed on a forced exit.
constexpr int kMaxTempFiles = 16;
int register_temp_file(const std::string& path);  // a slot, or -1
void unregister_temp_file(int slot);

}  // namespace draftalign::preempt

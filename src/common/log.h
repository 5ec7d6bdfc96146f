// log.h: rank-aware console logging and a progress bar.
// Only rank 0 prints info lines and progress; warnings and errors print on every rank, prefixed with the rank when the
// world has more than one. Progress draws a bar with rate and ETA on a TTY and falls back to one plain line every
// `line_interval_s` seconds when stdout is a file or a pipe (CI logs, srun output).
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>

#include "common/error.h"

namespace draftalign::log {

// Set once by the process-group setup; before that every process is rank 0 of 1.
void set_rank(int rank, int world_size);
int rank();
int world_size();

void write_line(std::FILE* out, std::string_view level, const std::string& msg, bool all_ranks);

template <class... Args>
void info(Args&&... args) {
  write_line(stdout, "", str_cat(std::forward<Args>(args)...), false);
}
template <class... Args>
void warn(Args&&... args) {
  write_line(stderr, "warning: ", str_cat(std::forward<Args>(args)...), true);
}

// "1:02:03" / "2:03" for a number of seconds; "?" when not finite or negative.
std::string format_duration(double seconds);

// One progress line: "label  done/total [#####.....]  42.0%  12.3 it/s  ETA 1:23  status".
// `bar_width` = 0 leaves the bar out (the plain-line form). Pure: tested directly.
// `skipped` of the `done` units took no time in this process (a resumed run's steps, finished work found on disk):
// the rate and the ETA come from the other done - skipped units over elapsed_s.
std::string render_progress(std::string_view label, int64_t done, int64_t total, double elapsed_s, int bar_width,
                            std::string_view unit, std::string_view status, int64_t skipped = 0);

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit = "it", std::FILE* out = stdout, int force_tty = -1,
           double line_interval_s = 10.0);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Moves the counter to `done` (absolute) and redraws when due. `status` is free text such as "loss 2.31".
  void update(int64_t done, std::string_view status = {});
  // Counts `n` units as done without the time of this process (a resumed run's steps, a finished sweep point found
  // in its log), so that the rate and the ETA are this process's own. Does not redraw.
  void skip(int64_t n);
  // Draws the final state and ends the line. Called by the destructor if not called before.
  void finish(std::string_view status = {});

 private:
  using Clock = std::chrono::steady_clock;
  double elapsed() const;
  void draw(bool final_line);

  std::string label_, unit_, status_;
  int64_t total_, done_ = 0, skipped_ = 0;
  std::FILE* out_;
  bool tty_, enabled_, finished_ = false;
  double line_interval_s_, last_draw_s_ = -1e9;
  Clock::time_point start_;
};

}  // namespace draftalign::log

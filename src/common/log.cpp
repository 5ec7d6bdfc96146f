#include "common/log.h"

#include <unistd.h>

#include <cmath>
#include <mutex>

namespace draftalign::log {
namespace {
int g_rank = 0;
int g_world_size = 1;
std::mutex g_mutex;
}  // namespace

void set_rank(int rank, int world_size) {
  g_rank = rank;
  g_world_size = world_size;
}
int rank() { return g_rank; }
int world_size() { return g_world_size; }

void write_line(std::FILE* out, std::string_view level, const std::string& msg, bool all_ranks) {
  if (!all_ranks && g_rank != 0) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_world_size > 1) std::fprintf(out, "[rank %d] ", g_rank);
  std::fprintf(out, "%.*s%s\n", static_cast<int>(level.size()), level.data(), msg.c_str());
  std::fflush(out);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  }
  return buf;
}

std::string render_progress(std::string_view label, int64_t done, int64_t total, double elapsed_s, int bar_width,
                            std::string_view unit, std::string_view status, int64_t skipped) {
  std::string line(label);
  line += str_cat("  ", done);
  const bool known_total = total > 0;
  const double frac = known_total ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total)) : 0.0;
  if (known_total) line += str_cat("/", total);
  if (known_total && bar_width > 0) {
    const int filled = static_cast<int>(frac * bar_width);
    line += " [" + std::string(filled, '#') + std::string(bar_width - filled, '.') + "]";
  }
  char buf[96];
  const double rate = elapsed_s > 0 ? static_cast<double>(std::max<int64_t>(0, done - skipped)) / elapsed_s : 0.0;
  if (known_total) {
    std::snprintf(buf, sizeof buf, " %5.1f%%", 100.0 * frac);
    line += buf;
  }
  std::snprintf(buf, sizeof buf, "  %.3g %.*s/s", rate, static_cast<int>(unit.size()), unit.data());
  line += buf;
  if (known_total) {
    const double eta = rate > 0 ? static_cast<double>(total - done) / rate : NAN;
    line += "  ETA " + format_duration(done >= total ? 0.0 : eta);
  }
  if (!status.empty()) line += str_cat("  ", status);
  return line;
}

Progress::Progress(std::string label, int64_t total, std::string unit, std::FILE* out, int force_tty,
                   double line_interval_s)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      out_(out),
      tty_(force_tty >= 0 ? force_tty != 0 : ::isatty(::fileno(out)) != 0),
      enabled_(rank() == 0),
      line_interval_s_(line_interval_s),
      start_(Clock::now()) {}

Progress::~Progress() {
  if (!finished_) finish();
}

double Progress::elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

void Progress::update(int64_t done, std::string_view status) {
  done_ = done;
  status_.assign(status);
  const double now = elapsed();
  // A TTY redraws at most 10 times a second; a log file gets one line per interval.
  const double interval = tty_ ? 0.1 : line_interval_s_;
  if (now - last_draw_s_ >= interval) {
    last_draw_s_ = now;
    draw(false);
  }
}

void Progress::skip(int64_t n) {
  done_ += n;
  skipped_ += n;
}

void Progress::finish(std::string_view status) {
  if (finished_) return;
  finished_ = true;
  if (!status.empty()) status_.assign(status);
  draw(true);
}

void Progress::draw(bool final_line) {
  if (!enabled_) return;
  const std::string line = render_progress(label_, done_, total_, elapsed(), tty_ ? 30 : 0, unit_, status_, skipped_);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (tty_) {
    std::fprintf(out_, "\r\033[K%s%s", line.c_str(), final_line ? "\n" : "");
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

}  // namespace draftalign::log

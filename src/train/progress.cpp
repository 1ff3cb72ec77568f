#include "ranktune/train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "ranktune/distributed/topology.h"

namespace ranktune {
namespace {

constexpr int kBarWidth = 24;
constexpr double kRedrawSeconds = 0.1;  // a fast CPU run would otherwise repaint the terminal thousands of times
constexpr const char* kClearLine = "\r\033[2K";

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string rate(double tokens_per_s) {
  if (!std::isfinite(tokens_per_s)) return "?";
  if (tokens_per_s >= 1e6) return fmt("%.2fM", tokens_per_s / 1e6);
  if (tokens_per_s >= 1e3) return fmt("%.1fk", tokens_per_s / 1e3);
  return fmt("%.0f", tokens_per_s);
}

}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  long s = std::lround(seconds);
  const long days = s / 86400;
  s %= 86400;
  char buf[48];
  if (days > 0) std::snprintf(buf, sizeof buf, "%ldd %02ld:%02ld:%02ld", days, s / 3600, s / 60 % 60, s % 60);
  else if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

Progress::Progress(std::ostream& out, long total_steps, long log_every, long start_step, bool tty)
    : out_(out), total_(total_steps), log_every_(log_every > 0 ? log_every : 1), start_(start_step), tty_(tty) {}

bool Progress::stdout_is_tty() {
  const char* term = std::getenv("TERM");
  // Launchers give ranks a pseudo-terminal but forward it into job logs: under mpirun or Slurm, plain lines.
  const bool launched = launch_is_managed(launch_env_capture());
  return isatty(STDOUT_FILENO) == 1 && !launched && !(term && std::strcmp(term, "dumb") == 0);
}

double Progress::eta_seconds(const StepMetrics& m) const {
  const long done = m.step - start_;
  if (done <= 0 || !std::isfinite(m.elapsed_s)) return NAN;
  return m.elapsed_s / static_cast<double>(done) * static_cast<double>(std::max(0L, total_ - m.step));
}

std::string Progress::bar_line(const StepMetrics& m) const {
  const double frac = total_ > 0 ? std::clamp(static_cast<double>(m.step) / static_cast<double>(total_), 0.0, 1.0) : 0;
  const int filled = static_cast<int>(frac * kBarWidth);
  std::string line = "step " + std::to_string(m.step) + "/" + std::to_string(total_) + " [" + std::string(filled, '#') +
                     std::string(kBarWidth - filled, '.') + "] " + fmt("%3.0f%%", 100 * frac) + " loss " +
                     fmt("%.4f", m.loss) + " lr " + fmt("%.2e", m.lr) + " " + rate(m.tokens_per_s) + " tok/s ETA " +
                     format_duration(eta_seconds(m));
  return line;
}

std::string Progress::plain_line(const StepMetrics& m) const {
  std::string line = "step " + std::to_string(m.step) + "/" + std::to_string(total_) + " loss " + fmt("%.4f", m.loss) +
                     " lr " + fmt("%.3e", m.lr) + " grad_norm " + fmt("%.3f", m.grad_norm) + " tok/s " +
                     rate(m.tokens_per_s);
  if (std::isfinite(m.mfu)) line += " mfu " + fmt("%.1f%%", 100 * m.mfu);
  if (std::isfinite(m.gpu_mem_gib)) line += " mem " + fmt("%.1f", m.gpu_mem_gib) + " GiB";
  if (m.eval_loss) line += " eval_loss " + fmt("%.4f", *m.eval_loss);
  line += " elapsed " + format_duration(m.elapsed_s) + " eta " + format_duration(eta_seconds(m));
  return line;
}

void Progress::update(const StepMetrics& m) {
  if (!tty_) {
    // The first step shows the run is alive; then every log_every steps and the last one.
    if (m.step % log_every_ == 0 || m.step == total_ || m.step == start_ + 1 || m.eval_loss)
      out_ << plain_line(m) << '\n' << std::flush;
    return;
  }
  last_bar_ = bar_line(m);
  const bool due = !std::isfinite(m.elapsed_s) || last_draw_s_ < 0 || m.elapsed_s - last_draw_s_ >= kRedrawSeconds;
  if (!due && m.step != total_) return;
  last_draw_s_ = m.elapsed_s;
  out_ << kClearLine << last_bar_ << std::flush;
  bar_shown_ = true;
}

void Progress::note(const std::string& line) {
  if (tty_ && bar_shown_) {
    out_ << kClearLine << line << '\n' << last_bar_ << std::flush;
    return;
  }
  out_ << line << '\n' << std::flush;
}

void Progress::finish() {
  if (tty_ && bar_shown_) out_ << '\n' << std::flush;
  bar_shown_ = false;
}

}  // namespace ranktune

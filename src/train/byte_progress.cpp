#include "ranktune/train/byte_progress.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "ranktune/train/progress.h"

namespace ranktune {
namespace {

constexpr int kBarWidth = 24;
constexpr double kRedrawSeconds = 0.1;
constexpr const char* kClearLine = "\r\033[2K";

std::string megabytes(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", bytes / 1e6);
  return buf;
}

}  // namespace

ByteProgress::ByteProgress(std::ostream& out, std::string label, bool tty)
    : out_(out), label_(std::move(label)), tty_(tty) {}

std::string ByteProgress::line(std::uint64_t done, std::uint64_t total, const std::string& note,
                               double elapsed_s) const {
  const double frac = total ? std::clamp(static_cast<double>(done) / static_cast<double>(total), 0.0, 1.0) : 1.0;
  const double rate = elapsed_s > 0 ? static_cast<double>(done) / elapsed_s : 0;
  const double eta = rate > 0 ? static_cast<double>(total - std::min(done, total)) / rate : -1;
  char pct[16];
  std::snprintf(pct, sizeof pct, "%3.0f%%", 100 * frac);
  std::string s = label_ + " ";
  if (tty_) {
    const int filled = static_cast<int>(frac * kBarWidth);
    s += "[" + std::string(filled, '#') + std::string(kBarWidth - filled, '.') + "] ";
  }
  s += std::string(pct) + " " + megabytes(static_cast<double>(done)) + "/" + megabytes(static_cast<double>(total)) +
       " MB, " + megabytes(rate) + " MB/s, " + note + ", elapsed " + format_duration(elapsed_s) + " eta " +
       format_duration(eta);
  return s;
}

void ByteProgress::update(std::uint64_t done, std::uint64_t total, const std::string& note) {
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (!tty_) {
    const int decile = total ? static_cast<int>(10 * std::min(done, total) / total) : 10;
    if (decile == last_decile_) return;
    last_decile_ = decile;
    out_ << line(done, total, note, t) << '\n' << std::flush;
    return;
  }
  if (last_draw_s_ >= 0 && t - last_draw_s_ < kRedrawSeconds && done < total) return;
  last_draw_s_ = t;
  out_ << kClearLine << line(done, total, note, t) << std::flush;
  bar_shown_ = true;
}

void ByteProgress::finish() {
  if (bar_shown_) out_ << '\n' << std::flush;
  bar_shown_ = false;
}

}  // namespace ranktune

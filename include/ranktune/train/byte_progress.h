// defines: ByteProgress, the progress display of work measured in bytes (`ranktune prepare` reading its input):
// on a terminal a bar redrawn in place (percent, MB, MB/s, ETA, a caller's note such as the row count); otherwise
// one plain line at every further 10% so job logs stay short. Terminal detection and durations come from Progress.
#pragma once

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>

namespace ranktune {

class ByteProgress {
 public:
  ByteProgress(std::ostream& out, std::string label, bool tty);
  ~ByteProgress() { finish(); }  // an error while the bar is drawn must not print on the bar's line
  ByteProgress(const ByteProgress&) = delete;
  ByteProgress& operator=(const ByteProgress&) = delete;
  // done/total in bytes; note is appended ("1234 rows").
  void update(std::uint64_t done, std::uint64_t total, const std::string& note);
  void finish();  // ends a drawn bar with a newline

  std::string line(std::uint64_t done, std::uint64_t total, const std::string& note, double elapsed_s) const;

 private:
  std::ostream& out_;
  std::string label_;
  bool tty_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  double last_draw_s_ = -1;
  int last_decile_ = -1;
  bool bar_shown_ = false;
};

}  // namespace ranktune

// defines: Progress, what rank 0 shows while training: on a terminal a progress bar redrawn in place (step, loss, lr,
// tokens/s, ETA); otherwise (Slurm output file, pipe) one plain line every log_every steps with the full set (step,
// loss, lr, grad norm, tokens/s, MFU, GPU memory, eval loss). Also format_duration for ETAs.
//
//   Progress progress(std::cout, cfg.train.steps, cfg.train.log_every, start_step, Progress::stdout_is_tty());
//   progress.update(metrics);           // after every optimizer step
//   progress.note("eval loss 2.31");    // a message that must not be drawn over
//   progress.finish();
#pragma once

#include <ostream>
#include <string>

#include "ranktune/train/metrics.h"

namespace ranktune {

// "0:42", "1:02:05", "3d 04:00:00"; "?" for a negative or non-finite value.
std::string format_duration(double seconds);

class Progress {
 public:
  // start_step: the step a resumed run starts from (ETA counts only the steps this process ran).
  Progress(std::ostream& out, long total_steps, long log_every, long start_step, bool tty);
  // stdout is a terminal and TERM is not "dumb".
  static bool stdout_is_tty();

  void update(const StepMetrics& m);
  void note(const std::string& line);
  void finish();

  // Seconds left, from the average step time since start_step; NaN before the first step.
  double eta_seconds(const StepMetrics& m) const;
  std::string bar_line(const StepMetrics& m) const;    // the terminal form, without control characters
  std::string plain_line(const StepMetrics& m) const;  // the log form

 private:
  std::ostream& out_;
  long total_, log_every_, start_;
  bool tty_;
  bool bar_shown_ = false;
  double last_draw_s_ = -1;
  std::string last_bar_;
};

}  // namespace ranktune

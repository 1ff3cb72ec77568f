// Progress output: plain lines only every log_every steps (plus the first, the last and eval steps) off a terminal,
// an in-place bar on one, ETA arithmetic and duration formatting.
#include <gtest/gtest.h>

#include <sstream>

#include "ranktune/train/progress.h"

namespace ranktune {
namespace {

StepMetrics at_step(long step, double elapsed) {
  StepMetrics m;
  m.step = step;
  m.loss = 3.0 - 0.01 * static_cast<double>(step);
  m.lr = 1e-3;
  m.grad_norm = 0.75;
  m.tokens_per_s = 2048;
  m.mfu = 0.25;
  m.elapsed_s = elapsed;
  return m;
}

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (std::size_t pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + 1)) ++n;
  return n;
}

TEST(Progress, FormatDuration) {
  EXPECT_EQ(format_duration(0), "0:00");
  EXPECT_EQ(format_duration(42.4), "0:42");
  EXPECT_EQ(format_duration(3725), "1:02:05");
  EXPECT_EQ(format_duration(3 * 86400 + 4 * 3600), "3d 04:00:00");
  EXPECT_EQ(format_duration(-1), "?");
  EXPECT_EQ(format_duration(NAN), "?");
}

TEST(Progress, PlainLinesEveryLogEvery) {
  std::ostringstream out;
  Progress p(out, 25, 10, 0, false);
  for (long s = 1; s <= 25; ++s) {
    StepMetrics m = at_step(s, 0.5 * static_cast<double>(s));
    if (s == 15) m.eval_loss = 2.5;
    p.update(m);
  }
  p.finish();
  const std::string text = out.str();
  // Steps 1 (alive), 10, 15 (eval), 20, 25 (last).
  EXPECT_EQ(count(text, "\n"), 5) << text;
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_NE(text.find("step 10/25 loss 2.9000 lr 1.000e-03 grad_norm 0.750 tok/s 2.0k mfu 25.0% elapsed 0:05 eta 0:08"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("eval_loss 2.5000"), std::string::npos);
}

TEST(Progress, EtaCountsOnlyThisProcessesSteps) {
  std::ostringstream out;
  Progress p(out, 1000, 10, 900, false);  // resumed at step 900
  EXPECT_DOUBLE_EQ(p.eta_seconds(at_step(950, 100)), 100.0);
  EXPECT_TRUE(std::isnan(p.eta_seconds(at_step(900, 0))));
}

TEST(Progress, TerminalBarRedrawsInPlace) {
  std::ostringstream out;
  Progress p(out, 40, 10, 0, true);
  for (long s = 1; s <= 40; ++s) p.update(at_step(s, 0.03125 * static_cast<double>(s)));
  p.note("eval loss 2.2");
  p.finish();
  const std::string text = out.str();
  // Redrawn at most every 0.1 s of training time (steps 1, 5, 9, ..., 37), always on the last one, and once more by
  // the note; one newline from the note and one from finish.
  EXPECT_EQ(count(text, "\r\033[2K"), 10 + 1 + 1) << text;
  EXPECT_EQ(count(text, "\n"), 2);
  EXPECT_NE(text.find("step 40/40 [########################] 100% loss 2.6000 lr 1.00e-03 2.0k tok/s ETA 0:00"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\r\033[2Keval loss 2.2\nstep 40/40"), std::string::npos);
  EXPECT_EQ(p.bar_line(at_step(10, 1)).substr(0, 42), "step 10/40 [######..................]  25%");
}

}  // namespace
}  // namespace ranktune

#include "ranktune/train/pipeline_schedule.h"

#include <stdexcept>

namespace ranktune {

std::vector<PipeAction> gpipe_schedule(int stages, int chunks) {
  if (stages < 1 || chunks < 1) throw std::invalid_argument("gpipe_schedule needs stages >= 1 and chunks >= 1");
  std::vector<PipeAction> out;
  const int ticks = stages + chunks - 1;
  // Forward: at tick t stage s takes chunk t - s. The later stage is issued first within a tick: its input was
  // produced a tick earlier, so its device starts while the host still issues the earlier stages.
  for (int t = 0; t < ticks; ++t)
    for (int s = stages - 1; s >= 0; --s)
      if (int c = t - s; c >= 0 && c < chunks) out.push_back({PipeAction::forward, s, c, t});
  // Backward: the mirror image; at tick t stage s takes chunk t - (stages - 1 - s).
  for (int t = 0; t < ticks; ++t)
    for (int s = 0; s < stages; ++s)
      if (int c = t - (stages - 1 - s); c >= 0 && c < chunks) out.push_back({PipeAction::backward, s, c, ticks + t});
  return out;
}

std::string schedule_string(const std::vector<PipeAction>& actions) {
  std::string out;
  int tick = -1;
  for (const auto& a : actions) {
    if (tick >= 0) out += a.tick != tick ? "|" : " ";
    tick = a.tick;
    out += (a.kind == PipeAction::forward ? "F" : "B") + std::to_string(a.stage) + "." + std::to_string(a.chunk);
  }
  return out;
}

}  // namespace ranktune

#include "ranktune/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "ranktune/core/config.h"
#include "ranktune/core/error.h"

namespace ranktune {

LrDecay lr_decay_parse(const std::string& name) {
  if (name == "cosine") return LrDecay::cosine;
  if (name == "linear") return LrDecay::linear;
  if (name == "constant") return LrDecay::constant;
  throw ConfigError("train.schedule = '" + name + "' is not a schedule", "use cosine, linear or constant");
}

const char* lr_decay_name(LrDecay d) {
  switch (d) {
    case LrDecay::cosine: return "cosine";
    case LrDecay::linear: return "linear";
    case LrDecay::constant: return "constant";
  }
  return "?";
}

LrSchedule lr_schedule_from_config(const TrainConfig& t) {
  LrSchedule s;
  s.lr = t.lr;
  s.warmup_steps = t.warmup_steps;
  s.total_steps = t.steps;
  s.decay = lr_decay_parse(t.schedule);
  s.min_lr_ratio = t.min_lr_ratio;
  return s;
}

double lr_factor(const LrSchedule& s, long step) {
  if (step < s.warmup_steps) return static_cast<double>(step) / static_cast<double>(std::max(1L, s.warmup_steps));
  if (s.decay == LrDecay::constant) return 1.0;
  // Progress through the decay phase; clamped so that steps past the end stay at the floor (HF's cosine would rise
  // again there, its linear would stay at 0: neither is what a resumed run past `steps` should see).
  const double span = static_cast<double>(std::max(1L, s.total_steps - s.warmup_steps));
  const double progress = std::clamp(static_cast<double>(step - s.warmup_steps) / span, 0.0, 1.0);
  // Linear counts down from the end as HF does, which differs from 1 - progress only when warmup_steps == steps.
  const double remaining = std::clamp(static_cast<double>(s.total_steps - step) / span, 0.0, 1.0);
  const double shape = s.decay == LrDecay::cosine ? 0.5 * (1.0 + std::cos(std::numbers::pi * progress)) : remaining;
  return s.min_lr_ratio + (1.0 - s.min_lr_ratio) * shape;
}

}  // namespace ranktune

// defines: LrSchedule, the learning rate of every optimizer step: linear warm-up, then cosine, linear or constant
// decay to min_lr_ratio * lr. Pure (no torch) so it is tested anywhere and reproduced exactly on resume.
// Convention (docs/training.md): Hugging Face transformers' get_cosine_with_min_lr_schedule_with_warmup /
// get_linear_schedule_with_warmup / get_constant_schedule_with_warmup, where `step` counts the optimizer steps already
// taken (0 for the first update), so warm-up starts at lr 0 and reaches the peak at step == warmup_steps.
#pragma once

#include <string>

namespace ranktune {

struct TrainConfig;

enum class LrDecay { cosine, linear, constant };

struct LrSchedule {
  double lr = 1e-3;       // peak learning rate
  long warmup_steps = 0;  // linear ramp 0 -> lr over these steps
  long total_steps = 1;   // warm-up included; decay reaches its floor here
  LrDecay decay = LrDecay::cosine;
  double min_lr_ratio = 0.0;  // floor of the decay as a fraction of lr (constant ignores it)
};

// From [train] lr, warmup_steps, steps, schedule, min_lr_ratio. Throws ConfigError on an unknown schedule name.
LrSchedule lr_schedule_from_config(const TrainConfig& t);
LrDecay lr_decay_parse(const std::string& name);
const char* lr_decay_name(LrDecay d);

// Multiplier of the peak lr for optimizer step `step` (0-based); steps at or past total_steps stay at the floor.
double lr_factor(const LrSchedule& s, long step);
inline double lr_at(const LrSchedule& s, long step) { return s.lr * lr_factor(s, step); }

}  // namespace ranktune

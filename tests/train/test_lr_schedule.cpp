// LR schedule: closed-form values at chosen steps, and every step of Hugging Face transformers' schedulers
// (tests/reference/fixtures/lr_schedule.json, made by tests/reference/make_optimizer_fixtures.py).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>

#include "ranktune/core/config.h"
#include "ranktune/core/error.h"
#include "ranktune/train/lr_schedule.h"

namespace ranktune {
namespace {

LrSchedule make(LrDecay d, long warmup, long total, double ratio) { return LrSchedule{1.0, warmup, total, d, ratio}; }

TEST(LrSchedule, WarmupIsLinearFromZero) {
  const LrSchedule s = make(LrDecay::cosine, 10, 100, 0.1);
  EXPECT_DOUBLE_EQ(lr_factor(s, 0), 0.0);
  EXPECT_DOUBLE_EQ(lr_factor(s, 1), 0.1);
  EXPECT_DOUBLE_EQ(lr_factor(s, 5), 0.5);
  EXPECT_DOUBLE_EQ(lr_factor(s, 10), 1.0);
}

TEST(LrSchedule, CosineClosedForm) {
  const LrSchedule s = make(LrDecay::cosine, 10, 110, 0.1);
  // Halfway through the decay the cosine term is 0.5: 0.1 + 0.9 * 0.5.
  EXPECT_NEAR(lr_factor(s, 60), 0.55, 1e-15);
  EXPECT_NEAR(lr_factor(s, 35), 0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi * 0.25)), 1e-15);
  EXPECT_NEAR(lr_factor(s, 110), 0.1, 1e-15);
  EXPECT_NEAR(lr_factor(s, 500), 0.1, 1e-15);  // past the end: the floor, not a second cosine period
}

TEST(LrSchedule, LinearAndConstant) {
  const LrSchedule lin = make(LrDecay::linear, 0, 100, 0.2);
  EXPECT_DOUBLE_EQ(lr_factor(lin, 0), 1.0);
  EXPECT_NEAR(lr_factor(lin, 25), 0.2 + 0.8 * 0.75, 1e-15);
  EXPECT_NEAR(lr_factor(lin, 100), 0.2, 1e-15);
  const LrSchedule c = make(LrDecay::constant, 4, 100, 0.5);
  EXPECT_DOUBLE_EQ(lr_factor(c, 2), 0.5);
  EXPECT_DOUBLE_EQ(lr_factor(c, 4), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(c, 99), 1.0);
}

TEST(LrSchedule, MonotoneAfterWarmup) {
  for (LrDecay d : {LrDecay::cosine, LrDecay::linear}) {
    const LrSchedule s = make(d, 7, 91, 0.05);
    for (long i = 8; i <= 91; ++i) EXPECT_LE(lr_factor(s, i), lr_factor(s, i - 1)) << lr_decay_name(d) << " " << i;
  }
}

TEST(LrSchedule, FromConfig) {
  TrainConfig t;
  t.lr = 2e-4;
  t.warmup_steps = 3;
  t.steps = 13;
  t.schedule = "linear";
  t.min_lr_ratio = 0.0;
  const LrSchedule s = lr_schedule_from_config(t);
  EXPECT_EQ(s.decay, LrDecay::linear);
  EXPECT_NEAR(lr_at(s, 8), 2e-4 * 0.5, 1e-18);
  t.schedule = "cosin";
  EXPECT_THROW(lr_schedule_from_config(t), ConfigError);
}

TEST(LrSchedule, EqualsHuggingFaceSchedulers) {
  std::ifstream f(RANKTUNE_SOURCE_DIR "/tests/reference/fixtures/lr_schedule.json");
  ASSERT_TRUE(f) << "fixture missing: run tests/reference/make_optimizer_fixtures.py";
  const auto fixture = nlohmann::json::parse(f);
  int compared = 0;
  for (const auto& c : fixture["cases"]) {
    const LrSchedule s{c["lr"].get<double>(), c["warmup_steps"].get<long>(), c["total_steps"].get<long>(),
                       lr_decay_parse(c["decay"].get<std::string>()), c["min_lr_ratio"].get<double>()};
    const auto& lrs = c["lrs"];
    for (std::size_t step = 0; step < lrs.size(); ++step, ++compared)
      EXPECT_NEAR(lr_at(s, static_cast<long>(step)), lrs[step].get<double>(), 1e-12 * s.lr)
          << c["decay"] << " warmup " << s.warmup_steps << " total " << s.total_steps << " ratio " << s.min_lr_ratio
          << " step " << step;
  }
  EXPECT_GT(compared, 100);
}

}  // namespace
}  // namespace ranktune

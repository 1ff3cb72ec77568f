// AdamW and gradient clipping against torch.optim.AdamW + torch.nn.utils.clip_grad_norm_
// (tests/reference/fixtures/adamw.json, made by tests/reference/make_optimizer_fixtures.py): fused and foreach
// paths and the one-pass kernel for low-precision parameters, fp32 master weights for bf16 parameters, state
// save/load, weight-decay groups.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "ranktune/core/error.h"
#include "ranktune/train/grads.h"
#include "ranktune/train/optimizer.h"

namespace ranktune {
namespace {

using nlohmann::json;

const json& fixture() {
  static const json f = [] {
    std::ifstream in(RANKTUNE_SOURCE_DIR "/tests/reference/fixtures/adamw.json");
    if (!in) throw std::runtime_error("fixture missing: run tests/reference/make_optimizer_fixtures.py");
    return json::parse(in);
  }();
  return f;
}

at::Tensor from_json(const json& j, at::ScalarType dtype = at::kFloat) {
  const auto shape = j["shape"].get<std::vector<int64_t>>();
  const auto data = j["data"].get<std::vector<double>>();
  return at::tensor(data, at::kDouble).reshape(shape).to(dtype);
}

double max_rel_diff(const at::Tensor& got, const at::Tensor& want) {
  const double scale = std::max(want.abs().max().item<double>(), 1e-30);
  return (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>() / scale;
}

// The fixture's parameters in its order, as leaf tensors requiring gradients.
NamedTensors make_params(at::ScalarType dtype) {
  NamedTensors p;
  for (const auto& [name, t] : fixture()["init"].items()) p.insert(name, from_json(t, dtype).requires_grad_(true));
  return p;
}

void set_grads(const NamedTensors& params, std::size_t step) {
  std::set<std::string> skipped;
  for (const auto& s : fixture()["skip"])
    if (s[0].get<std::size_t>() == step) skipped.insert(s[1].get<std::string>());
  for (const auto& item : params) {
    at::Tensor p = item.value();
    if (skipped.count(item.key())) p.mutable_grad() = at::Tensor();
    else p.mutable_grad() = from_json(fixture()["grads"][step][item.key()], p.scalar_type());
  }
}

// The three ways a step runs: torch's foreach ops, at::_fused_adamw_, and (bf16 parameters) the one-pass kernel of
// kernels/adamw.h with at::_fused_adamw_ for the rest.
enum class Variant { foreach, fused, one_pass };

AdamWOptions fixture_options(Variant v) {
  const json& hp = fixture()["hyper"];
  AdamWOptions o;
  o.beta1 = hp["beta1"].get<double>();
  o.beta2 = hp["beta2"].get<double>();
  o.eps = hp["eps"].get<double>();
  o.weight_decay = hp["weight_decay"].get<double>();
  o.impl = v == Variant::foreach ? AdamWImpl::foreach : AdamWImpl::fused;
  o.one_pass = v == Variant::one_pass;
  return o;
}

class AdamWReference : public testing::TestWithParam<Variant> {};

TEST_P(AdamWReference, MatchesTorchWithClipping) {
  NamedTensors params = make_params(at::kFloat);
  AdamW opt(params, fixture_options(GetParam()));
  const json& run = fixture()["clipped"];
  const auto lrs = fixture()["lrs"].get<std::vector<double>>();
  for (std::size_t i = 0; i < lrs.size(); ++i) {
    set_grads(params, i);
    const double norm = clip_grad_norm(params, run["max_norm"].get<double>());
    EXPECT_NEAR(norm, run["steps"][i]["norm"].get<double>(), 1e-6 * norm) << "step " << i;
    opt.step(lrs[i]);
    for (const auto& item : params)
      EXPECT_LE(max_rel_diff(item.value(), from_json(run["steps"][i]["params"][item.key()])), 1e-6)
          << item.key() << " after step " << i;
  }
  const NamedTensors state = opt.state();
  for (const auto& [name, s] : run["state"].items()) {
    EXPECT_LE(max_rel_diff(state[name + ".exp_avg"], from_json(s["exp_avg"])), 1e-6) << name;
    EXPECT_LE(max_rel_diff(state[name + ".exp_avg_sq"], from_json(s["exp_avg_sq"])), 1e-6) << name;
    EXPECT_EQ(state[name + ".step"].item<double>(), s["step"].get<double>()) << name;
  }
}

// bf16 parameters and gradients (bf16-exact in the fixture): the fp32 master follows torch's fp32 run, the parameter is
// the master rounded to bf16.
TEST_P(AdamWReference, MasterWeightsForBf16) {
  NamedTensors params = make_params(at::kBFloat16);
  AdamW opt(params, fixture_options(GetParam()));
  const json& run = fixture()["unclipped"];
  const auto lrs = fixture()["lrs"].get<std::vector<double>>();
  for (std::size_t i = 0; i < lrs.size(); ++i) {
    set_grads(params, i);
    opt.step(lrs[i]);
  }
  const NamedTensors state = opt.state();
  for (const auto& item : params) {
    const at::Tensor& master = state[item.key() + ".master"];
    EXPECT_EQ(master.scalar_type(), at::kFloat);
    EXPECT_LE(max_rel_diff(master, from_json(run["steps"].back()["params"][item.key()])), 1e-6) << item.key();
    EXPECT_TRUE(at::equal(item.value(), master.to(at::kBFloat16))) << item.key();
    EXPECT_EQ(item.value().scalar_type(), at::kBFloat16);
  }
}

// The step in chunks (every low-precision tensor alone: max_cast_bytes = 1) is the same computation as in one call.
TEST_P(AdamWReference, ChunkedCastStepsEqualOneCall) {
  NamedTensors whole = make_params(at::kBFloat16), chunked = make_params(at::kBFloat16);
  AdamWOptions one_call = fixture_options(GetParam()), per_tensor = one_call;
  one_call.max_cast_bytes = std::int64_t{1} << 40;
  per_tensor.max_cast_bytes = 1;
  AdamW a(whole, one_call), b(chunked, per_tensor);
  const auto lrs = fixture()["lrs"].get<std::vector<double>>();
  for (std::size_t i = 0; i < lrs.size(); ++i) {
    set_grads(whole, i);
    set_grads(chunked, i);
    a.step(lrs[i]);
    b.step(lrs[i]);
  }
  ASSERT_GT(whole.size(), 1u);
  for (const auto& item : whole) EXPECT_TRUE(at::equal(item.value(), chunked[item.key()])) << item.key();
  const NamedTensors sa = a.state(), sb = b.state();
  for (const auto& item : sa) EXPECT_TRUE(at::equal(item.value(), sb[item.key()])) << item.key();
}

// Clipping's coefficient handed to step() (the trainer's way: the one-pass kernel folds it into its read of the
// gradients, the other paths multiply first) equals clip_grad_norm followed by step() bit for bit, clipped or not.
TEST_P(AdamWReference, GradScaleEqualsClipThenStep) {
  for (auto dtype : {at::kFloat, at::kBFloat16})
    for (double max_norm : {0.05, 1e6}) {  // the fixture's gradients clipped, and left as they are (coefficient 1)
      SCOPED_TRACE(::testing::Message() << dtype << " max_norm " << max_norm);
      NamedTensors clipped = make_params(dtype), scaled = make_params(dtype);
      AdamW a(clipped, fixture_options(GetParam())), b(scaled, fixture_options(GetParam()));
      const auto lrs = fixture()["lrs"].get<std::vector<double>>();
      for (std::size_t i = 0; i < lrs.size(); ++i) {
        set_grads(clipped, i);
        set_grads(scaled, i);
        const double norm = clip_grad_norm(clipped, max_norm);
        a.step(lrs[i]);
        const at::Tensor norm_t = grad_norm_tensor(scaled);
        EXPECT_EQ(norm_t.item<double>(), norm);
        b.step(lrs[i], clip_coefficient(norm_t, max_norm));
      }
      for (const auto& item : clipped) EXPECT_TRUE(at::equal(item.value(), scaled[item.key()])) << item.key();
      const NamedTensors sa = a.state(), sb = b.state();
      for (const auto& item : sa) EXPECT_TRUE(at::equal(item.value(), sb[item.key()])) << item.key();
    }
}

INSTANTIATE_TEST_SUITE_P(Impl, AdamWReference, testing::Values(Variant::foreach, Variant::fused, Variant::one_pass),
                         [](const auto& info) {
                           return info.param == Variant::fused      ? "fused"
                                  : info.param == Variant::one_pass ? "one_pass"
                                                                    : "foreach";
                         });

// Three steps under `saver`, its state loaded into a second optimizer (`resumer`) over copies of the parameters, and
// the remaining steps of the fixture run by both; both optimizers' parameters and states at the end.
struct Resumed {
  NamedTensors a, b, state_a, state_b;
  std::string describe_a;
};
Resumed resume_after_three(at::ScalarType dtype, Variant saver, Variant resumer) {
  const auto lrs = fixture()["lrs"].get<std::vector<double>>();
  Resumed r;
  r.a = make_params(dtype);
  AdamW opt_a(r.a, fixture_options(saver));
  for (std::size_t i = 0; i < 3; ++i) set_grads(r.a, i), opt_a.step(lrs[i]);
  for (const auto& item : r.a) r.b.insert(item.key(), item.value().detach().clone().requires_grad_(true));
  AdamW opt_b(r.b, fixture_options(resumer));
  NamedTensors saved;
  for (const auto& item : opt_a.state()) saved.insert(item.key(), item.value().clone());
  opt_b.load_state(saved);
  for (std::size_t i = 3; i < lrs.size(); ++i) {
    set_grads(r.a, i), opt_a.step(lrs[i]);
    set_grads(r.b, i), opt_b.step(lrs[i]);
  }
  r.state_a = opt_a.state();
  r.state_b = opt_b.state();
  r.describe_a = opt_a.describe();
  return r;
}

// Given the first optimizer's state, the second one's remaining steps agree bit for bit.
TEST(AdamW, StateRoundTripContinuesIdentically) {
  const Resumed r = resume_after_three(at::kFloat, Variant::foreach, Variant::foreach);
  for (const auto& item : r.a) EXPECT_TRUE(at::equal(item.value(), r.b[item.key()])) << item.key();
}

// A checkpoint's optimizer state does not depend on train.adamw_one_pass: a bf16 run saved by the one-pass step
// resumes under the reference step (and continues within fp32 rounding of a one-pass continuation).
TEST(AdamW, OnePassStateResumesUnderTheReference) {
  const Resumed r = resume_after_three(at::kBFloat16, Variant::one_pass, Variant::fused);
  for (const auto& item : r.state_a) EXPECT_LE(max_rel_diff(item.value(), r.state_b[item.key()]), 1e-6) << item.key();
  EXPECT_NE(r.describe_a.find("stepped in one pass"), std::string::npos) << r.describe_a;
}

TEST(AdamW, LoadStateRefusesMismatchNamingTheTensor) {
  NamedTensors p = make_params(at::kFloat);
  AdamW opt(p, fixture_options(Variant::foreach));
  NamedTensors missing;
  for (const auto& item : opt.state())
    if (item.key() != "embed.exp_avg_sq") missing.insert(item.key(), item.value());
  try {
    opt.load_state(missing);
    FAIL() << "no error";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("embed.exp_avg_sq"), std::string::npos) << e.what();
  }
  NamedTensors wrong_shape;
  for (const auto& item : opt.state())
    wrong_shape.insert(item.key(), item.key() == "layers.0.w.exp_avg" ? at::zeros({3, 4}) : item.value());
  EXPECT_THROW(opt.load_state(wrong_shape), CheckpointError);
  NamedTensors extra = opt.state();
  extra.insert("lora.a.exp_avg", at::zeros({2}));
  EXPECT_THROW(opt.load_state(extra), CheckpointError);
}

TEST(AdamW, GroupsFrozenParamsAndDescription) {
  NamedTensors p;
  p.insert("w", at::ones({4, 4}).requires_grad_(true));
  p.insert("norm", at::ones({4}).requires_grad_(true));
  p.insert("frozen", at::ones({4, 4}));
  EXPECT_TRUE(adamw_decays(p["w"]));
  EXPECT_FALSE(adamw_decays(p["norm"]));
  AdamWOptions o;
  o.weight_decay = 0.5;
  AdamW opt(p, o);
  EXPECT_FALSE(opt.state().contains("frozen.exp_avg"));
  // Zero gradients: only decoupled decay moves the weights, and only those in the decay group.
  for (const char* n : {"w", "norm"}) p[n].mutable_grad() = at::zeros_like(p[n]);
  opt.step(0.1);
  EXPECT_TRUE(at::allclose(p["w"], at::full({4, 4}, 1 - 0.1 * 0.5)));
  EXPECT_TRUE(at::equal(p["norm"], at::ones({4})));
  EXPECT_NE(opt.describe().find("weight decay 0.5 on 1 tensors (16 params), none on 1 tensors (4 params)"),
            std::string::npos)
      << opt.describe();
  NamedTensors none;
  none.insert("frozen", at::ones({2}));
  EXPECT_THROW(AdamW(none, o), UsageError);
}

TEST(Grads, NormClipAndZeroKeepAliasing) {
  NamedTensors p;
  p.insert("a", at::zeros({2}).requires_grad_(true));
  p.insert("b", at::zeros({2}).requires_grad_(true));
  p.insert("c", at::zeros({1}).requires_grad_(true));  // no gradient: counts as zero
  p["a"].mutable_grad() = at::tensor({3.0f, 0.0f});
  p["b"].mutable_grad() = at::tensor({0.0f, 4.0f});
  EXPECT_DOUBLE_EQ(grad_norm(p), 5.0);
  const at::Tensor alias = p["a"].grad();
  EXPECT_NEAR(clip_grad_norm(p, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(grad_norm(p), 1.0, 1e-6);
  EXPECT_NEAR(clip_grad_norm(p, 10.0), 1.0, 1e-6);  // below the threshold: unchanged
  EXPECT_NEAR(grad_norm(p), 1.0, 1e-6);
  zero_grads(p);
  EXPECT_TRUE(p["a"].grad().is_same(alias));
  EXPECT_EQ(p["a"].grad().abs().sum().item<float>(), 0.0f);
  EXPECT_FALSE(p["c"].grad().defined());
}

// release_grads drops every gradient (the next backward then takes its gradients as they are, not added into zeros).
TEST(Grads, ReleaseDropsTheGradients) {
  NamedTensors p;
  p.insert("a", at::zeros({2}).requires_grad_(true));
  p.insert("b", at::zeros({2}).requires_grad_(true));
  (p["a"] * 2 + p["b"]).sum().backward();
  ASSERT_TRUE(p["a"].grad().defined());
  release_grads(p);
  EXPECT_FALSE(p["a"].grad().defined());
  EXPECT_FALSE(p["b"].grad().defined());
  (p["a"] * 3).sum().backward();
  EXPECT_TRUE(at::equal(p["a"].grad(), at::full({2}, 3.0f)));
  EXPECT_NEAR(grad_norm(p), std::sqrt(18.0), 1e-6);
}

}  // namespace
}  // namespace ranktune

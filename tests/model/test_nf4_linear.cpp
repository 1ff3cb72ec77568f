// nf4_linear, the frozen NF4 base of QLoRA: forward and input gradient equal bitsandbytes' Linear4bit on CPU (bf16,
// tests/reference/make_nf4_fixtures.py) bit for bit, and equal a plain linear over the dequantized weight in fp32;
// the base gets no gradient, the bias does.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include "model/model_test_util.h"
#include "ranktune/core/error.h"
#include "ranktune/model/nf4_linear.h"
#include "ranktune/model/safetensors.h"

namespace ranktune {
namespace {

TEST(Nf4Linear, MatchesBitsandbytesLinear4bit) {
  const SafetensorsFile f(test::fixture("nf4/cases.safetensors"));
  const Nf4Weight w = nf4_quantize(f.tensor("linear.weight"));
  const at::Tensor x = f.tensor("linear.x").clone().set_requires_grad(true);
  const at::Tensor bias = f.tensor("linear.bias").clone().set_requires_grad(true);
  const at::Tensor y = nf4_linear(x, w, bias);
  EXPECT_TRUE(at::equal(y, f.tensor("linear.y"))) << test::rel_error(y, f.tensor("linear.y"));
  y.backward(f.tensor("linear.dy"));
  EXPECT_TRUE(at::equal(x.grad(), f.tensor("linear.dx"))) << test::rel_error(x.grad(), f.tensor("linear.dx"));
  EXPECT_TRUE(at::equal(bias.grad(), f.tensor("linear.dy").sum(at::IntArrayRef{0, 1})));
}

TEST(Nf4Linear, EqualsLinearOverTheDequantizedWeight) {
  at::manual_seed(4);
  const Nf4Weight w = nf4_quantize(at::randn({24, 200}));  // 200: blocks of 64 span rows
  const at::Tensor dense = nf4_dequantize(w);
  const at::Tensor x0 = at::randn({3, 7, 200}), dy = at::randn({3, 7, 24});
  const at::Tensor x1 = x0.clone().set_requires_grad(true), x2 = x0.clone().set_requires_grad(true);
  const at::Tensor y1 = nf4_linear(x1, w);
  const at::Tensor y2 = at::linear(x2, dense);
  EXPECT_TRUE(at::equal(y1, y2));
  y1.backward(dy);
  y2.backward(dy);
  EXPECT_TRUE(at::equal(x1.grad(), x2.grad()));
  for (const at::Tensor& t : {w.packed, w.absmax, w.nested_absmax}) {
    EXPECT_FALSE(t.requires_grad());
    EXPECT_FALSE(t.grad().defined());
  }
}

TEST(Nf4Linear, NoGradientWantedNoneComputed) {
  const Nf4Weight w = nf4_quantize(at::randn({8, 64}));
  const at::Tensor y = nf4_linear(at::randn({2, 64}), w);
  EXPECT_FALSE(y.requires_grad());
}

TEST(Nf4Linear, RefusesMismatchedInput) {
  const Nf4Weight w = nf4_quantize(at::randn({8, 64}));
  EXPECT_THROW(nf4_linear(at::randn({2, 63}), w), LibraryError);
  const Nf4Weight v = nf4_quantize(at::randn({512}));
  EXPECT_THROW(nf4_linear(at::randn({2, 512}), v), LibraryError);
}

}  // namespace
}  // namespace ranktune

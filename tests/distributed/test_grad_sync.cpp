// DDP gradient synchronisation on CPU ranks (MPI communicator) with a small real torch::nn model: N ranks with micro
// batch b (and gradient accumulation) end with the same parameters as one process on the whole global batch, and
// bit-identical across ranks; unused parameters neither hang nor differ from one-process semantics; buckets launch
// during backward, in order; mismatched parameter lists are refused naming the parameter.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <cmath>

#include "ranktune/core/error.h"
#include "ranktune/distributed/grad_sync.h"
#include "ranktune/distributed/mpi_communicator.h"
#include "ranktune/train/grads.h"
#include "ranktune/train/optimizer.h"

namespace ranktune {
namespace {

struct NetImpl : torch::nn::Module {
  torch::nn::Linear l1{nullptr}, l2{nullptr}, l3{nullptr}, spare{nullptr};
  at::Tensor scale, frozen;
  explicit NetImpl(std::uint64_t seed) {
    at::manual_seed(seed);
    l1 = register_module("l1", torch::nn::Linear(6, 16));
    l2 = register_module("l2", torch::nn::Linear(16, 16));
    scale = register_parameter("scale", at::rand({16}) + 0.5);
    l3 = register_module("l3", torch::nn::Linear(16, 3));
    spare = register_module("spare", torch::nn::Linear(16, 3));
    frozen = register_parameter("frozen", at::randn({4, 4}), /*requires_grad=*/false);
  }
  // `spare_rows` (rows x 1, 0/1) adds the spare head on those rows; undefined = the spare head is not used at all.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& spare_rows) {
    at::Tensor h = at::tanh(l2(at::tanh(l1(x)))) * scale;
    at::Tensor y = l3(h);
    if (spare_rows.defined()) y = y + spare(h) * spare_rows;
    return y;
  }
};
TORCH_MODULE(Net);

constexpr int kMicro = 2;  // b: samples per micro-batch per rank
constexpr int kSteps = 4;  // K

double max_rel_diff(const at::Tensor& got, const at::Tensor& want) {
  return (got - want).abs().max().item<double>() / std::max(want.abs().max().item<double>(), 1e-30);
}

AdamWOptions adamw() {
  AdamWOptions o;
  o.beta1 = 0.9;
  o.beta2 = 0.95;
  o.weight_decay = 0.1;
  return o;
}

class GradSyncTest : public testing::Test {
 protected:
  MpiEnv env{nullptr, nullptr};
  MpiCommunicator comm{env};
  int n() const { return env.size(); }
  int r() const { return env.rank(); }
};

struct Case {
  int accum;
  bool spare_on_rank0;  // false: the spare head is unused everywhere
};

class Equivalence : public GradSyncTest, public testing::WithParamInterface<Case> {};

TEST_P(Equivalence, NRanksEqualOneBigBatch) {
  const auto [accum, spare_on_rank0] = GetParam();
  const int global = n() * kMicro * accum;
  at::manual_seed(7);
  const at::Tensor X = at::randn({kSteps * global, 6});
  const at::Tensor Y = at::randn({kSteps * global, 3});
  // Rows of each step's global batch: micro-step m, rank q holds rows [m*n*b + q*b, +b).
  auto owner_is_rank0 = [&](long row) { return ((row % global) % (n() * kMicro)) / kMicro == 0; };

  // One process, the whole global batch per step, starting from rank 0's initial weights.
  Net ref(1000);
  AdamW ref_opt(ref->named_parameters(), adamw());
  std::vector<double> ref_norms;
  for (int k = 0; k < kSteps; ++k) {
    const at::Tensor x = X.narrow(0, k * global, global), y = Y.narrow(0, k * global, global);
    at::Tensor rows;
    if (spare_on_rank0) {
      rows = at::zeros({global, 1});
      for (long i = 0; i < global; ++i) rows[i] = owner_is_rank0(k * global + i) ? 1.0 : 0.0;
    }
    ((ref->forward(x, rows) - y).pow(2).mean()).backward();
    ref_norms.push_back(clip_grad_norm(ref->named_parameters(), 1.0));
    ref_opt.step(1e-2);
    zero_grads(ref->named_parameters());
  }

  // DDP: every rank starts from different weights; GradSync broadcasts rank 0's.
  Net net(1000 + r());
  GradSyncOptions so;
  so.bucket_mb = 300.0 / (1024 * 1024);  // 75 floats: 6 buckets, l2.weight alone in one
  so.trace = true;
  GradSync sync(comm, net->named_parameters(), so);
  ASSERT_EQ(sync.num_buckets(), 6);
  EXPECT_EQ(sync.bucket_parameters(0), (std::vector<std::string>{"spare.bias", "spare.weight", "l3.bias"}));
  EXPECT_EQ(sync.bucket_parameters(2),
            std::vector<std::string>{
                "l2.weight"});  // own parameters come first in named_parameters(), so "scale" is last
  AdamW opt(net->named_parameters(), adamw());
  for (int k = 0; k < kSteps; ++k) {
    for (int m = 0; m < accum; ++m) {
      const long first = k * global + m * n() * kMicro + r() * kMicro;
      const at::Tensor x = X.narrow(0, first, kMicro), y = Y.narrow(0, first, kMicro);
      const at::Tensor rows = spare_on_rank0 && r() == 0 ? at::ones({kMicro, 1}) : at::Tensor();
      sync.prepare(m + 1 == accum);
      ((net->forward(x, rows) - y).pow(2).mean() / accum).backward();
    }
    sync.finish();
    const double norm = clip_grad_norm(net->named_parameters(), 1.0);
    EXPECT_NEAR(norm, ref_norms[k], 1e-5 * ref_norms[k]) << "step " << k;
    opt.step(1e-2);
    sync.zero_grad();
  }

  for (const auto& item : net->named_parameters()) {
    const at::Tensor want = ref->named_parameters()[item.key()];
    EXPECT_LE(max_rel_diff(item.value(), want), 1e-6) << item.key();
    // Bit-identical on every rank.
    at::Tensor all = at::empty({n(), item.value().numel()});
    comm.all_gather(item.value().detach().reshape(-1).contiguous(), all);
    for (int q = 1; q < n(); ++q) EXPECT_TRUE(at::equal(all[q], all[0])) << item.key() << " rank " << q;
  }
  EXPECT_FALSE(net->named_parameters()["frozen"].grad().defined());

  // The spare head is reported on the ranks that never used it, and got no update where nobody used it.
  const auto unused = sync.unused_parameters();
  const bool spare_unused_here = !(spare_on_rank0 && r() == 0);
  EXPECT_EQ(unused.size(), spare_unused_here ? 2u : 0u);
  if (!spare_on_rank0) EXPECT_TRUE(at::equal(net->spare->weight, Net(1000)->spare->weight));

  // Overlap evidence: every step launched every bucket once, in order. Where this rank used the spare head every
  // bucket went out from inside backward; where it did not, bucket 0 (holding the spare head) completes only in
  // finish() and, launches being in order, holds back all later ones.
  ASSERT_EQ(sync.trace().size(), static_cast<std::size_t>(kSteps * sync.num_buckets()));
  for (int k = 0; k < kSteps; ++k) {
    int in_backward = 0;
    for (int b = 0; b < sync.num_buckets(); ++b) {
      const BucketLaunch& l = sync.trace()[k * sync.num_buckets() + b];
      EXPECT_EQ(l.step, k);
      EXPECT_EQ(l.bucket, b);
      if (l.in_backward) {
        ++in_backward;
        EXPECT_LE(l.launch_ms, l.backward_end_ms);
      }
    }
    EXPECT_EQ(in_backward, spare_unused_here ? 0 : sync.num_buckets()) << sync.format_trace();
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, Equivalence,
                         testing::Values(Case{1, false}, Case{3, false}, Case{1, true}, Case{3, true}),
                         [](const auto& info) {
                           return "accum" + std::to_string(info.param.accum) +
                                  (info.param.spare_on_rank0 ? "_spare_on_rank0" : "_spare_unused");
                         });

TEST_F(GradSyncTest, BroadcastsFrozenParametersToo) {
  Net net(50 + r());
  GradSync sync(comm, net->named_parameters());
  EXPECT_TRUE(at::equal(net->frozen, Net(50)->frozen));
  EXPECT_TRUE(at::equal(net->l1->weight, Net(50)->l1->weight));
  EXPECT_EQ(sync.num_buckets(), 1);  // 25 MiB holds this model
}

TEST_F(GradSyncTest, FinishWithoutPrepareIsAnError) {
  Net net(3);
  GradSync sync(comm, net->named_parameters());
  EXPECT_THROW(sync.finish(), UsageError);
}

TEST_F(GradSyncTest, MismatchedListsNameTheParameter) {
  if (n() < 2) GTEST_SKIP() << "needs two ranks";
  NamedTensors p;
  p.insert("a.weight", at::zeros({3, 4}).requires_grad_(true));
  if (r() == n() - 1) p.insert("c.weight", at::zeros({4, 2}).requires_grad_(true));
  else p.insert("b.weight", at::zeros({4, 2}).requires_grad_(true));
  try {
    GradSync sync(comm, p);
    FAIL() << "no error";
  } catch (const UsageError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("position 1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank 0 has 'b.weight' [4, 2]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank " + std::to_string(n() - 1) + " has 'c.weight' [4, 2]"), std::string::npos) << msg;
  }

  // A shape difference and a missing parameter are found the same way.
  NamedTensors q;
  q.insert("a.weight", at::zeros({3, r() == 1 ? 5 : 4}).requires_grad_(true));
  if (r() != 1) q.insert("b.weight", at::zeros({2}).requires_grad_(true));
  try {
    GradSync sync(comm, q);
    FAIL() << "no error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("position 0: rank 0 has 'a.weight' [3, 4] Float trainable, rank 1 has "
                                         "'a.weight' [3, 5] Float trainable"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace ranktune

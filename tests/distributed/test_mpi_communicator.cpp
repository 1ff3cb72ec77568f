// The MPI communicator's collectives on real CPU tensors at 1, 2 and 4 ranks.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "ranktune/core/error.h"
#include "ranktune/distributed/mpi_communicator.h"

namespace ranktune {
namespace {

class MpiCommTest : public testing::Test {
 protected:
  MpiEnv env{nullptr, nullptr};
  MpiCommunicator comm{env};
  int n() const { return env.size(); }
  int r() const { return env.rank(); }
};

// Rank r holds values base + r * step; the expected reductions follow from that.
TEST_F(MpiCommTest, AllReduceSumAvgMaxMinFloat) {
  const auto base = at::arange(1000, at::kFloat);
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min}) {
    at::Tensor t = base + r();
    comm.all_reduce(t, op);
    at::Tensor want;
    switch (op) {
      case ReduceOp::sum: want = base * n() + n() * (n() - 1) / 2.0; break;
      case ReduceOp::avg: want = base + (n() - 1) / 2.0; break;
      case ReduceOp::max: want = base + (n() - 1); break;
      case ReduceOp::min: want = base.clone(); break;
    }
    EXPECT_TRUE(at::allclose(t, want, 1e-6, 1e-6)) << "op " << static_cast<int>(op);
  }
}

TEST_F(MpiCommTest, AllReduceDoubleAndInt64AreExact) {
  at::Tensor d = at::full({3, 5}, 0.1 * (r() + 1), at::kDouble);
  comm.all_reduce(d, ReduceOp::sum);
  double want = 0;
  for (int i = 0; i < n(); ++i) want += 0.1 * (i + 1);
  EXPECT_TRUE(at::allclose(d, at::full({3, 5}, want, at::kDouble), 0, 1e-15));
  at::Tensor l = at::full({7}, int64_t{1} << 40, at::kLong) * (r() + 1);
  comm.all_reduce(l, ReduceOp::sum);
  EXPECT_EQ(l[0].item<int64_t>(), (int64_t{1} << 40) * n() * (n() + 1) / 2);
}

TEST_F(MpiCommTest, AllReduceBf16ReducesInFloat) {
  at::Tensor t = at::full({64}, 1.0 + r(), at::kBFloat16);
  comm.all_reduce(t, ReduceOp::avg);
  EXPECT_EQ(t.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::allclose(t.to(at::kFloat), at::full({64}, 1.0 + (n() - 1) / 2.0), 0, 1e-2));
}

TEST_F(MpiCommTest, BroadcastFromEveryRoot) {
  for (int root = 0; root < n(); ++root) {
    at::Tensor t = r() == root ? at::arange(17, at::kFloat) * (root + 1) : at::zeros({17}, at::kFloat);
    comm.broadcast(t, root);
    EXPECT_TRUE(at::equal(t, at::arange(17, at::kFloat) * (root + 1))) << "root " << root;
  }
}

TEST_F(MpiCommTest, AllGatherStacksRanks) {
  at::Tensor in = at::full({2, 3}, static_cast<double>(r()), at::kFloat);
  at::Tensor out = at::empty({n(), 2, 3}, at::kFloat);
  comm.all_gather(in, out);
  for (int i = 0; i < n(); ++i) EXPECT_TRUE(at::equal(out[i], at::full({2, 3}, static_cast<double>(i), at::kFloat)));
}

TEST_F(MpiCommTest, RejectsNonContiguousAndWrongOutput) {
  at::Tensor t = at::zeros({4, 4}).t();
  EXPECT_THROW(comm.all_reduce(t, ReduceOp::sum), CommError);
  at::Tensor in = at::zeros({3});
  at::Tensor bad = at::zeros({3 * n() + 1});
  EXPECT_THROW(comm.all_gather(in, bad), CommError);
  at::Tensor ints = at::zeros({3}, at::kInt);
  EXPECT_THROW(comm.all_reduce(ints, ReduceOp::avg), CommError);
}

TEST_F(MpiCommTest, BarrierAndSynchronize) {
  comm.barrier();
  comm.synchronize();
  SUCCEED();
}

}  // namespace
}  // namespace ranktune

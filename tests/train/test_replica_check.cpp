// replica_check at 1, 2 and 4 ranks: identical parameters give one digest (the CRC32C of all their bytes), and one
// flipped bit on some ranks is an error on every rank naming the first of them and the tensor; the same for the frozen
// NF4 base of QLoRA (each rank quantizes its own copy), compared through frozen_digest.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/io/crc32c.h"
#include "ranktune/model/quantize.h"
#include "ranktune/train/replica_check.h"
#include "support/tiny_model.h"

namespace ranktune {
namespace {

class ReplicaCheckTest : public testing::Test {
 protected:
  MpiEnv env{nullptr, nullptr};
  // The same values on every rank; bf16 too, since bf16 replicas are compared by their raw bits as well.
  NamedTensors params() const {
    NamedTensors p;
    p.insert("a", at::arange(12, at::kFloat).reshape({3, 4}) / 7);
    p.insert("b", at::linspace(-1, 1, 33, at::kFloat));
    p.insert("c", (at::arange(8, at::kFloat) / 3).to(at::kBFloat16));
    return p;
  }
};

TEST_F(ReplicaCheckTest, IdenticalReplicasGiveTheCrcOfAllBytes) {
  const NamedTensors p = params();
  const ReplicaDigest d = replica_check(env, p, 7);
  std::uint32_t want = 0;
  std::uint64_t bytes = 0;
  for (const auto& item : p) {
    const at::Tensor& t = item.value();
    want = crc32c(t.data_ptr(), t.nbytes(), want);
    bytes += t.nbytes();
  }
  EXPECT_EQ(d.crc32c, want);
  EXPECT_EQ(d.bytes, bytes);
  EXPECT_EQ(d.tensors, 3u);
  EXPECT_EQ(d.ranks, env.size());
  EXPECT_NE(replica_digest_describe(d).find("replicas identical on " + std::to_string(env.size()) +
                                            " ranks: crc32c 0x"),
            std::string::npos)
      << replica_digest_describe(d);
}

// The lowest bit of one float: a difference no tolerance-based comparison at 1e-6 would see.
TEST_F(ReplicaCheckTest, OneFlippedBitOnSomeRanksIsNamedOnEveryRank) {
  if (env.size() < 2) GTEST_SKIP() << "needs 2 ranks or more";
  const int first = std::max(1, env.size() - 2);  // 2 ranks: rank 1; 4 ranks: ranks 2 and 3 differ
  NamedTensors p = params();
  if (env.rank() >= first) {
    float* v = p["b"].data_ptr<float>() + 5;
    std::uint32_t bits;
    std::memcpy(&bits, v, sizeof bits);
    bits ^= 1u;
    std::memcpy(v, &bits, sizeof bits);
  }
  try {
    replica_check(env, p, 42);
    FAIL() << "no error";
  } catch (const AgreedError& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.failing_rank(), first);
    EXPECT_EQ(e.code(), ExitCode::internal);
    EXPECT_NE(what.find("replicas diverged at step 42: rank " + std::to_string(first) + "'s"), std::string::npos)
        << what;
    EXPECT_NE(what.find("first at 'b'"), std::string::npos) << what;
    EXPECT_NE(what.find(std::to_string(env.size() - first) + " of " + std::to_string(env.size() - 1) +
                        " other rank(s)"),
              std::string::npos)
        << what;
    EXPECT_NE(e.hint().find("hardware fault"), std::string::npos) << e.hint();
  }
}

// Every rank quantizes the same weights: one digest; one absmax byte changed on some ranks is named on every rank.
TEST_F(ReplicaCheckTest, FrozenNf4BaseIsComparedToo) {
  Llama q = llama_random_quantized(test::tiny_llama(), 5, {}, Quantize::nf4);
  std::vector<std::pair<std::string, at::Tensor>> base = llama_nf4_state(*q);
  ASSERT_EQ(base.size(), static_cast<std::size_t>(test::tiny_llama().num_layers * 7 * 6));
  const FrozenDigest frozen = frozen_digest(base);
  ASSERT_EQ(frozen.crcs.size(), base.size());
  std::uint64_t bytes = 0;
  for (const auto& [name, t] : base) bytes += t.nbytes();
  EXPECT_EQ(frozen.bytes, bytes);
  EXPECT_EQ(frozen.crcs[1].first, "model.layers.0.self_attn.q_proj.weight.absmax");
  const ReplicaDigest d = replica_check(env, params(), 3, frozen);
  EXPECT_EQ(d.tensors, 3u);
  EXPECT_EQ(d.frozen_tensors, base.size());
  EXPECT_NE(replica_digest_describe(d).find("; frozen 4-bit base: " + std::to_string(base.size()) + " tensors"),
            std::string::npos)
      << replica_digest_describe(d);
  // A 16-bit model has no frozen base to compare, and the line stays as it was.
  EXPECT_TRUE(llama_nf4_state(*llama_random(test::tiny_llama(), 5)).empty());
  EXPECT_EQ(replica_digest_describe(replica_check(env, params(), 3)).find("frozen"), std::string::npos);

  if (env.size() < 2) GTEST_SKIP() << "the divergence needs 2 ranks or more";
  const int first = std::max(1, env.size() - 2);
  if (env.rank() >= first) {
    at::Tensor absmax = base[1].second.clone();
    absmax.data_ptr<std::uint8_t>()[0] ^= 1u;
    base[1].second = absmax;
  }
  try {
    replica_check(env, params(), 9, frozen_digest(base));
    FAIL() << "no error";
  } catch (const AgreedError& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.failing_rank(), first);
    EXPECT_NE(what.find("rank " + std::to_string(first) +
                        "'s frozen 4-bit base differs from rank 0's, first at "
                        "'model.layers.0.self_attn.q_proj.weight.absmax'"),
              std::string::npos)
        << what;
    EXPECT_NE(e.hint().find("same model.path files"), std::string::npos) << e.hint();
  }
}

}  // namespace
}  // namespace ranktune

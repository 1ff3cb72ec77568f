// Launcher descriptions and the RankFacts encoding used for the all-gather.
#include <gtest/gtest.h>

#include "ranktune/core/error.h"
#include "ranktune/distributed/topology.h"

namespace ranktune {
namespace {

TEST(Topology, EncodeDecodeRoundTrip) {
  RankFacts f;
  f.world_rank = 3;
  f.local_rank = 1;
  f.local_size = 2;
  f.host = "gpu-node-07";
  f.cuda_status = 0;
  f.gpus = {{0, "NVIDIA H100 80GB HBM3", "GPU-1234", "0000:18:00.0", 85899345920, 84000000000},
            {1, "NVIDIA H100 80GB HBM3", "GPU-5678", "0000:2a:00.0", 85899345920, -1}};
  f.peer_access = {{false, true}, {true, false}};
  f.env = {{"CUDA_VISIBLE_DEVICES", "0,1"}, {"SLURM_JOB_ID", "99"}, {"EMPTY", ""}};
  const RankFacts g = rank_facts_decode(rank_facts_encode(f));
  EXPECT_EQ(g.world_rank, 3);
  EXPECT_EQ(g.local_rank, 1);
  EXPECT_EQ(g.local_size, 2);
  EXPECT_EQ(g.host, f.host);
  ASSERT_EQ(g.gpus.size(), 2u);
  EXPECT_EQ(g.gpus[1].uuid, "GPU-5678");
  EXPECT_EQ(g.gpus[0].free_bytes, 84000000000);
  EXPECT_EQ(g.gpus[1].free_bytes, -1);
  EXPECT_EQ(g.peer_access, f.peer_access);
  EXPECT_EQ(g.env, f.env);
}

TEST(Topology, EncodeDecodeNoGpu) {
  RankFacts f;
  f.cuda_status = 100;
  f.cuda_status_text = "cudaErrorNoDevice: no CUDA-capable device is detected";
  const RankFacts g = rank_facts_decode(rank_facts_encode(f));
  EXPECT_EQ(g.cuda_status, 100);
  EXPECT_EQ(g.cuda_status_text, f.cuda_status_text);
  EXPECT_TRUE(g.gpus.empty());
}

TEST(Topology, CorruptRecordIsRejected) {
  EXPECT_THROW(rank_facts_decode("garbage"), CommError);
  std::string s = rank_facts_encode(RankFacts{});
  s += '\x1e';
  EXPECT_THROW(rank_facts_decode(s), CommError);
}

TEST(Topology, LaunchDescriptions) {
  EXPECT_EQ(launch_describe({{"OMPI_COMM_WORLD_SIZE", "2"}}, 2), "mpirun (Open MPI, OMPI_COMM_WORLD_SIZE=2)");
  EXPECT_EQ(launch_describe({{"OMPI_COMM_WORLD_SIZE", "2"}, {"SLURM_JOB_ID", "5"}}, 2),
            "mpirun (Open MPI, OMPI_COMM_WORLD_SIZE=2) inside Slurm job 5");
  EXPECT_EQ(
      launch_describe({{"SLURM_JOB_ID", "5"}, {"SLURM_STEP_ID", "1"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}}, 4),
      "srun (Slurm job 5 step 1, SLURM_NTASKS=4)");
  EXPECT_EQ(launch_describe({}, 1), "a single command (no launcher)");
  EXPECT_EQ(launch_describe({{"SLURM_JOB_ID", "5"}}, 1), "a single command (no launcher) inside Slurm job 5");
}

TEST(Topology, StaleSizeDetection) {
  EXPECT_FALSE(launch_stale_size({{"OMPI_COMM_WORLD_SIZE", "2"}}, 2).has_value());
  EXPECT_TRUE(launch_stale_size({{"OMPI_COMM_WORLD_SIZE", "2"}}, 1).has_value());
  EXPECT_TRUE(launch_stale_size({{"PMI_SIZE", "8"}}, 1).has_value());
  EXPECT_FALSE(launch_stale_size({}, 1).has_value());
}

}  // namespace
}  // namespace ranktune

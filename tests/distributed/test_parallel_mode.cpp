// Every mode rule, with injected topology facts: no GPU, no MPI needed.
#include <gtest/gtest.h>

#include "ranktune/core/error.h"
#include "ranktune/distributed/parallel_mode.h"

namespace ranktune {
namespace {

constexpr std::int64_t GiB = 1024LL * 1024 * 1024;

GpuInfo gpu(int index, const std::string& uuid, std::int64_t free_gib = 79) {
  return GpuInfo{index,    "NVIDIA H100 80GB HBM3", uuid, "0000:0" + std::to_string(index) + ":00.0",
                 80 * GiB, free_gib * GiB};
}

// `ranks_per_host` ranks on each host; every rank sees `gpus_per_rank` GPUs (uuids shared per host unless bound).
ClusterFacts cluster(int hosts, int ranks_per_host, int gpus_visible, bool bound_one_per_task = false,
                     LaunchEnv env = {{"OMPI_COMM_WORLD_SIZE", "?"}}) {
  ClusterFacts f;
  f.world_size = hosts * ranks_per_host;
  for (int h = 0; h < hosts; ++h) {
    for (int l = 0; l < ranks_per_host; ++l) {
      RankFacts r;
      r.world_rank = h * ranks_per_host + l;
      r.local_rank = l;
      r.local_size = ranks_per_host;
      r.host = "node" + std::to_string(h);
      if (bound_one_per_task) {
        r.gpus.push_back(gpu(0, "GPU-" + r.host + "-" + std::to_string(l)));
      } else {
        for (int g = 0; g < gpus_visible; ++g) r.gpus.push_back(gpu(g, "GPU-" + r.host + "-" + std::to_string(g)));
      }
      r.env = env;
      if (r.env.count("OMPI_COMM_WORLD_SIZE")) r.env["OMPI_COMM_WORLD_SIZE"] = std::to_string(f.world_size);
      if (gpus_visible == 0 && !bound_one_per_task) r.cuda_status = 100, r.cuda_status_text = "cudaErrorNoDevice";
      f.ranks.push_back(r);
    }
  }
  return f;
}

ModeRequest req(std::string mode, std::string device = "cuda") {
  ModeRequest r;
  r.mode = std::move(mode);
  r.device = std::move(device);
  return r;
}

template <class Err>
std::string message_of(const ClusterFacts& f, const ModeRequest& r) {
  try {
    mode_decide(f, r);
  } catch (const Err& e) {
    return std::string(e.what()) + " | hint: " + e.hint();
  } catch (const std::exception& e) {
    return std::string("WRONG EXCEPTION: ") + e.what();
  }
  return "NO EXCEPTION";
}

TEST(ParallelMode, BalancedRefusedWhenWorldSizeAboveOne) {
  const auto f = cluster(1, 2, 2);
  const std::string msg = message_of<LaunchModeError>(f, req("balanced"));
  EXPECT_NE(msg.find("2 processes were started by mpirun (Open MPI, OMPI_COMM_WORLD_SIZE=2)"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("mpirun -np 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--parallel.mode=ddp"), std::string::npos) << msg;
  try {
    mode_decide(f, req("balanced"));
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::usage);
  }
}

TEST(ParallelMode, BalancedRefusedOnCpuToo) {
  EXPECT_NE(message_of<LaunchModeError>(cluster(1, 4, 0), req("balanced", "cpu")).find("4 processes"),
            std::string::npos);
}

TEST(ParallelMode, BalancedRefusalNamesSrun) {
  LaunchEnv env{{"SLURM_JOB_ID", "77"}, {"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}};
  const std::string msg = message_of<LaunchModeError>(cluster(2, 2, 2, false, env), req("balanced"));
  EXPECT_NE(msg.find("srun (Slurm job 77 step 0, SLURM_NTASKS=4)"), std::string::npos) << msg;
}

TEST(ParallelMode, LaunchContradictionReportedBeforeMissingGpus) {
  EXPECT_NE(message_of<LaunchModeError>(cluster(1, 2, 0), req("balanced")).find("2 processes"), std::string::npos);
}

TEST(ParallelMode, SingleRefusedWhenWorldSizeAboveOne) {
  EXPECT_NE(message_of<LaunchModeError>(cluster(1, 2, 2), req("single")).find("parallel.mode=single runs ONE process"),
            std::string::npos);
}

TEST(ParallelMode, AllGpusVisibleDeviceIsLocalRank) {
  const auto d = mode_decide(cluster(2, 4, 4), req("auto"));
  EXPECT_EQ(d.mode, ParallelMode::ddp);
  EXPECT_TRUE(d.on_gpu);
  EXPECT_EQ(d.device_of_rank, (std::vector<int>{0, 1, 2, 3, 0, 1, 2, 3}));
  EXPECT_NE(d.reason.find("device = local rank"), std::string::npos);
}

TEST(ParallelMode, OneGpuBoundPerTaskUsesDeviceZero) {
  const auto d = mode_decide(cluster(2, 2, 0, /*bound_one_per_task=*/true), req("ddp"));
  EXPECT_EQ(d.mode, ParallelMode::ddp);
  EXPECT_EQ(d.device_of_rank, (std::vector<int>{0, 0, 0, 0}));
  EXPECT_NE(d.reason.find("one GPU bound per task"), std::string::npos);
}

TEST(ParallelMode, MoreLocalRanksThanGpusRefusedNamingRanks) {
  const std::string msg = message_of<TopologyError>(cluster(1, 4, 2), req("auto"));
  EXPECT_NE(msg.find("host node0 runs 4 ranks but each sees only 2 GPUs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank(s) 2 and 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--npernode 2"), std::string::npos) << msg;
}

TEST(ParallelMode, TwoRanksOnOneGpuRefusedNamingRanks) {
  // Both ranks were given CUDA_VISIBLE_DEVICES=0: each sees one GPU, the same one.
  auto f = cluster(1, 2, 1);
  for (auto& r : f.ranks) r.env["CUDA_VISIBLE_DEVICES"] = "0";
  const std::string msg = message_of<TopologyError>(f, req("ddp"));
  EXPECT_NE(msg.find("ranks 0 and 1 on host node0 would share one GPU (GPU-node0-0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CUDA_VISIBLE_DEVICES='0'"), std::string::npos) << msg;
}

TEST(ParallelMode, SameUuidOnDifferentHostsIsFine) {
  auto f = cluster(2, 1, 1);
  for (auto& r : f.ranks) r.gpus[0].uuid = "GPU-same";
  EXPECT_NO_THROW(mode_decide(f, req("ddp")));
}

TEST(ParallelMode, IdleGpusAreNoted) {
  const auto d = mode_decide(cluster(1, 2, 4), req("ddp"));
  ASSERT_FALSE(d.notes.empty());
  EXPECT_NE(d.notes[0].find("2 GPU(s) stay idle"), std::string::npos);
}

TEST(ParallelMode, WorldOneAutoOneGpuIsSingle) {
  const auto d = mode_decide(cluster(1, 1, 1, false, {}), req("auto"));
  EXPECT_EQ(d.mode, ParallelMode::single);
  EXPECT_EQ(d.device_of_rank, std::vector<int>{0});
}

TEST(ParallelMode, WorldOneAutoPicksBalancedWhenModelDoesNotFit) {
  auto r = req("auto");
  r.footprint_bytes = 120 * GiB;
  const auto d = mode_decide(cluster(1, 1, 4, false, {}), r);
  EXPECT_EQ(d.mode, ParallelMode::balanced);
  EXPECT_EQ(d.balanced_devices, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_NE(d.reason.find("exceeds GPU 0"), std::string::npos);
}

TEST(ParallelMode, WorldOneAutoStaysSingleWhenModelFits) {
  auto r = req("auto");
  r.footprint_bytes = 30 * GiB;
  const auto d = mode_decide(cluster(1, 1, 4, false, {}), r);
  EXPECT_EQ(d.mode, ParallelMode::single);
  EXPECT_NE(d.notes.at(0).find("3 more GPU(s) idle"), std::string::npos);
}

TEST(ParallelMode, FitUsesFreeMemoryMinusReserve) {
  auto f = cluster(1, 1, 2, false, {});
  f.ranks[0].gpus[0].free_bytes = 40 * GiB;
  auto r = req("auto");
  r.reserve_gib = 2;
  r.footprint_bytes = 39 * GiB;  // fits 40 GiB free, not 40 - 2
  EXPECT_EQ(mode_decide(f, r).mode, ParallelMode::balanced);
  r.footprint_bytes = 37 * GiB;
  EXPECT_EQ(mode_decide(f, r).mode, ParallelMode::single);
}

TEST(ParallelMode, BalancedWithOneGpuIsAllowedAndSaysSo) {
  const auto d = mode_decide(cluster(1, 1, 1, false, {}), req("balanced"));
  EXPECT_EQ(d.mode, ParallelMode::balanced);
  EXPECT_EQ(d.balanced_devices, std::vector<int>{0});
  EXPECT_NE(d.reason.find("one GPU visible: every layer on GPU 0"), std::string::npos);
}

TEST(ParallelMode, DdpAtWorldSizeOneIsAllowed) {
  const auto d = mode_decide(cluster(1, 1, 2, false, {}), req("ddp"));
  EXPECT_EQ(d.mode, ParallelMode::ddp);
  EXPECT_EQ(d.device_of_rank, std::vector<int>{0});
}

TEST(ParallelMode, NoGpuNamesEmptyCudaVisibleDevices) {
  auto f = cluster(1, 1, 0, false, {{"CUDA_VISIBLE_DEVICES", ""}});
  const std::string msg = message_of<NoGpuError>(f, req("auto"));
  EXPECT_NE(msg.find("no GPU visible on host node0 (rank 0): CUDA_VISIBLE_DEVICES='' hides every GPU"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("--device=cpu"), std::string::npos) << msg;
}

TEST(ParallelMode, NoGpuNamesMinusOneAndInvalidLists) {
  EXPECT_NE(message_of<NoGpuError>(cluster(1, 1, 0, false, {{"CUDA_VISIBLE_DEVICES", "-1"}}), req("auto"))
                .find("CUDA_VISIBLE_DEVICES='-1' hides every GPU"),
            std::string::npos);
  auto f = cluster(1, 1, 0, false, {{"CUDA_VISIBLE_DEVICES", "0,0"}});
  f.ranks[0].cuda_status = 101;
  EXPECT_NE(message_of<NoGpuError>(f, req("auto")).find("CUDA_VISIBLE_DEVICES='0,0' is invalid"), std::string::npos);
  EXPECT_NE(message_of<NoGpuError>(cluster(1, 1, 0, false, {{"CUDA_VISIBLE_DEVICES", "7"}}), req("auto"))
                .find("CUDA_VISIBLE_DEVICES='7' names no existing device"),
            std::string::npos);
}

// device=auto (the default): the GPUs when any rank sees one, else the CPU with a note naming why none was seen;
// device=cuda stays the loud demand of the tests above, and a rank without a GPU among ranks with one is its error.
TEST(ParallelMode, DeviceAutoIsTheCpuWithANoteWhenNoGpuIsVisible) {
  const auto f = cluster(1, 1, 0, false, {{"CUDA_VISIBLE_DEVICES", ""}});
  EXPECT_EQ(device_resolve("auto", f), "cpu");
  EXPECT_EQ(device_resolve("cuda", f), "cuda");
  const auto d = mode_decide(f, req("auto", "auto"));
  EXPECT_FALSE(d.on_gpu);
  EXPECT_EQ(d.mode, ParallelMode::single);
  ASSERT_FALSE(d.notes.empty());
  EXPECT_NE(d.notes.back().find("device=auto: no GPU visible on host node0 (rank 0): CUDA_VISIBLE_DEVICES='' hides "
                                "every GPU"),
            std::string::npos)
      << d.notes.back();
  EXPECT_NE(d.notes.back().find("; running on the CPU (--device=cuda makes a missing GPU an error)"),
            std::string::npos);
  EXPECT_EQ(mode_decide(cluster(1, 2, 0, false, {}), req("auto", "auto")).mode, ParallelMode::ddp);
  EXPECT_NE(message_of<ConfigError>(f, req("auto", "gpu")).find("expected auto, cuda or cpu"), std::string::npos);
}

TEST(ParallelMode, DeviceAutoTakesTheGpusWhenAnyIsVisible) {
  const auto f = cluster(1, 1, 2, false, {});
  EXPECT_EQ(device_resolve("auto", f), "cuda");
  EXPECT_EQ(device_resolve("cpu", f), "cpu");
  const auto d = mode_decide(f, req("auto", "auto"));
  EXPECT_TRUE(d.on_gpu);
  for (const auto& n : d.notes) EXPECT_EQ(n.find("device=auto"), std::string::npos) << n;
  auto mixed = cluster(2, 1, 1, false, {});
  mixed.ranks[1].gpus.clear();
  EXPECT_NE(message_of<NoGpuError>(mixed, req("auto", "auto")).find("no GPU visible on host node1 (rank 1)"),
            std::string::npos);
}

TEST(ParallelMode, NoGpuUnsetVariable) {
  EXPECT_NE(message_of<NoGpuError>(cluster(1, 1, 0, false, {}), req("auto")).find("CUDA_VISIBLE_DEVICES is unset"),
            std::string::npos);
}

TEST(ParallelMode, NoGpuInSlurmJobWithoutGpuRequest) {
  auto f = cluster(1, 1, 0, false, {{"SLURM_JOB_ID", "4242"}, {"CUDA_VISIBLE_DEVICES", ""}});
  const std::string msg = message_of<NoGpuError>(f, req("auto"));
  EXPECT_NE(msg.find("Slurm job 4242 was allocated no GPU"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--gpus-per-task=1"), std::string::npos) << msg;
}

TEST(ParallelMode, NoGpuInSlurmJobWithGpuRequestDoesNotBlameSlurm) {
  auto f = cluster(1, 1, 0, false, {{"SLURM_JOB_ID", "4242"}, {"SLURM_JOB_GPUS", "0"}});
  EXPECT_EQ(message_of<NoGpuError>(f, req("auto")).find("allocated no GPU"), std::string::npos);
}

TEST(ParallelMode, NoDriverIsNamed) {
  auto f = cluster(1, 1, 0, false, {});
  f.ranks[0].cuda_status = 35;
  f.ranks[0].cuda_status_text = "cudaErrorInsufficientDriver: CUDA driver version is insufficient";
  EXPECT_NE(message_of<NoGpuError>(f, req("auto")).find("the CUDA driver is not usable"), std::string::npos);
}

TEST(ParallelMode, OneRankWithoutGpuAmongManyIsNamed) {
  auto f = cluster(2, 1, 1);
  f.ranks[1].gpus.clear();
  f.ranks[1].env["CUDA_VISIBLE_DEVICES"] = "";
  EXPECT_NE(message_of<NoGpuError>(f, req("ddp")).find("host node1 (rank 1)"), std::string::npos);
}

TEST(ParallelMode, CpuDevice) {
  EXPECT_EQ(mode_decide(cluster(1, 1, 0, false, {}), req("auto", "cpu")).mode, ParallelMode::single);
  const auto d = mode_decide(cluster(1, 4, 0), req("auto", "cpu"));
  EXPECT_EQ(d.mode, ParallelMode::ddp);
  EXPECT_FALSE(d.on_gpu);
  EXPECT_EQ(d.device_of_rank, (std::vector<int>{-1, -1, -1, -1}));
  EXPECT_EQ(mode_decide(cluster(1, 1, 0, false, {}), req("balanced", "cpu")).mode, ParallelMode::balanced);
}

TEST(ParallelMode, CpuIgnoresGpusEvenWhenPresent) {
  const auto d = mode_decide(cluster(1, 2, 2), req("ddp", "cpu"));
  EXPECT_FALSE(d.on_gpu);
}

TEST(ParallelMode, StaleLauncherVariableIsNoted) {
  auto f = cluster(1, 1, 1, false, {});
  f.ranks[0].env["OMPI_COMM_WORLD_SIZE"] = "4";
  const auto d = mode_decide(f, req("auto"));
  ASSERT_FALSE(d.notes.empty());
  EXPECT_NE(d.notes.back().find("OMPI_COMM_WORLD_SIZE=4 but MPI reports 1"), std::string::npos);
}

TEST(ParallelMode, StaleVariableDoesNotTriggerBalancedRefusal) {
  // One real process with a stale OMPI_COMM_WORLD_SIZE=4 (accelerate's classic failure): balanced must run.
  auto f = cluster(1, 1, 2, false, {});
  f.ranks[0].env["OMPI_COMM_WORLD_SIZE"] = "4";
  EXPECT_EQ(mode_decide(f, req("balanced")).mode, ParallelMode::balanced);
}

TEST(ParallelMode, BadRequestValues) {
  EXPECT_THROW(mode_decide(cluster(1, 1, 1), req("sharded")), ConfigError);
  EXPECT_THROW(mode_decide(cluster(1, 1, 1), req("auto", "tpu")), ConfigError);
}

TEST(ParallelMode, TableListsEveryRankAndTheMode) {
  const auto f = cluster(2, 2, 2);
  const auto d = mode_decide(f, req("ddp"));
  const std::string t = topology_table(f, d);
  EXPECT_NE(t.find("node1"), std::string::npos);
  EXPECT_NE(t.find("cuda:1"), std::string::npos);
  EXPECT_NE(t.find("mode:   ddp on GPU"), std::string::npos);
}

}  // namespace
}  // namespace ranktune

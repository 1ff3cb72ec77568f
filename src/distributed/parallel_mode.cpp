// The mode rules. Every message names what was launched, what was seen, and the command that fixes it.
#include "ranktune/distributed/parallel_mode.h"

#include <algorithm>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>

#include "ranktune/core/error.h"
#include "ranktune/core/text.h"

namespace ranktune {
namespace {

std::string join_ranks(const std::vector<int>& ranks) {
  std::string s;
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    if (i) s += (i + 1 == ranks.size()) ? " and " : ", ";
    s += std::to_string(ranks[i]);
  }
  return s;
}

std::string cvd_phrase(const RankFacts& r) {
  auto it = r.env.find("CUDA_VISIBLE_DEVICES");
  if (it == r.env.end()) return "CUDA_VISIBLE_DEVICES is unset";
  return "CUDA_VISIBLE_DEVICES='" + it->second + "'";
}

bool slurm_gpu_requested(const LaunchEnv& env) {
  for (const char* k : {"SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS", "SLURM_GPUS_PER_TASK", "SLURM_GPUS_PER_NODE",
                        "SLURM_GPUS_ON_NODE"})
    if (env.count(k)) return true;
  auto tres = env.find("SLURM_TRES_PER_TASK");
  return tres != env.end() && tres->second.find("gpu") != std::string::npos;
}

// Why a rank sees no GPU, as precisely as its facts allow.
std::string no_gpu_cause(const RankFacts& r) {
  std::ostringstream os;
  os << "no GPU visible on host " << r.host << " (rank " << r.world_rank << "): ";
  auto cvd = r.env.find("CUDA_VISIBLE_DEVICES");
  const bool driver_missing = r.cuda_status == 35 || r.cuda_status == 34 || r.cuda_status == 3;
  if (driver_missing) {
    os << "the CUDA driver is not usable (" << r.cuda_status_text << "; " << cvd_phrase(r) << ")";
  } else if (cvd != r.env.end() &&
             (cvd->second.empty() || cvd->second == "-1" || cvd->second == "none" || cvd->second == "NoDevFiles")) {
    os << "CUDA_VISIBLE_DEVICES='" << cvd->second << "' hides every GPU";
  } else if (cvd != r.env.end() && r.cuda_status == 101) {
    os << "CUDA_VISIBLE_DEVICES='" << cvd->second << "' is invalid (a device listed twice?)";
  } else if (cvd != r.env.end()) {
    os << "CUDA_VISIBLE_DEVICES='" << cvd->second << "' names no existing device";
  } else {
    os << "CUDA_VISIBLE_DEVICES is unset and the driver reports no device";
  }
  if (r.cuda_status != 0 && !driver_missing && !r.cuda_status_text.empty())
    os << " (CUDA: " << r.cuda_status_text << ")";
  if (r.env.count("SLURM_JOB_ID") && !slurm_gpu_requested(r.env))
    os << "; Slurm job " << r.env.at("SLURM_JOB_ID")
       << " was allocated no GPU (SLURM_JOB_GPUS and SLURM_STEP_GPUS unset)";
  return os.str();
}

std::string no_gpu_hint(const RankFacts& r) {
  if (r.env.count("SLURM_JOB_ID") && !slurm_gpu_requested(r.env))
    return "request GPUs (#SBATCH --gpus-per-task=1 or --gres=gpu:N), or run on CPU with --device=cpu";
  if (r.env.count("CUDA_VISIBLE_DEVICES"))
    return "unset CUDA_VISIBLE_DEVICES or list valid devices (nvidia-smi -L), or run on CPU with --device=cpu";
  return "check `nvidia-smi` on " + r.host + ", or run on CPU with --device=cpu";
}

[[noreturn]] void refuse_single_process_mode(const std::string& mode, const ClusterFacts& f) {
  const std::string launch = launch_describe(f.ranks.at(0).env, f.world_size);
  const std::string n = std::to_string(f.world_size);
  std::string what = "parallel.mode=" + mode + " runs ONE process";
  if (mode == "balanced") what += " that spreads the model's layers over all GPUs of its node";
  what += ", but " + n + " processes were started by " + launch + " (world size " + n + ")";
  throw LaunchModeError(
      what, "either start one process with all GPUs visible (mpirun -np 1 ranktune train ... --parallel.mode=" + mode +
                ", or srun -n 1 --gpus=<all>), or keep " + n +
                " processes and use --parallel.mode=ddp (one GPU per rank)");
}

ModeDecision decide_cpu(const ClusterFacts& f, const ModeRequest& req) {
  ModeDecision d;
  d.on_gpu = false;
  d.device_of_rank.assign(f.world_size, -1);
  if (f.world_size > 1) {
    if (req.mode == "balanced" || req.mode == "single") refuse_single_process_mode(req.mode, f);
    d.mode = ParallelMode::ddp;
    d.reason = std::to_string(f.world_size) + " processes on CPU: DDP over the MPI communicator";
    return d;
  }
  if (req.mode == "ddp") {
    d.mode = ParallelMode::ddp;
    d.reason = "ddp requested with one process: DDP code path at world size 1 on CPU";
  } else if (req.mode == "balanced") {
    d.mode = ParallelMode::balanced;
    d.reason = "balanced requested on CPU: every stage runs on the CPU (for testing the pipeline)";
  } else {
    d.mode = ParallelMode::single;
    d.reason = req.mode == "auto" ? "one process on the CPU: single CPU run" : "single requested on CPU";
  }
  return d;
}

// DDP on GPUs: which device each rank drives, or why it cannot.
void assign_ddp_devices(const ClusterFacts& f, ModeDecision& d) {
  std::set<std::string> noted_hosts;
  for (const auto& r : f.ranks) {
    const int g = static_cast<int>(r.gpus.size());
    if (g == 1) {
      d.device_of_rank[r.world_rank] = 0;
    } else if (g >= r.local_size) {
      d.device_of_rank[r.world_rank] = r.local_rank;
      if (g > r.local_size && noted_hosts.insert(r.host).second)
        d.notes.push_back("host " + r.host + " has " + std::to_string(g) + " GPUs but runs " +
                          std::to_string(r.local_size) + " rank(s): " + std::to_string(g - r.local_size) +
                          " GPU(s) stay idle");
    } else {
      std::vector<int> extra;
      for (const auto& o : f.ranks)
        if (o.host == r.host && o.local_rank >= g) extra.push_back(o.world_rank);
      throw TopologyError("host " + r.host + " runs " + std::to_string(r.local_size) + " ranks but each sees only " +
                              std::to_string(g) + " GPUs (" + cvd_phrase(r) + "): rank(s) " + join_ranks(extra) +
                              " would have no GPU of their own",
                          "start at most " + std::to_string(g) + " ranks per node (mpirun --npernode " +
                              std::to_string(g) + ", srun --ntasks-per-node=" + std::to_string(g) +
                              ") or bind one GPU per task (srun --gpus-per-task=1)");
    }
  }
  // Two ranks on one physical GPU make NCCL fail or crawl: compare UUIDs per host.
  std::map<std::pair<std::string, std::string>, std::vector<int>> users;
  for (const auto& r : f.ranks) {
    const auto& gpu = r.gpus.at(d.device_of_rank[r.world_rank]);
    const std::string id = gpu.uuid.empty() ? gpu.pci_bus_id : gpu.uuid;
    users[{r.host, id}].push_back(r.world_rank);
  }
  for (const auto& [key, ranks] : users) {
    if (ranks.size() < 2) continue;
    const auto& r0 = f.ranks[ranks[0]];
    throw TopologyError("ranks " + join_ranks(ranks) + " on host " + key.first + " would share one GPU (" + key.second +
                            ", " + r0.gpus.at(d.device_of_rank[ranks[0]]).name + "); " + cvd_phrase(r0) + " on rank " +
                            std::to_string(ranks[0]) + ": NCCL needs one GPU per rank",
                        "give each rank its own GPU: let every rank see all GPUs of the node (unset "
                        "CUDA_VISIBLE_DEVICES) or use srun --gpus-per-task=1; or start fewer ranks");
  }
}

ModeDecision decide_gpu(const ClusterFacts& f, const ModeRequest& req) {
  // The launch contradiction is reported first: it is what the user typed, whatever the GPUs.
  if (f.world_size > 1 && (req.mode == "balanced" || req.mode == "single")) refuse_single_process_mode(req.mode, f);
  for (const auto& r : f.ranks)
    if (r.gpus.empty()) throw NoGpuError(no_gpu_cause(r), no_gpu_hint(r));

  ModeDecision d;
  d.on_gpu = true;
  d.device_of_rank.assign(f.world_size, 0);
  if (f.world_size > 1) {
    d.mode = ParallelMode::ddp;
    assign_ddp_devices(f, d);
    const bool bound =
        std::all_of(f.ranks.begin(), f.ranks.end(), [](const RankFacts& r) { return r.gpus.size() == 1; });
    d.reason = std::to_string(f.world_size) + " processes, one GPU each (" +
               (bound ? "one GPU bound per task: device 0" : "all node GPUs visible: device = local rank") +
               "): DDP over NCCL";
    return d;
  }

  const RankFacts& r = f.ranks.at(0);
  const int g = static_cast<int>(r.gpus.size());
  auto all_devices = [&] {
    std::vector<int> v(g);
    for (int i = 0; i < g; ++i) v[i] = i;
    return v;
  };
  if (req.mode == "ddp") {
    d.mode = ParallelMode::ddp;
    d.reason = "ddp requested with one process: NCCL at world size 1 on GPU 0";
    if (g > 1)
      d.notes.push_back(std::to_string(g - 1) + " more GPU(s) visible; start one rank per GPU (mpirun -np " +
                        std::to_string(g) + ") to use them");
  } else if (req.mode == "balanced") {
    d.mode = ParallelMode::balanced;
    d.balanced_devices = all_devices();
    d.reason = g == 1 ? "balanced requested with one GPU visible: every layer on GPU 0 (no split)"
                      : "balanced requested: one process, layers spread over " + std::to_string(g) + " GPUs";
  } else if (req.mode == "single") {
    d.mode = ParallelMode::single;
    d.reason = "single requested: one process on GPU 0";
  } else if (g == 1) {
    d.mode = ParallelMode::single;
    d.reason = "one process, one GPU visible: single-GPU run";
  } else if (!req.footprint_bytes) {
    d.mode = ParallelMode::single;
    d.reason = "one process, " + std::to_string(g) + " GPUs visible, model footprint not known yet: single on GPU 0";
    d.notes.push_back("auto switches to balanced when the model's training footprint exceeds GPU 0's free memory");
  } else {
    const auto reserve = static_cast<std::int64_t>(req.reserve_gib * 1024 * 1024 * 1024);
    const std::int64_t free0 = r.gpus[0].free_bytes >= 0 ? r.gpus[0].free_bytes : r.gpus[0].total_bytes;
    const std::int64_t budget = free0 - reserve;
    if (*req.footprint_bytes <= budget) {
      d.mode = ParallelMode::single;
      d.reason = "one process, the model's estimated footprint (" + format_bytes(*req.footprint_bytes) +
                 ") fits GPU 0 (" + format_bytes(budget) + " usable): single-GPU run";
      d.notes.push_back(std::to_string(g - 1) + " more GPU(s) idle; mpirun -np " + std::to_string(g) +
                        " --parallel.mode=ddp would use them");
    } else {
      d.mode = ParallelMode::balanced;
      d.balanced_devices = all_devices();
      d.reason = "one process, the model's estimated footprint (" + format_bytes(*req.footprint_bytes) +
                 ") exceeds GPU 0 (" + format_bytes(budget) + " usable): balanced over " + std::to_string(g) + " GPUs";
    }
  }
  return d;
}

}  // namespace

const char* parallel_mode_name(ParallelMode m) {
  switch (m) {
    case ParallelMode::single: return "single";
    case ParallelMode::ddp: return "ddp";
    case ParallelMode::balanced: return "balanced";
  }
  return "?";
}

std::string device_resolve(const std::string& device, const ClusterFacts& facts) {
  if (device != "auto") return device;
  const bool any_gpu =
      std::any_of(facts.ranks.begin(), facts.ranks.end(), [](const RankFacts& r) { return !r.gpus.empty(); });
  return any_gpu ? "cuda" : "cpu";
}

ModeDecision mode_decide(const ClusterFacts& facts, const ModeRequest& req) {
  if (facts.ranks.size() != static_cast<std::size_t>(facts.world_size) || facts.world_size < 1)
    throw LibraryError("topology facts incomplete: " + std::to_string(facts.ranks.size()) + " of " +
                       std::to_string(facts.world_size) + " ranks reported");
  static const std::set<std::string> modes{"auto", "single", "ddp", "balanced"};
  if (!modes.count(req.mode))
    throw ConfigError("bad value '" + req.mode + "' for parallel.mode: expected one of auto, single, ddp, balanced");
  if (req.device != "cuda" && req.device != "cpu" && req.device != "auto")
    throw ConfigError("bad value '" + req.device + "' for device: expected auto, cuda or cpu");

  const bool cpu = device_resolve(req.device, facts) == "cpu";
  ModeDecision d = cpu ? decide_cpu(facts, req) : decide_gpu(facts, req);
  if (cpu && req.device == "auto")
    d.notes.push_back("device=auto: " + no_gpu_cause(facts.ranks.at(0)) +
                      "; running on the CPU (--device=cuda makes a missing GPU an error)");
  if (auto stale = launch_stale_size(facts.ranks.at(0).env, facts.world_size)) d.notes.push_back(*stale);
  return d;
}

std::string topology_table(const ClusterFacts& f, const ModeDecision& d) {
  std::ostringstream os;
  os << std::left << std::setw(5) << "rank" << std::setw(18) << "host" << std::setw(6) << "local" << std::setw(7)
     << "device" << std::setw(28) << "gpu" << std::setw(22) << "free / total" << std::setw(15) << "uuid"
     << "CUDA_VISIBLE_DEVICES\n";
  for (const auto& r : f.ranks) {
    const int dev = d.device_of_rank.at(r.world_rank);
    const GpuInfo* g = (dev >= 0 && dev < static_cast<int>(r.gpus.size())) ? &r.gpus[dev] : nullptr;
    os << std::setw(5) << r.world_rank << std::setw(18) << r.host << std::setw(6)
       << (std::to_string(r.local_rank) + "/" + std::to_string(r.local_size)) << std::setw(7)
       << (d.on_gpu ? (d.mode == ParallelMode::balanced ? "all" : "cuda:" + std::to_string(dev)) : "cpu")
       << std::setw(28)
       << (g          ? g->name
           : d.on_gpu ? ""
                      : "-")
       << std::setw(22) << (g ? format_bytes(g->free_bytes) + " / " + format_bytes(g->total_bytes) : "-")
       << std::setw(15) << (g ? g->uuid.substr(0, 12) : "-") << env_or(r.env, "CUDA_VISIBLE_DEVICES", "(unset)")
       << '\n';
  }
  if (d.mode == ParallelMode::balanced && d.on_gpu) {
    const auto& r = f.ranks.at(0);
    os << "\nbalanced devices of rank 0:\n";
    for (int dev : d.balanced_devices) {
      const auto& g = r.gpus.at(dev);
      os << "  cuda:" << dev << "  " << g.name << "  " << format_bytes(g.free_bytes) << " free  peer access:";
      for (std::size_t j = 0; j < r.gpus.size(); ++j)
        if (static_cast<int>(j) != dev)
          os << ' ' << j
             << (dev < static_cast<int>(r.peer_access.size()) && j < r.peer_access[dev].size() && r.peer_access[dev][j]
                     ? "=yes"
                     : "=no");
      os << '\n';
    }
  }
  os << "\nlaunch: " << launch_describe(f.ranks.at(0).env, f.world_size) << '\n';
  os << "mode:   " << parallel_mode_name(d.mode) << " on " << (d.on_gpu ? "GPU" : "CPU") << " - " << d.reason << '\n';
  for (const auto& n : d.notes) os << "note:   " << n << '\n';
  return os.str();
}

}  // namespace ranktune

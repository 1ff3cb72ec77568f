// Launcher variables, their description for messages, and the text encoding used to all-gather RankFacts.
#include "ranktune/distributed/topology.h"

#include <cstdlib>
#include <sstream>

#include "ranktune/core/error.h"

namespace ranktune {
namespace {

const char* const kLaunchVars[] = {
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NNODES",
    "SLURM_JOB_GPUS",
    "SLURM_STEP_GPUS",
    "SLURM_GPUS",
    "SLURM_GPUS_PER_TASK",
    "SLURM_GPUS_PER_NODE",
    "SLURM_GPUS_ON_NODE",
    "SLURM_TRES_PER_TASK",
    "SLURM_JOB_NODELIST",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "PMIX_RANK",
    "PMI_SIZE",
    "PMI_RANK",
};

// Field and record separators of the encoding: ASCII unit/record separators never occur in the values.
constexpr char kField = '\x1f';
constexpr char kRecord = '\x1e';

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) out.push_back(std::move(cur)), cur.clear();
    else cur.push_back(c);
  }
  out.push_back(std::move(cur));
  return out;
}

long to_long(const std::string& s) {
  try {
    return std::stol(s);
  } catch (const std::exception&) {
    throw CommError("corrupt topology record from a peer rank (field '" + s + "')");
  }
}

}  // namespace

LaunchEnv launch_env_capture() {
  LaunchEnv env;
  for (const char* k : kLaunchVars)
    if (const char* v = std::getenv(k)) env[k] = v;
  return env;
}

std::string env_or(const LaunchEnv& env, const std::string& key, const std::string& fallback) {
  auto it = env.find(key);
  return it == env.end() ? fallback : it->second;
}

std::string launch_describe(const LaunchEnv& env, int mpi_world_size) {
  const bool ompi = env.count("OMPI_COMM_WORLD_SIZE") > 0;
  const bool slurm_step = env.count("SLURM_STEP_ID") > 0 && env.count("SLURM_PROCID") > 0;
  std::ostringstream os;
  if (ompi) {
    os << "mpirun (Open MPI, OMPI_COMM_WORLD_SIZE=" << env.at("OMPI_COMM_WORLD_SIZE") << ")";
    if (env.count("SLURM_JOB_ID")) os << " inside Slurm job " << env.at("SLURM_JOB_ID");
  } else if (slurm_step) {
    os << "srun (Slurm job " << env_or(env, "SLURM_JOB_ID", "?") << " step " << env.at("SLURM_STEP_ID")
       << ", SLURM_NTASKS=" << env_or(env, "SLURM_NTASKS", "?") << ")";
  } else if (env.count("PMI_SIZE") || env.count("PMIX_RANK")) {
    os << "an MPI launcher (PMI" << (env.count("PMI_SIZE") ? "_SIZE=" + env.at("PMI_SIZE") : "x") << ")";
  } else if (mpi_world_size > 1) {
    os << "an MPI launcher";
  } else {
    os << "a single command (no launcher)";
    if (env.count("SLURM_JOB_ID")) os << " inside Slurm job " << env.at("SLURM_JOB_ID");
  }
  return os.str();
}

bool launch_is_managed(const LaunchEnv& env) {
  return env.count("OMPI_COMM_WORLD_SIZE") > 0 || env.count("SLURM_JOB_ID") > 0 || env.count("PMI_SIZE") > 0;
}

std::optional<std::string> launch_stale_size(const LaunchEnv& env, int mpi_world_size) {
  for (const char* k : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    auto it = env.find(k);
    if (it == env.end()) continue;
    long claimed = -1;
    try {
      claimed = std::stol(it->second);
    } catch (const std::exception&) {
    }
    if (claimed != mpi_world_size) {
      return std::string(k) + "=" + it->second + " but MPI reports " + std::to_string(mpi_world_size) +
             " process(es): the variable is stale (inherited from another launch?) and is ignored";
    }
  }
  return std::nullopt;
}

std::string rank_facts_encode(const RankFacts& f) {
  std::ostringstream os;
  os << f.world_rank << kField << f.local_rank << kField << f.local_size << kField << f.host << kField << f.cuda_status
     << kField << f.cuda_status_text << kField << f.gpus.size() << kField << f.env.size();
  for (const auto& g : f.gpus) {
    os << kRecord << g.index << kField << g.name << kField << g.uuid << kField << g.pci_bus_id << kField
       << g.total_bytes << kField << g.free_bytes;
  }
  for (std::size_t i = 0; i < f.gpus.size(); ++i) {
    os << kRecord;
    if (i < f.peer_access.size())
      for (bool b : f.peer_access[i]) os << (b ? '1' : '0');
  }
  for (const auto& [k, v] : f.env) os << kRecord << k << kField << v;
  return os.str();
}

RankFacts rank_facts_decode(const std::string& s) {
  const auto recs = split(s, kRecord);
  const auto head = split(recs.at(0), kField);
  if (head.size() != 8) throw CommError("corrupt topology record from a peer rank");
  RankFacts f;
  f.world_rank = static_cast<int>(to_long(head[0]));
  f.local_rank = static_cast<int>(to_long(head[1]));
  f.local_size = static_cast<int>(to_long(head[2]));
  f.host = head[3];
  f.cuda_status = static_cast<int>(to_long(head[4]));
  f.cuda_status_text = head[5];
  const auto ngpu = static_cast<std::size_t>(to_long(head[6]));
  const auto nenv = static_cast<std::size_t>(to_long(head[7]));
  if (recs.size() != 1 + 2 * ngpu + nenv) throw CommError("corrupt topology record from a peer rank");
  std::size_t r = 1;
  for (std::size_t i = 0; i < ngpu; ++i, ++r) {
    const auto g = split(recs[r], kField);
    if (g.size() != 6) throw CommError("corrupt GPU record from a peer rank");
    f.gpus.push_back({static_cast<int>(to_long(g[0])), g[1], g[2], g[3], to_long(g[4]), to_long(g[5])});
  }
  for (std::size_t i = 0; i < ngpu; ++i, ++r) {
    std::vector<bool> row;
    for (char c : recs[r]) row.push_back(c == '1');
    f.peer_access.push_back(std::move(row));
  }
  for (std::size_t i = 0; i < nenv; ++i, ++r) {
    const auto kv = split(recs[r], kField);
    if (kv.size() != 2) throw CommError("corrupt environment record from a peer rank");
    f.env[kv[0]] = kv[1];
  }
  return f;
}

}  // namespace ranktune

// The commit protocol and resume rules (docs/checkpoint-format.md). Ranks agree on every outcome through MPI;
// rank 0 alone touches the shared names (the step directory's life, manifest.json, `latest`, pruning) and broadcasts
// what it saw, so ranks on other NFS clients never act on a stale directory listing.
#include "ranktune/io/checkpoint.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <sstream>

#include "ranktune/core/log.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/mpi_check.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/io/checkpoint_file.h"
#include "ranktune/io/crc32c.h"
#include "ranktune/io/durable_file.h"
#include "ranktune/version.h"

namespace ranktune {
namespace fs = std::filesystem;
namespace {

constexpr const char* kDamagedHint =
    "`ranktune checkpoint verify PATH` lists every problem; --resume=auto falls back to the newest intact step, "
    "--resume=none starts fresh";

enum Code : int { ok = 0, damaged = 1, incompatible = 2 };

struct Verdict {
  int code = ok;
  std::string message;  // of the first rank with the worst code, prefixed "rank r: " (the rank that found it)
};

void bcast_string(std::string& s, int root, MPI_Comm comm) {
  unsigned long long n = s.size();
  RANKTUNE_MPI_CHECK(MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, root, comm));
  s.resize(n);
  if (n) RANKTUNE_MPI_CHECK(MPI_Bcast(s.data(), static_cast<int>(n), MPI_CHAR, root, comm));
}

// Every rank learns the worst outcome and the message of the first rank that had it.
Verdict agree(const MpiEnv& env, int code, std::string message) {
  int worst = 0;
  RANKTUNE_MPI_CHECK(MPI_Allreduce(&code, &worst, 1, MPI_INT, MPI_MAX, env.world()));
  if (worst == ok) return {};
  int mine = code == worst ? env.rank() : env.size();
  int first = 0;
  RANKTUNE_MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, env.world()));
  bcast_string(message, first, env.world());
  message = "rank " + std::to_string(first) + ": " + message;
  return {worst, message};
}

fs::path clean(const fs::path& p) {
  fs::path n = p.lexically_normal();
  if (!n.has_filename() && n.has_parent_path()) n = n.parent_path();
  return n;
}

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void remove_quietly(const fs::path& p) {
  try {
    remove_tree(p);
  } catch (const std::exception&) {  // best effort: a leftover is cleared by the next save or prune
  }
}

// A committed step loses its manifest first, so a crash half-way leaves an uncommitted directory, never a committed
// one with files missing.
void step_delete(const fs::path& step_dir) {
  fs::remove(step_dir / kManifestName);
  fsync_dir(step_dir);
  remove_tree(step_dir);
}

struct StepEntry {
  long step;
  fs::path path;
  bool committed;
};

std::vector<StepEntry> steps_list(const fs::path& dir) {
  std::vector<StepEntry> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto step = step_from_dir_name(e.path().filename().string());
    if (!step || !e.is_directory()) continue;
    out.push_back({*step, e.path(), fs::exists(e.path() / kManifestName)});
  }
  std::sort(out.begin(), out.end(), [](const StepEntry& a, const StepEntry& b) { return a.step > b.step; });
  return out;
}

// Keeps `latest` and the keep-1 newest other committed steps; removes the rest and every uncommitted step directory
// (leftovers of interrupted saves).
std::vector<long> prune(const fs::path& dir, int keep, long latest_step) {
  std::vector<long> removed;
  int kept_others = 0;
  for (const auto& e : steps_list(dir)) {
    if (e.step == latest_step) continue;
    if (e.committed && kept_others < keep - 1) {
      ++kept_others;
      continue;
    }
    if (e.committed) step_delete(e.path);
    else remove_tree(e.path);
    removed.push_back(e.step);
  }
  if (!removed.empty()) fsync_dir(dir);
  return removed;
}

// Temp files of `latest` left by an interrupted save.
void remove_stale_tmp(const fs::path& dir) {
  const std::string prefix = std::string(kLatestName) + ".tmp.";
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0) remove_quietly(e.path());
}

CommitHook phase_hook(const SaveRequest& req, SavePhase written, SavePhase synced, SavePhase renamed,
                      bool* renamed_flag = nullptr) {
  return [&req, written, synced, renamed, renamed_flag](CommitStep s) {
    if (s == CommitStep::renamed && renamed_flag) *renamed_flag = true;
    if (!req.fault_hook) return;
    req.fault_hook(s == CommitStep::written ? written : s == CommitStep::synced ? synced : renamed);
  };
}

void fire(const SaveRequest& req, SavePhase phase) {
  if (req.fault_hook) req.fault_hook(phase);
}

std::string describe(const std::exception& e) { return e.what(); }

// Loads step_dir on every rank: manifest, world-size rule, this rank's file and (replicated) rank 0's file.
// Nothing is returned unless every rank succeeded.
std::pair<std::optional<LoadedCheckpoint>, Verdict> load_agreed(const MpiEnv& env, const fs::path& step_dir,
                                                                h5::FileLocking locking) {
  LoadedCheckpoint lc;
  int code = ok;
  std::string message;
  try {
    lc.step_dir = step_dir;
    lc.manifest = manifest_read(step_dir);
    const Manifest& m = lc.manifest;
    if (m.world_size != env.size() && !m.replicated) {
      code = incompatible;
      message = step_dir.string() + " was saved by " + std::to_string(m.world_size) + " rank(s) and this run has " +
                std::to_string(env.size()) + ": its state is split per rank and is not resharded";
    } else {
      lc.resharded = m.world_size != env.size();
      if (env.rank() < m.world_size) {
        lc.state = checkpoint_file_load(step_dir, m, env.rank(), locking);
        lc.has_rank_state = true;
      }
      if (m.replicated) lc.shared = env.rank() == 0 ? lc.state : checkpoint_file_load(step_dir, m, 0, locking);
    }
  } catch (const std::exception& e) {
    code = damaged;
    message = describe(e);
  }
  Verdict v = agree(env, code, message);
  if (v.code != ok) return {std::nullopt, v};
  return {std::move(lc), v};
}

// Said on both resume paths (a strict PATH and --resume=auto): a reshard changes which file each rank reads.
void log_reshard(const MpiEnv& env, const LoadedCheckpoint& lc) {
  if (!lc.resharded) return;
  log0() << "checkpoint: resharded: " << lc.step_dir.string() << " was saved by " << lc.manifest.world_size
         << " rank(s), this run has " << env.size() << ": replicated state comes from rank 0's file"
         << (env.size() > lc.manifest.world_size ? "; ranks without a file of their own start without per-rank state"
                                                 : "");
}

[[noreturn]] void throw_agreed(const Verdict& v) {
  if (v.code == incompatible)
    throw AgreedError(ExitCode::checkpoint, v.message,
                      "launch with the saved number of ranks, or start fresh with --resume=none", 0);
  throw AgreedError(ExitCode::checkpoint, v.message, kDamagedHint, 0);
}

}  // namespace

const char* save_phase_name(SavePhase phase) {
  switch (phase) {
    case SavePhase::rank_file_written: return "rank_file_written";
    case SavePhase::rank_file_synced: return "rank_file_synced";
    case SavePhase::rank_file_renamed: return "rank_file_renamed";
    case SavePhase::before_agree: return "before_agree";
    case SavePhase::before_manifest: return "before_manifest";
    case SavePhase::manifest_written: return "manifest_written";
    case SavePhase::manifest_synced: return "manifest_synced";
    case SavePhase::manifest_renamed: return "manifest_renamed";
    case SavePhase::before_latest: return "before_latest";
    case SavePhase::latest_written: return "latest_written";
    case SavePhase::latest_synced: return "latest_synced";
    case SavePhase::latest_renamed: return "latest_renamed";
    case SavePhase::before_prune: return "before_prune";
  }
  return "?";
}

SaveResult checkpoint_save(const MpiEnv& env, const SaveRequest& req, const CheckpointState& state) {
  const auto start = std::chrono::steady_clock::now();
  const int rank = env.rank();
  const fs::path dir = clean(req.dir);
  SaveResult res;
  res.step_dir = dir / step_dir_name(req.step);
  const std::string step_name = step_dir_name(req.step);
  auto finish = [&](SaveStatus status, std::string message) {
    res.status = status;
    res.message = std::move(message);
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return res;
  };

  // Host copies before the first collective: after this no CUDA work is left in the save.
  CheckpointState host = state;
  std::string copy_error;
  try {
    for (auto& [name, t] : host.tensors)
      if (t.defined() && !t.is_cpu()) t = t.to(at::kCPU);
  } catch (const std::exception& e) {
    copy_error = e.what();
  }

  // 1. Rank 0 prepares the step directory: refuses a committed one, clears an uncommitted leftover.
  int existing = 0;
  std::string problem;
  if (rank == 0) {
    try {
      fs::create_directories(dir);
      if (fs::exists(res.step_dir / kManifestName)) {
        existing = 1;
      } else {
        remove_tree(res.step_dir);
        fs::create_directory(res.step_dir);
        fsync_dir(dir);
        remove_stale_tmp(dir);
      }
    } catch (const std::exception& e) {
      problem = "cannot prepare " + res.step_dir.string() + ": " + describe(e);
    }
  }
  RANKTUNE_MPI_CHECK(MPI_Bcast(&existing, 1, MPI_INT, 0, env.world()));
  if (existing)
    return finish(SaveStatus::exists, res.step_dir.string() + " is already committed; a committed step is never "
                                                              "overwritten, nothing was written");
  Verdict v = agree(env, problem.empty() ? ok : damaged, problem);
  if (v.code != ok) return finish(SaveStatus::failed, "checkpoint save of step " + std::to_string(req.step) +
                                                          " failed: " + v.message);

  // 2. Every rank writes, commits and checksums its own file.
  const fs::path final_path = res.step_dir / rank_file_name(rank);
  const fs::path tmp_path = final_path.string() + tmp_suffix();
  FileDigest digest;
  problem.clear();
  try {
    if (!copy_error.empty()) throw CheckpointError("device-to-host copy failed: " + copy_error);
    fs::create_directories(res.step_dir);
    checkpoint_file_write(tmp_path, host, RankFileHeader{req.step, rank, env.size(), req.meta.mode, req.meta.topology},
                          req.locking);
    file_commit(tmp_path, final_path,
                phase_hook(req, SavePhase::rank_file_written, SavePhase::rank_file_synced,
                           SavePhase::rank_file_renamed));
    digest = crc32c_file(final_path);
    fire(req, SavePhase::before_agree);
  } catch (const std::exception& e) {
    std::string what = describe(e);
    const std::string tmp_prefix = tmp_path.string() + ": ";  // checkpoint_file_write names the temp file
    if (what.rfind(tmp_prefix, 0) == 0) what.erase(0, tmp_prefix.size());
    problem = final_path.string() + " (rank " + std::to_string(rank) + "): " + what;
    remove_quietly(tmp_path);
  }
  v = agree(env, problem.empty() ? ok : damaged, problem);
  if (v.code != ok) {
    if (rank == 0) remove_quietly(res.step_dir);
    RANKTUNE_MPI_CHECK(MPI_Barrier(env.world()));  // the failed step is gone on every rank's return
    return finish(SaveStatus::failed, "checkpoint save of step " + std::to_string(req.step) + " failed: " + v.message);
  }

  // 3. Rank 0 gathers sizes and checksums, commits the manifest, then moves `latest`, then prunes.
  const unsigned long long mine[2] = {digest.size, digest.crc32c};
  std::vector<unsigned long long> all(rank == 0 ? 2 * static_cast<std::size_t>(env.size()) : 0);
  RANKTUNE_MPI_CHECK(
      MPI_Gather(mine, 2, MPI_UNSIGNED_LONG_LONG, all.data(), 2, MPI_UNSIGNED_LONG_LONG, 0, env.world()));
  int status = static_cast<int>(SaveStatus::committed);
  std::string message;
  unsigned long long bytes = 0;
  std::vector<long> pruned;
  if (rank == 0) {
    Manifest m;
    m.ranktune_version = RANKTUNE_VERSION;
    m.created_utc = now_utc();
    m.step = req.step;
    m.world_size = env.size();
    m.mode = req.meta.mode;
    m.topology = req.meta.topology;
    m.replicated = req.meta.replicated;
    m.config_hash = req.meta.config_hash;
    for (int r = 0; r < env.size(); ++r) {
      const auto i = 2 * static_cast<std::size_t>(r);
      m.files.push_back({rank_file_name(r), r, all[i], static_cast<std::uint32_t>(all[i + 1])});
      bytes += all[i];
    }
    bool latest_moved = false;
    try {
      fire(req, SavePhase::before_manifest);
      file_write_atomic(res.step_dir / kManifestName, manifest_to_json(m),
                        phase_hook(req, SavePhase::manifest_written, SavePhase::manifest_synced,
                                   SavePhase::manifest_renamed));
      fire(req, SavePhase::before_latest);
      file_write_atomic(dir / kLatestName, step_name + "\n",
                        phase_hook(req, SavePhase::latest_written, SavePhase::latest_synced,
                                   SavePhase::latest_renamed, &latest_moved));
    } catch (const std::exception& e) {
      if (latest_moved) {
        // `latest` already names the new step: it stays committed; only the directory fsync is in doubt.
        message = "committed, but " + describe(e);
      } else {
        status = static_cast<int>(SaveStatus::failed);
        message = "checkpoint save of step " + std::to_string(req.step) + " failed: rank 0: " + describe(e);
        try {
          step_delete(res.step_dir);
        } catch (const std::exception&) {
          remove_quietly(res.step_dir);
        }
      }
    }
    if (status == static_cast<int>(SaveStatus::committed) && message.empty()) {
      try {
        fire(req, SavePhase::before_prune);
        pruned = prune(dir, req.keep, req.step);
      } catch (const std::exception& e) {
        message = "committed, but removing old checkpoints (keep " + std::to_string(req.keep) + ") failed: " +
                  describe(e);
      }
    }
  }
  RANKTUNE_MPI_CHECK(MPI_Bcast(&status, 1, MPI_INT, 0, env.world()));
  RANKTUNE_MPI_CHECK(MPI_Bcast(&bytes, 1, MPI_UNSIGNED_LONG_LONG, 0, env.world()));
  bcast_string(message, 0, env.world());
  int npruned = static_cast<int>(pruned.size());
  RANKTUNE_MPI_CHECK(MPI_Bcast(&npruned, 1, MPI_INT, 0, env.world()));
  pruned.resize(static_cast<std::size_t>(npruned));
  if (npruned) RANKTUNE_MPI_CHECK(MPI_Bcast(pruned.data(), npruned, MPI_LONG, 0, env.world()));
  res.bytes = bytes;
  res.pruned = std::move(pruned);
  return finish(static_cast<SaveStatus>(status), std::move(message));
}

LoadedCheckpoint checkpoint_load(const MpiEnv& env, const fs::path& path, h5::FileLocking locking) {
  std::string step_dir, problem;
  if (env.rank() == 0) {
    try {
      step_dir = checkpoint_step_dir(path).string();
    } catch (const std::exception& e) {
      problem = describe(e);
    }
  }
  Verdict v = agree(env, problem.empty() ? ok : damaged, problem);
  if (v.code != ok) throw_agreed(v);
  bcast_string(step_dir, 0, env.world());
  auto [loaded, verdict] = load_agreed(env, step_dir, locking);
  if (!loaded) throw_agreed(verdict);
  log_reshard(env, *loaded);
  return std::move(*loaded);
}

std::optional<LoadedCheckpoint> checkpoint_resume(const MpiEnv& env, const std::string& resume, const fs::path& dir,
                                                  h5::FileLocking locking) {
  if (resume == "none" || resume.empty()) return std::nullopt;
  if (resume != "auto") {
    LoadedCheckpoint lc = checkpoint_load(env, resume, locking);
    log0() << "checkpoint: resuming from " << lc.step_dir.string() << " (step " << lc.manifest.step << ")";
    return lc;
  }

  // Rank 0 decides the candidates, newest first, with `latest`'s choice in front, and tells everyone.
  const fs::path root = clean(dir);
  std::string candidates, latest_note;
  if (env.rank() == 0) {
    std::string latest_name;
    try {
      std::ifstream in(root / kLatestName);
      if (!in) {
        latest_note = (root / kLatestName).string() + " is missing";
      } else {
        std::getline(in, latest_name);
        if (!step_from_dir_name(latest_name)) {
          latest_note = (root / kLatestName).string() + " holds '" + latest_name + "', not a step name";
          latest_name.clear();
        }
      }
      if (!latest_name.empty()) candidates = latest_name + "\n";
      for (const auto& e : steps_list(root))
        if (e.committed && e.path.filename().string() != latest_name) candidates += e.path.filename().string() + "\n";
    } catch (const std::exception& e) {
      latest_note = "cannot list " + root.string() + ": " + describe(e);
    }
  }
  bcast_string(candidates, 0, env.world());
  bcast_string(latest_note, 0, env.world());

  std::vector<std::string> names;
  std::istringstream lines(candidates);
  for (std::string line; std::getline(lines, line);) names.push_back(line);
  if (names.empty()) {
    log0() << "checkpoint: --resume=auto found no committed checkpoint under " << root.string()
           << (latest_note.empty() ? "" : " (" + latest_note + ")") << "; starting fresh";
    return std::nullopt;
  }

  std::vector<std::string> skipped;
  for (std::size_t i = 0; i < names.size(); ++i) {
    auto [loaded, verdict] = load_agreed(env, root / names[i], locking);
    if (loaded) {
      if (!skipped.empty() || !latest_note.empty()) {
        log0() << "WARNING: checkpoint: --resume=auto is NOT resuming from what `latest` names"
               << (latest_note.empty() ? "" : " (" + latest_note + ")") << "; resuming from "
               << loaded->step_dir.string() << " (step " << loaded->manifest.step << ") instead";
      } else {
        log0() << "checkpoint: resuming from " << loaded->step_dir.string() << " (step " << loaded->manifest.step
               << ")";
      }
      log_reshard(env, *loaded);
      return std::move(*loaded);
    }
    if (verdict.code == incompatible) throw_agreed(verdict);
    log0() << "WARNING: checkpoint: --resume=auto skips " << (root / names[i]).string() << ": " << verdict.message;
    skipped.push_back(verdict.message);
  }
  throw AgreedError(ExitCode::checkpoint,
                    "--resume=auto: none of the " + std::to_string(names.size()) + " committed checkpoint(s) under " +
                        root.string() + " verifies; newest problem: " + skipped.front(),
                    kDamagedHint, 0);
}

}  // namespace ranktune

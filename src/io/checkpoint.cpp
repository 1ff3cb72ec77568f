// The commit protocol and resume rules (docs/checkpoint-format.md). Ranks agree on every outcome through host
// collectives; rank 0 alone touches the shared names (the step directory's life, manifest.json, `latest`, pruning)
// and broadcasts what it saw, so ranks on other NFS clients never act on a stale directory listing.
#include "ranktune/io/checkpoint.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "ranktune/core/log.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/host_collectives.h"
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
    "--resume=overwrite starts fresh (moving these checkpoints aside)";

enum Code : int { ok = 0, damaged = 1, incompatible = 2 };

struct Verdict {
  int code = ok;
  std::string message;  // of the first rank with the worst code, prefixed "rank r: " (the rank that found it)
};

// Every rank learns the worst outcome and the message of the first rank that had it.
Verdict agree(const MpiEnv& env, int code, const std::string& message) {
  const host::Outcome worst = host::worst(env, code, message);
  if (worst.code == ok) return {};
  return {worst.code, "rank " + std::to_string(worst.rank) + ": " + worst.message};
}

fs::path clean(const fs::path& p) {
  fs::path n = p.lexically_normal();
  if (!n.has_filename() && n.has_parent_path()) n = n.parent_path();
  return n;
}

std::string utc_text(const char* format) {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

std::string now_utc() { return utc_text("%Y-%m-%dT%H:%M:%SZ"); }

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

// Moves a committed step directory out of the way: renamed to step_N.replaced-<UTC time>[-K]. step_from_dir_name
// refuses that name, so resume and prune never see the directory again, and nothing in it is deleted (it may be
// another run's only copy). Returns the new path; the caller fsyncs `dir` (so that a failed fsync still leaves the
// caller knowing where the step went).
fs::path step_move_aside(const fs::path& dir, const fs::path& step_dir) {
  const std::string base = step_dir.filename().string() + ".replaced-" + utc_text("%Y%m%dT%H%M%SZ");
  fs::path aside = dir / base;
  for (int k = 2; fs::exists(fs::symlink_status(aside)); ++k) aside = dir / (base + "-" + std::to_string(k));
  fs::rename(step_dir, aside);
  return aside;
}

// A save that fails after save_prepare moved a committed step aside puts it back under its own name, so that a
// failed save leaves every committed step where it was. Rank 0 only, after the failed step directory is gone. If the
// rename back fails the step stays intact under its aside name, which the warning gives.
void aside_restore(const fs::path& dir, const fs::path& step_dir, const fs::path& aside) {
  if (aside.empty()) return;
  try {
    remove_tree(step_dir);  // normally gone already; a leftover would make the rename fail
    fs::rename(aside, step_dir);
    fsync_dir(dir);
  } catch (const std::exception& e) {
    log0() << "WARNING: checkpoint: could not put " << aside.string() << " back to " << step_dir.string()
           << " after the failed save: " << e.what() << "; it stays intact under that name";
  }
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

// Keeps `latest` and the keep-1 newest committed steps below it; removes the older rest and every uncommitted step
// directory (leftovers of interrupted saves). Committed steps above `latest` are neither counted nor deleted: they
// were moved aside before (move_aside_newer), and one still here is a stale timeline that must not crowd out the
// fallbacks below `latest`.
std::vector<long> prune(const fs::path& dir, int keep, long latest_step) {
  std::vector<long> removed;
  int kept_others = 0;
  for (const auto& e : steps_list(dir)) {
    if (e.step == latest_step || (e.committed && e.step > latest_step)) continue;
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

// Committed steps newer than the one `latest` now names belong to a timeline this run abandoned when it resumed from
// an earlier step (a newer step that did not verify, or `latest` left behind by a crash between the manifest's and
// `latest`'s renames). Moving them aside keeps `latest` on the newest committed step, so a later fallback never lands
// on a stale step. Returns what was moved, for the save's message.
std::string move_aside_newer(const fs::path& dir, long step) {
  std::string moved;
  for (const auto& e : steps_list(dir)) {
    if (e.step <= step || !e.committed) continue;
    fs::path aside;
    try {
      aside = step_move_aside(dir, e.path);
    } catch (const std::exception& ex) {  // the message must still say where the ones before went
      throw std::runtime_error(std::string(ex.what()) +
                               (moved.empty() ? "" : " (moved aside before it: " + moved + ")"));
    }
    moved += (moved.empty() ? "" : ", ") + e.path.filename().string() + " to " + aside.filename().string();
  }
  if (moved.empty()) return moved;
  fsync_dir(dir);
  return "moved aside the committed step(s) newer than " + step_dir_name(step) + " (an abandoned timeline): " + moved;
}

// Joins the parts of a save's message that are not empty.
std::string message_join(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return a + "; " + b;
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
                      "launch with the saved number of ranks, or start fresh with --resume=overwrite (moves these "
                      "checkpoints aside) or another --checkpoint.dir",
                      0);
  throw AgreedError(ExitCode::checkpoint, v.message, kDamagedHint, 0);
}

// How a save ends: early, from a phase that failed, or after the commit.
struct SaveOutcome {
  SaveStatus status = SaveStatus::committed;
  std::string message;
  std::uint64_t bytes = 0;
  std::vector<long> pruned;
};

// A save that ends before its commit phase: no bytes, nothing pruned.
SaveOutcome save_ended(SaveStatus status, std::string message) {
  SaveOutcome out;
  out.status = status;
  out.message = std::move(message);
  return out;
}

std::string save_failed(long step, const std::string& why) {
  return "checkpoint save of step " + std::to_string(step) + " failed: " + why;
}

// Moves every tensor to the CPU; returns what went wrong, which the write phase reports as this rank's failure.
std::string copy_to_host(CheckpointState& state) {
  try {
    for (auto& [name, t] : state.tensors)
      if (t.defined() && !t.is_cpu()) t = t.to(at::kCPU);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// Phase 1. Rank 0 prepares the step directory: moves a committed one aside and clears an uncommitted leftover. A
// committed step met by a save is one this run's state does not match (a step that did not verify, or one of the
// timeline abandoned by a fallback, or another run's), so the save writes the step anew rather than report a
// success that wrote nothing. Every rank learns the result and `note` (what was moved aside); `aside` is set on rank
// 0 only, for aside_restore. nullopt means go on.
std::optional<SaveOutcome> save_prepare(const MpiEnv& env, const fs::path& dir, const fs::path& step_dir, long step,
                                        std::string& note, fs::path& aside) {
  std::string problem;
  if (env.rank() == 0) {
    try {
      fs::create_directories(dir);
      if (fs::exists(step_dir / kManifestName)) {
        aside = step_move_aside(dir, step_dir);  // made durable by the fsync below, before any rank writes
        note = "moved aside the " + step_dir.filename().string() +
               " committed before (a damaged step or another run's) to " + aside.filename().string() +
               "; written again";
      }
      remove_tree(step_dir);
      fs::create_directory(step_dir);
      fsync_dir(dir);
      remove_stale_tmp(dir);
    } catch (const std::exception& e) {
      problem = "cannot prepare " + step_dir.string() + ": " + describe(e);
    }
  }
  host::broadcast(env, note);
  const Verdict v = agree(env, problem.empty() ? ok : damaged, problem);
  if (v.code == ok) return std::nullopt;
  if (env.rank() == 0) aside_restore(dir, step_dir, aside);  // nothing when nothing was moved: step_dir stays as is
  return save_ended(SaveStatus::failed, save_failed(step, v.message));
}

// Phase 2a, no collective (checkpoint.async runs it on a background thread): this rank writes, commits and
// checksums its own file. Every std::exception becomes `problem`, naming the final file and the rank; anything else
// (a test's CheckpointCrash) escapes.
RankFileWritten rank_file_write(const SaveRequest& req, int rank, int world_size, const fs::path& step_dir,
                                const CheckpointState& state, const std::string& copy_error) {
  const auto start = std::chrono::steady_clock::now();
  const fs::path final_path = step_dir / rank_file_name(rank);
  const fs::path tmp_path = final_path.string() + tmp_suffix();
  RankFileWritten out;
  try {
    fire(req, SavePhase::rank_file_begin);
    if (!copy_error.empty()) throw CheckpointError("device-to-host copy failed: " + copy_error);
    fs::create_directories(step_dir);
    auto lap = [mark = std::chrono::steady_clock::now()]() mutable {
      const auto now = std::chrono::steady_clock::now();
      return std::chrono::duration<double>(now - std::exchange(mark, now)).count();
    };
    checkpoint_file_write(tmp_path, state, RankFileHeader{req.step, rank, world_size, req.meta.mode, req.meta.topology},
                          req.locking);
    out.hdf5_seconds = lap();
    file_commit(tmp_path, final_path,
                phase_hook(req, SavePhase::rank_file_written, SavePhase::rank_file_synced,
                           SavePhase::rank_file_renamed));
    out.commit_seconds = lap();
    out.digest = crc32c_file(final_path);
    out.crc_seconds = lap();
    fire(req, SavePhase::before_agree);
  } catch (const std::exception& e) {
    std::string what = describe(e);
    const std::string tmp_prefix = tmp_path.string() + ": ";  // checkpoint_file_write names the temp file
    if (what.rfind(tmp_prefix, 0) == 0) what.erase(0, tmp_prefix.size());
    out.problem = final_path.string() + " (rank " + std::to_string(rank) + "): " + what;
    remove_quietly(tmp_path);
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

// Phase 2b. The ranks agree on their files. If any rank failed, rank 0 removes the step directory and every rank
// returns after it is gone; nullopt means go on.
std::optional<SaveOutcome> rank_files_agree(const MpiEnv& env, const SaveRequest& req, const fs::path& dir,
                                            const fs::path& step_dir, const fs::path& aside,
                                            const RankFileWritten& written) {
  const Verdict v = agree(env, written.problem.empty() ? ok : damaged, written.problem);
  if (v.code == ok) return std::nullopt;
  if (env.rank() == 0) {
    remove_quietly(step_dir);
    aside_restore(dir, step_dir, aside);
  }
  host::barrier(env);  // the failed step is gone (and a step moved aside is back) on every rank's return
  return save_ended(SaveStatus::failed, save_failed(req.step, v.message));
}

// Rank 0's part of the commit: the manifest from every rank's {size, crc32c}, then `latest`, then the newer steps
// moved aside and pruning. A failure before `latest` moved removes the step (and puts back a step moved aside for
// it); after it, the step stays committed and the message says what failed.
SaveOutcome save_commit_rank0(const MpiEnv& env, const SaveRequest& req, const fs::path& dir, const fs::path& step_dir,
                              const fs::path& aside, const std::vector<std::vector<std::uint64_t>>& digests) {
  SaveOutcome out;
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
    const std::vector<std::uint64_t>& d = digests[static_cast<std::size_t>(r)];
    m.files.push_back({rank_file_name(r), r, d[0], static_cast<std::uint32_t>(d[1])});
    out.bytes += d[0];
  }
  bool latest_moved = false;
  try {
    fire(req, SavePhase::before_manifest);
    file_write_atomic(step_dir / kManifestName, manifest_to_json(m),
                      phase_hook(req, SavePhase::manifest_written, SavePhase::manifest_synced,
                                 SavePhase::manifest_renamed));
    fire(req, SavePhase::before_latest);
    file_write_atomic(dir / kLatestName, step_dir_name(req.step) + "\n",
                      phase_hook(req, SavePhase::latest_written, SavePhase::latest_synced, SavePhase::latest_renamed,
                                 &latest_moved));
  } catch (const std::exception& e) {
    if (latest_moved) {
      // `latest` already names the new step: it stays committed; only the directory fsync is in doubt.
      out.message = "committed, but " + describe(e);
    } else {
      out.status = SaveStatus::failed;
      out.message = save_failed(req.step, "rank 0: " + describe(e));
      try {
        step_delete(step_dir);
      } catch (const std::exception&) {
        remove_quietly(step_dir);
      }
      aside_restore(dir, step_dir, aside);
    }
  }
  if (out.status == SaveStatus::committed && out.message.empty()) {
    std::string newer;
    try {
      fire(req, SavePhase::before_prune);
      newer = move_aside_newer(dir, req.step);
    } catch (const std::exception& e) {
      // Nothing is pruned then: the steps below `latest` are the fallbacks while a stale newer step is still there.
      out.message = "committed, but moving aside the committed steps newer than " + step_dir_name(req.step) +
                    " failed: " + describe(e) + "; nothing pruned";
      return out;
    }
    try {
      out.pruned = prune(dir, req.keep, req.step);
    } catch (const std::exception& e) {
      out.message = "committed, but removing old checkpoints (keep " + std::to_string(req.keep) +
                    ") failed: " + describe(e);
    }
    out.message = message_join(newer, out.message);
  }
  return out;
}

// Phase 3. Rank 0 gathers sizes and checksums and commits; every rank learns its outcome, the total size and the
// pruned steps.
SaveOutcome save_commit(const MpiEnv& env, const SaveRequest& req, const fs::path& dir, const fs::path& step_dir,
                        const fs::path& aside, const FileDigest& digest) {
  const std::vector<std::vector<std::uint64_t>> digests = host::gather(env, {digest.size, digest.crc32c});
  SaveOutcome out;
  if (env.rank() == 0) out = save_commit_rank0(env, req, dir, step_dir, aside, digests);
  std::int64_t status = static_cast<std::int64_t>(out.status);
  std::int64_t bytes = static_cast<std::int64_t>(out.bytes);
  std::vector<std::int64_t> pruned(out.pruned.begin(), out.pruned.end());
  host::broadcast(env, status);
  host::broadcast(env, bytes);
  host::broadcast(env, out.message);
  host::broadcast(env, pruned);
  out.status = static_cast<SaveStatus>(status);
  out.bytes = static_cast<std::uint64_t>(bytes);
  out.pruned.assign(pruned.begin(), pruned.end());
  return out;
}

// The result every rank returns, from where the save ended.
SaveResult save_result(const SavePrepared& p, SaveOutcome outcome, const RankFileWritten& written) {
  SaveResult res;
  res.step_dir = p.step_dir;
  res.status = outcome.status;
  res.message = std::move(outcome.message);
  res.bytes = outcome.bytes;
  res.pruned = std::move(outcome.pruned);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - p.start).count();
  res.stage_seconds = p.stage_seconds;
  res.write_seconds = written.seconds;
  res.write_bytes = written.digest.size;
  res.hdf5_seconds = written.hdf5_seconds;
  res.commit_seconds = written.commit_seconds;
  res.crc_seconds = written.crc_seconds;
  return res;
}

}  // namespace

const char* save_phase_name(SavePhase phase) {
  switch (phase) {
    case SavePhase::rank_file_begin: return "rank_file_begin";
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

SavePrepared checkpoint_save_prepare(const MpiEnv& env, const SaveRequest& req,
                                     std::chrono::steady_clock::time_point start) {
  SavePrepared p;
  p.start = start;
  p.dir = clean(req.dir);
  p.step_dir = p.dir / step_dir_name(req.step);
  if (auto ended = save_prepare(env, p.dir, p.step_dir, req.step, p.note, p.aside))
    p.ended = save_result(p, std::move(*ended), {});
  return p;
}

RankFileWritten checkpoint_rank_file_write(const SaveRequest& req, const SavePrepared& prepared, int rank,
                                           int world_size, const CheckpointState& on_host,
                                           const std::string& copy_error) {
  return rank_file_write(req, rank, world_size, prepared.step_dir, on_host, copy_error);
}

SaveResult checkpoint_save_commit(const MpiEnv& env, const SaveRequest& req, const SavePrepared& prepared,
                                  const RankFileWritten& written) {
  if (prepared.ended) return *prepared.ended;
  if (auto ended = rank_files_agree(env, req, prepared.dir, prepared.step_dir, prepared.aside, written))
    return save_result(prepared, std::move(*ended), written);
  SaveOutcome outcome = save_commit(env, req, prepared.dir, prepared.step_dir, prepared.aside, written.digest);
  if (outcome.status == SaveStatus::committed) outcome.message = message_join(prepared.note, outcome.message);
  return save_result(prepared, std::move(outcome), written);
}

SaveResult checkpoint_save(const MpiEnv& env, const SaveRequest& req, const CheckpointState& state) {
  const auto start = std::chrono::steady_clock::now();
  // Host copies before the first collective: after this no CUDA work is left in the save.
  CheckpointState on_host = state;
  const std::string copy_error = copy_to_host(on_host);
  const double stage_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  SavePrepared prepared = checkpoint_save_prepare(env, req, start);
  prepared.stage_seconds = stage_seconds;
  if (prepared.ended) {
    prepared.ended->stage_seconds = stage_seconds;
    prepared.ended->stall_seconds = prepared.ended->seconds;
    return *prepared.ended;
  }
  const RankFileWritten written =
      checkpoint_rank_file_write(req, prepared, env.rank(), env.size(), on_host, copy_error);
  SaveResult r = checkpoint_save_commit(env, req, prepared, written);
  r.stall_seconds = r.seconds;  // the whole save held training
  return r;
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
  host::broadcast(env, step_dir);
  auto [loaded, verdict] = load_agreed(env, step_dir, locking);
  if (!loaded) throw_agreed(verdict);
  log_reshard(env, *loaded);
  return std::move(*loaded);
}

namespace {

// A fresh start (--resume=none) into a directory that already holds committed checkpoints would mix two runs: the
// new run's saves would replace the old steps one by one and leave the older ones behind as its fallbacks, and an
// export would read whichever came last. Refused, unless the user says --resume=overwrite: every committed step is
// then moved aside (step_move_aside: nothing is deleted) and `latest` removed before the run starts.
void fresh_start(const MpiEnv& env, bool overwrite, const fs::path& root) {
  int code = ok;
  std::string message;
  if (env.rank() == 0) {
    try {
      std::vector<StepEntry> committed;
      for (const auto& e : steps_list(root))
        if (e.committed) committed.push_back(e);
      if (!committed.empty() && !overwrite) {
        code = damaged;
        message = "--resume=none, but " + root.string() + " already holds " + std::to_string(committed.size()) +
                  " committed checkpoint(s) of another run (newest " + committed.front().path.filename().string() +
                  "); starting fresh there would mix the two runs";
      } else if (!committed.empty()) {
        std::string moved;
        for (const auto& e : committed)
          moved += (moved.empty() ? "" : ", ") + e.path.filename().string() + " to " +
                   step_move_aside(root, e.path).filename().string();
        fs::remove(root / kLatestName);
        fsync_dir(root);
        message = "checkpoint: --resume=overwrite: moved aside the committed checkpoint(s) under " + root.string() +
                  ": " + moved + "; starting fresh";
      }
    } catch (const std::exception& e) {
      code = damaged;
      message = "cannot prepare " + root.string() + " for a fresh start: " + describe(e);
    }
  }
  const Verdict v = agree(env, code, message);
  if (v.code != ok)
    throw AgreedError(ExitCode::usage, v.message,
                      "--resume=auto continues that run; --resume=overwrite moves its checkpoints aside and starts "
                      "fresh; or give this run another --checkpoint.dir",
                      0);
  host::broadcast(env, message);
  if (!message.empty()) log0() << message;
}

}  // namespace

std::optional<LoadedCheckpoint> checkpoint_resume(const MpiEnv& env, const std::string& resume, const fs::path& dir,
                                                  h5::FileLocking locking) {
  if (resume == "none" || resume.empty() || resume == "overwrite") {
    fresh_start(env, resume == "overwrite", clean(dir));
    return std::nullopt;
  }
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
  host::broadcast(env, candidates);
  host::broadcast(env, latest_note);

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

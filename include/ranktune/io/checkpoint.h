// defines: checkpoint_save (the commit protocol of docs/checkpoint-format.md), checkpoint_load (verify, then read)
// and checkpoint_resume (--resume=none|auto|PATH). Coordination is over MPI only, and tensors are copied to the host
// before the first collective, so a save never leaves a peer waiting inside an NCCL collective. A failed save is a
// result, never an exception: training goes on.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ranktune/io/checkpoint_state.h"
#include "ranktune/io/crc32c.h"
#include "ranktune/io/h5.h"
#include "ranktune/io/manifest.h"

namespace ranktune {

class MpiEnv;

// What the manifest records about the run that saved.
struct CheckpointMeta {
  std::string mode;      // single | ddp | balanced
  std::string topology;  // free text: hosts, GPUs
  std::uint64_t config_hash = 0;
  // True when rank 0's state holds everything that is not per-rank (DDP: weights and moments replicated, only
  // rank 0 writes them; every rank writes its RNG and cursor). Such a checkpoint loads at another world size.
  bool replicated = false;
};

// Points of a save where tests inject faults. rank_file_* run on every rank, the rest on rank 0 only.
enum class SavePhase {
  rank_file_begin,    // before the temp HDF5 file is created (checkpoint.async: first thing of the background write)
  rank_file_written,  // temp HDF5 file closed, not yet fsynced
  rank_file_synced,   // fsynced, not yet renamed
  rank_file_renamed,  // renamed, directory not yet fsynced
  before_agree,       // checksummed, before the all-reduce of the outcome
  before_manifest,    // every rank succeeded; manifest not yet written
  manifest_written,
  manifest_synced,
  manifest_renamed,  // the step is committed from here on
  before_latest,
  latest_written,
  latest_synced,
  latest_renamed,
  before_prune,
};
const char* save_phase_name(SavePhase phase);
inline constexpr SavePhase kAllSavePhases[] = {SavePhase::rank_file_begin,  SavePhase::rank_file_written,
                                               SavePhase::rank_file_synced, SavePhase::rank_file_renamed,
                                               SavePhase::before_agree,     SavePhase::before_manifest,
                                               SavePhase::manifest_written, SavePhase::manifest_synced,
                                               SavePhase::manifest_renamed, SavePhase::before_latest,
                                               SavePhase::latest_written,   SavePhase::latest_synced,
                                               SavePhase::latest_renamed,   SavePhase::before_prune};

// Thrown by a fault hook to stop the save dead, as SIGKILL would: no cleanup, no further collectives (so only
// meaningful when every rank stops, e.g. at world size 1). Any other exception from the hook is an ordinary failure
// of that phase.
struct CheckpointCrash {
  SavePhase phase;
};
using SaveFaultHook = std::function<void(SavePhase)>;

struct SaveRequest {
  std::filesystem::path dir;  // the checkpoint root: holds step_*/ and `latest`
  long step = 0;
  int keep = 3;  // committed steps kept: `latest` and the keep - 1 newest below it
  h5::FileLocking locking = h5::FileLocking::best_effort;
  CheckpointMeta meta;
  SaveFaultHook fault_hook;  // tests only
};

enum class SaveStatus {
  committed,  // written by this save, verified by checksum, named by `latest`
  failed,     // nothing committed; `latest` and every committed step where they were
};

struct SaveResult {
  SaveStatus status = SaveStatus::failed;
  // The failure (naming rank and file), or what a committed save moved aside and its warnings (pruning); same on
  // every rank.
  std::string message;
  std::filesystem::path step_dir;
  std::uint64_t bytes = 0;  // all rank files together
  double seconds = 0;
  std::vector<long> pruned;  // steps deleted by keep-last-N
  // Where the time went, on this rank: the whole save (`seconds`) held training for `stall_seconds` (all of it in a
  // synchronous save; the host copy and the step directory's preparation in an asynchronous one); staging the state
  // to host memory took `stage_seconds`; writing, fsyncing, renaming and checksumming this rank's file of
  // `write_bytes` took `write_seconds`.
  double stall_seconds = 0;
  double stage_seconds = 0;
  double write_seconds = 0;
  std::uint64_t write_bytes = 0;
  // write_seconds in its phases: the HDF5 file written (tensors, attributes, close), fsync + rename + fsync of the
  // directory, the CRC32C re-read.
  double hdf5_seconds = 0, commit_seconds = 0, crc_seconds = 0;
  bool ok() const { return status == SaveStatus::committed; }
};

// Collective over env's world: every rank calls it with its own state (RNG, cursor at least). Only MPI errors
// (a broken communicator) escape; every I/O failure on any rank comes back as status failed on all ranks.
// A step already committed under this number is not this run's state at that step (it did not verify, or it belongs
// to a timeline abandoned by a fallback, or to another run): it is renamed to step_N.replaced-<UTC time> and the step
// is written anew. Once `latest` names step N, committed steps above N are renamed the same way, and keep-last-N
// counts only the steps below N. Nothing renamed is deleted, and no step listing takes the new names. A failed save
// puts a step it renamed back.
SaveResult checkpoint_save(const MpiEnv& env, const SaveRequest& req, const CheckpointState& state);

// checkpoint_save in three calls, so that the rank files can be written on another thread (checkpoint_async.h) with
// the very same protocol: checkpoint_save_prepare (collective: rank 0 prepares step_N/), checkpoint_rank_file_write
// (no collective, any thread: this rank's file written, fsynced, renamed, checksummed), checkpoint_save_commit
// (collective: agreement on every rank's file, manifest, `latest`, pruning). checkpoint_save is the three in a row.
struct SavePrepared {
  std::chrono::steady_clock::time_point start;  // when the save began (SaveResult::seconds counts from here)
  std::filesystem::path dir, step_dir;
  std::filesystem::path aside;  // rank 0: where a committed step met by this save went, to put it back on failure
  std::string note;             // what was moved aside, for the result's message
  double stage_seconds = 0;
  std::optional<SaveResult> ended;  // the save failed already (step directory not prepared): commit returns this
};
struct RankFileWritten {
  std::string problem;  // empty when the file is committed; else what failed, naming the file and the rank
  FileDigest digest;
  double seconds = 0;
  double hdf5_seconds = 0, commit_seconds = 0, crc_seconds = 0;  // seconds in its phases (SaveResult's)
};
SavePrepared checkpoint_save_prepare(const MpiEnv& env, const SaveRequest& req,
                                     std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now());
// on_host: the state with every tensor in host memory; copy_error: why the copy to the host failed (a failure of
// this rank's file). Faults of `req.fault_hook` at the rank_file_* phases and before_agree fire on the calling thread.
RankFileWritten checkpoint_rank_file_write(const SaveRequest& req, const SavePrepared& prepared, int rank,
                                           int world_size, const CheckpointState& on_host,
                                           const std::string& copy_error = "");
SaveResult checkpoint_save_commit(const MpiEnv& env, const SaveRequest& req, const SavePrepared& prepared,
                                  const RankFileWritten& written);

struct LoadedCheckpoint {
  std::filesystem::path step_dir;
  Manifest manifest;
  // This rank's own file. Empty (has_rank_state false) when the saving run had fewer ranks than this one.
  CheckpointState state;
  bool has_rank_state = false;
  // Rank 0's file, read on every rank when the checkpoint is replicated (on rank 0 it equals `state`); else empty.
  CheckpointState shared;
  bool resharded = false;  // saved at a different world size (replicated only)
};

// Collective. path: a step directory, or a checkpoint root whose `latest` is followed. Every rank verifies the files
// it reads (size, CRC32C, HDF5 structure, Fletcher32 of every chunk) before the verdict is all-reduced; any problem
// is a CheckpointError (exit 5) on every rank naming the file, its rank and the rank that found it. A different world
// size is refused with both numbers unless the checkpoint is replicated.
LoadedCheckpoint checkpoint_load(const MpiEnv& env, const std::filesystem::path& path, h5::FileLocking locking);

// Collective. resume: "none" (nullopt), "auto" (the step `latest` names under dir; if it is missing or does not
// verify, the newest step that does, said loudly; nullopt when dir holds no committed step; CheckpointError when
// committed steps exist but none verifies), or a path for checkpoint_load (strict: no fallback).
std::optional<LoadedCheckpoint> checkpoint_resume(const MpiEnv& env, const std::string& resume,
                                                  const std::filesystem::path& dir, h5::FileLocking locking);

}  // namespace ranktune

// defines: one rank's checkpoint file (rank_00003.h5): writing a CheckpointState into it with the identifying root
// attributes, and reading it back after checking its size and CRC32C against the manifest. Used by the save/resume
// protocol (checkpoint.h) and by the single-process tools (checkpoint_verify.h).
#pragma once

#include <filesystem>
#include <string>

#include "ranktune/io/checkpoint_state.h"
#include "ranktune/io/h5.h"
#include "ranktune/io/manifest.h"

namespace ranktune {

// Written on the root of every rank file next to the state's own attributes (which may not use these names).
// mode and topology repeat the manifest's so that each file read alone (h5py, h5dump) says which run wrote it.
struct RankFileHeader {
  long step = 0;
  int rank = 0;
  int world_size = 1;
  std::string mode;      // single | ddp | balanced
  std::string topology;  // free text: ranks, devices
};

// Throws CheckpointError naming the offending entry when names collide, are malformed or use a reserved name.
void checkpoint_state_validate(const CheckpointState& state);

// Writes a complete file at path (created or truncated) and closes it; nothing is fsynced here. direct_chunks:
// h5::TensorWriteOptions::direct_chunks (false: HDF5's filter pipeline, the reference; bench/checkpoint_write_bench).
void checkpoint_file_write(const std::filesystem::path& path, const CheckpointState& state,
                           const RankFileHeader& header, h5::FileLocking locking, bool direct_chunks = true);

// Reads a file written by checkpoint_file_write: every dataset (so HDF5 verifies every Fletcher32 chunk) and
// every attribute. The root attributes must match `expect`; `mode` and `topology` only where the file has them (files
// written before they existed lack them). Throws CheckpointError naming the file.
CheckpointState checkpoint_file_read(const std::filesystem::path& path, const RankFileHeader& expect,
                                     h5::FileLocking locking);

// The entry of `rank` in the manifest of step_dir: checks the file's size and CRC32C, then checkpoint_file_read.
// Every error names the step directory, the file and its rank.
CheckpointState checkpoint_file_load(const std::filesystem::path& step_dir, const Manifest& manifest, int rank,
                                     h5::FileLocking locking);
// The same checks, reading every dataset but keeping none (peak memory: the largest tensor).
void checkpoint_file_check(const std::filesystem::path& step_dir, const Manifest& manifest, int rank,
                           h5::FileLocking locking);

// A step directory (holds manifest.json), or a checkpoint root whose `latest` names one. Strict: anything missing
// is a CheckpointError naming what is missing.
std::filesystem::path checkpoint_step_dir(const std::filesystem::path& path);

// Reads and parses step_dir/manifest.json and checks that its step matches the directory name.
Manifest manifest_read(const std::filesystem::path& step_dir);

}  // namespace ranktune

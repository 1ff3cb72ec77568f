// defines: Manifest, what `manifest.json` of a checkpoint step says, its JSON form, and the names of the layout
// (step_00000123/, rank_00000.h5). A step is committed exactly when its manifest exists. The manifest lists every
// rank file with its size and CRC32C and carries a CRC32C of its own content, so a changed byte anywhere in a
// checkpoint is caught before any tensor is used.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ranktune {

inline constexpr int kCheckpointFormatVersion = 1;
inline constexpr const char* kManifestName = "manifest.json";
inline constexpr const char* kLatestName = "latest";

struct ManifestFile {
  std::string name;  // "rank_00003.h5", relative to the step directory
  int rank = 0;
  std::uint64_t size = 0;
  std::uint32_t crc32c = 0;
};

struct Manifest {
  int format_version = kCheckpointFormatVersion;
  std::string ranktune_version;
  std::string created_utc;  // ISO 8601, informational
  long step = 0;
  int world_size = 1;
  std::string mode;         // the parallel mode that wrote it: single | ddp | balanced
  std::string topology;     // free text from the writer (hosts, GPUs)
  bool replicated = false;  // rank 0's file holds all non-per-rank state: loadable at another world size
  std::uint64_t config_hash = 0;
  std::vector<ManifestFile> files;  // one per rank, in rank order
};

std::string manifest_to_json(const Manifest& m);

// Throws CheckpointError naming `origin` on malformed JSON, a self-checksum mismatch, a missing or mistyped field,
// a format version newer than this build reads, or a file list that is not exactly rank_00000.h5 ..
// rank_<world_size-1>.h5.
Manifest manifest_from_json(std::string_view text, const std::string& origin);

std::string step_dir_name(long step);                           // "step_00000123"
std::optional<long> step_from_dir_name(std::string_view name);  // nullopt unless "step_" + digits
std::string rank_file_name(int rank);                           // "rank_00000.h5"

}  // namespace ranktune

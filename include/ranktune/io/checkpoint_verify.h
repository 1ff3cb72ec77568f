// defines: checkpoint_verify and checkpoint_inspect, the single-process tools behind `ranktune checkpoint
// verify|inspect PATH`. Every file of a step is checked (manifest, sizes, CRC32C, HDF5 structure, Fletcher32 of every
// chunk) whatever the world size that wrote it; no MPI involved.
#pragma once

#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ranktune/io/h5.h"
#include "ranktune/io/manifest.h"

namespace ranktune {

struct VerifyReport {
  std::filesystem::path step_dir;  // empty when PATH could not be resolved to a step
  std::optional<Manifest> manifest;
  std::vector<std::string> problems;  // each names the file and its rank
  std::set<int> failed_ranks;         // ranks whose file failed; inspect does not parse those
  bool ok() const { return problems.empty(); }
};

// PATH: a step directory or a checkpoint root (its `latest` is followed). Never throws for a damaged checkpoint:
// damage is reported in problems.
VerifyReport checkpoint_verify(const std::filesystem::path& path, h5::FileLocking locking);
std::string verify_report_text(const VerifyReport& report);

// A human-readable summary of a verified checkpoint: manifest fields, every rank file's attributes, tensors
// (dtype, shape, bytes) and blobs, then the verdict of the report. A file that failed verification (missing, size,
// CRC32C) is not parsed, since HDF5 can crash on a damaged file's metadata; the verdict names its problem.
std::string checkpoint_inspect(const VerifyReport& report, h5::FileLocking locking);

}  // namespace ranktune

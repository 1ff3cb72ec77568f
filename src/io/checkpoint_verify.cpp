// verify reads every byte of every rank file; inspect adds metadata listings read straight from the HDF5 files.
#include "ranktune/io/checkpoint_verify.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <optional>
#include <sstream>

#include "ranktune/core/error.h"
#include "ranktune/core/text.h"
#include "ranktune/io/checkpoint_file.h"

namespace ranktune {
namespace fs = std::filesystem;
namespace {

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string string_preview(const std::string& v) {
  const auto lines = 1 + std::count(v.begin(), v.end(), '\n');
  if (v.size() <= 60 && lines == 1) return "\"" + v + "\"";
  return "(" + std::to_string(v.size()) + " chars, " + std::to_string(lines) + " lines)";
}

// The run's configuration (`config`, INI text) in full, indented: it is what a reader of a stray checkpoint needs.
void print_config(std::ostringstream& os, const std::string& text) {
  os << "  config:\n";
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) os << (line.empty() ? "" : "    ") << line << '\n';
}

// shown_config: the `config` text already printed for an earlier file; a file with the same text says so instead.
void describe_file(std::ostringstream& os, const fs::path& path, int rank, h5::FileLocking locking,
                   std::optional<std::string>& shown_config) {
  os << path.filename().string() << " (rank " << rank << "):\n";
  try {
    h5::File f = h5::file_open(path.string(), locking);
    const hid_t root = f.get();
    os << "  attributes:\n";
    std::optional<std::string> config;
    for (const auto& name : h5::attr_names(root)) {
      os << "    " << name << " = ";
      switch (h5::attr_kind(root, name)) {
        case h5::AttrKind::string: {
          std::string value = h5::attr_read_string(root, name);
          os << string_preview(value);
          if (name == "config") config = std::move(value);
          break;
        }
        case h5::AttrKind::integer: os << h5::attr_read_int(root, name); break;
        default: os << "(other)";
      }
      os << '\n';
    }
    if (config && config == shown_config) {
      os << "  config: as above\n";
    } else if (config) {
      print_config(os, *config);
      shown_config = *config;
    }
    std::ostringstream tensors, blobs;
    std::uint64_t tensor_bytes = 0, blob_bytes = 0;
    int ntensors = 0, nblobs = 0;
    for (const auto& p : h5::datasets_list(root)) {
      const h5::TensorInfo info = h5::tensor_info(root, p);
      if (info.dtype == "bytes") {
        ++nblobs;
        blob_bytes += info.bytes;
        blobs << "    " << h5::dotted_from_path(p) << "  " << info.bytes << " bytes\n";
      } else {
        ++ntensors;
        tensor_bytes += info.bytes;
        tensors << "    " << h5::dotted_from_path(p) << "  " << info.dtype << "  " << shape_text(info.shape) << "  "
                << format_bytes_scaled(info.bytes) << (info.fletcher32 ? "" : "  (no chunk checksum)") << '\n';
      }
    }
    os << "  tensors: " << ntensors << " (" << format_bytes_scaled(tensor_bytes) << ")\n" << tensors.str();
    os << "  blobs: " << nblobs << " (" << format_bytes_scaled(blob_bytes) << ")\n" << blobs.str();
    h5::file_close(f);
  } catch (const std::exception& e) {
    os << "  unreadable: " << e.what() << '\n';
  }
}

}  // namespace

VerifyReport checkpoint_verify(const fs::path& path, h5::FileLocking locking) {
  VerifyReport r;
  try {
    r.step_dir = checkpoint_step_dir(path);
    r.manifest = manifest_read(r.step_dir);
  } catch (const std::exception& e) {
    r.problems.push_back(e.what());
    return r;
  }
  for (int rank = 0; rank < r.manifest->world_size; ++rank) {
    try {
      checkpoint_file_check(r.step_dir, *r.manifest, rank, locking);
    } catch (const std::exception& e) {
      r.problems.push_back(e.what());
      r.failed_ranks.insert(rank);
    }
  }
  return r;
}

std::string verify_report_text(const VerifyReport& r) {
  std::ostringstream os;
  const std::string where = r.step_dir.empty() ? std::string("checkpoint") : "checkpoint " + r.step_dir.string();
  if (r.ok()) {
    std::uint64_t bytes = 0;
    for (const auto& f : r.manifest->files) bytes += f.size;
    os << where << ": ok (step " << r.manifest->step << ", " << r.manifest->files.size() << " file(s), "
       << format_bytes_scaled(bytes) << ", every checksum verified)\n";
  } else {
    os << where << ": FAILED, " << r.problems.size() << " problem(s):\n";
    for (const auto& p : r.problems) os << "  - " << p << '\n';
  }
  return os.str();
}

std::string checkpoint_inspect(const VerifyReport& r, h5::FileLocking locking) {
  std::ostringstream os;
  if (r.manifest) {
    const Manifest& m = *r.manifest;
    char hash[24];
    std::snprintf(hash, sizeof hash, "0x%016" PRIx64, m.config_hash);
    os << "checkpoint " << r.step_dir.string() << "\n"
       << "  step         " << m.step << "\n"
       << "  world size   " << m.world_size << " (" << (m.mode.empty() ? "?" : m.mode)
       << (m.replicated ? ", replicated: loadable at another world size" : ", per-rank state") << ")\n"
       << "  format       " << m.format_version << ", written by ranktune " << m.ranktune_version << " at "
       << m.created_utc << "\n"
       << "  config hash  " << hash << "\n"
       << "  topology     " << (m.topology.empty() ? "-" : m.topology) << "\n"
       << "  files\n";
    for (const auto& f : m.files) {
      char crc[16];
      std::snprintf(crc, sizeof crc, "%08" PRIx32, f.crc32c);
      os << "    " << f.name << "  rank " << f.rank << "  " << f.size << " bytes  crc32c " << crc << "\n";
    }
    std::optional<std::string> shown_config;
    for (const auto& f : m.files) {
      if (r.failed_ranks.count(f.rank)) {
        os << f.name << " (rank " << f.rank << "): not parsed, it failed verification (below)\n";
        continue;
      }
      describe_file(os, r.step_dir / f.name, f.rank, locking, shown_config);
    }
  }
  os << verify_report_text(r);
  return os.str();
}

}  // namespace ranktune

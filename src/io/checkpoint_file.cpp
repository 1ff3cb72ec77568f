// One rank file: root attributes identify it (format, version, step, rank, world size, mode, topology), datasets hold
// tensors and blobs at the group paths of their dotted names.
#include "ranktune/io/checkpoint_file.h"

#include <ATen/ATen.h>

#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "ranktune/core/error.h"
#include "ranktune/io/crc32c.h"
#include "ranktune/io/durable_file.h"
#include "ranktune/version.h"

namespace ranktune {
namespace {

constexpr const char* kFormatName = "ranktune-checkpoint";
const std::set<std::string> kReservedAttrs = {"format",     "format_version", "ranktune_version", "step", "rank",
                                              "world_size", "mode",           "topology"};
constexpr const char* kReservedGroup = "_types";  // h5.h keeps the committed bfloat16 type there

std::string hex32(std::uint32_t v) {
  std::ostringstream os;
  os << std::hex;
  os.width(8);
  os.fill('0');
  os << v;
  return os.str();
}

void require_attr(hid_t root, const char* name, std::int64_t want) {
  const std::int64_t got = h5::attr_read_int(root, name);
  if (got != want)
    throw CheckpointError(std::string("root attribute ") + name + " is " + std::to_string(got) + ", expected " +
                          std::to_string(want));
}

// Optional: files of format version 1 written before `mode` and `topology` existed lack them and still load.
void require_text_attr_if_present(hid_t root, const char* name, const std::string& want) {
  if (!h5::attr_exists(root, name)) return;
  const std::string got = h5::attr_read_string(root, name);
  if (got != want)
    throw CheckpointError(std::string("root attribute ") + name + " is '" + got + "', expected '" + want + "'");
}

CheckpointState read_impl(const std::filesystem::path& path, const RankFileHeader& expect, h5::FileLocking locking,
                          bool keep = true) {
  h5::File f = h5::file_open(path.string(), locking);
  const hid_t root = f.get();
  if (!h5::attr_exists(root, "format") || h5::attr_read_string(root, "format") != kFormatName)
    throw CheckpointError("not a ranktune checkpoint file (root attribute format is missing or wrong)");
  const std::int64_t version = h5::attr_read_int(root, "format_version");
  if (version < 1 || version > kCheckpointFormatVersion)
    throw CheckpointError("format version " + std::to_string(version) + " is not readable by this build");
  require_attr(root, "step", expect.step);
  require_attr(root, "rank", expect.rank);
  require_attr(root, "world_size", expect.world_size);
  require_text_attr_if_present(root, "mode", expect.mode);
  require_text_attr_if_present(root, "topology", expect.topology);

  CheckpointState s;
  for (const auto& name : h5::attr_names(root)) {
    if (kReservedAttrs.count(name)) continue;
    switch (h5::attr_kind(root, name)) {
      case h5::AttrKind::string: s.strings[name] = h5::attr_read_string(root, name); break;
      case h5::AttrKind::integer: s.ints[name] = h5::attr_read_int(root, name); break;
      default: throw CheckpointError("root attribute '" + name + "' is neither a string nor an integer");
    }
  }
  for (const auto& path_in_file : h5::datasets_list(root)) {
    const std::string name = h5::dotted_from_path(path_in_file);
    if (h5::tensor_info(root, path_in_file).dtype == "bytes") {
      auto blob = h5::bytes_read(root, path_in_file);
      if (keep) s.blobs[name] = std::move(blob);
    } else {
      at::Tensor t = h5::tensor_read(root, path_in_file);
      if (keep) s.tensors[name] = std::move(t);
    }
  }
  h5::file_close(f);
  return s;
}

// Runs fn; any error becomes a CheckpointError starting with `prefix: ` (hints kept).
template <class F>
auto named(const std::string& prefix, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error& e) {
    throw CheckpointError(prefix + ": " + e.what(), e.hint());
  } catch (const std::exception& e) {
    throw CheckpointError(prefix + ": " + e.what());
  }
}

}  // namespace

std::vector<std::uint8_t> checkpoint_blob(const at::Tensor& byte_tensor) {
  if (byte_tensor.scalar_type() != at::kByte)
    throw CheckpointError(std::string("a blob must be a uint8 tensor, got ") +
                          c10::toString(byte_tensor.scalar_type()));
  const at::Tensor t = byte_tensor.to(at::kCPU).contiguous();
  const auto* p = t.data_ptr<std::uint8_t>();
  return std::vector<std::uint8_t>(p, p + t.numel());
}

at::Tensor checkpoint_blob_tensor(const std::vector<std::uint8_t>& blob) {
  at::Tensor t = at::empty({static_cast<std::int64_t>(blob.size())}, at::TensorOptions().dtype(at::kByte));
  if (!blob.empty()) std::memcpy(t.data_ptr(), blob.data(), blob.size());
  return t;
}

void checkpoint_state_validate(const CheckpointState& state) {
  std::set<std::string> names;
  auto add = [&](const std::string& name, const char* kind) {
    try {
      h5::path_from_dotted(name);
    } catch (const h5::H5Error& e) {
      throw CheckpointError(std::string(kind) + " " + e.what());
    }
    if (name == kReservedGroup || name.rfind(std::string(kReservedGroup) + ".", 0) == 0)
      throw CheckpointError(std::string(kind) + " '" + name + "': names under '" + kReservedGroup + "' are reserved");
    if (!names.insert(name).second) throw CheckpointError("'" + name + "' is both a tensor and a blob");
  };
  for (const auto& [name, t] : state.tensors) {
    add(name, "tensor");
    if (!t.defined()) throw CheckpointError("tensor '" + name + "' is undefined");
    try {
      h5::dtype_name(t.scalar_type());
    } catch (const h5::H5Error& e) {
      throw CheckpointError("tensor '" + name + "': " + e.what());
    }
  }
  for (const auto& entry : state.blobs) add(entry.first, "blob");
  for (const auto& name : names)
    for (auto dot = name.find('.'); dot != std::string::npos; dot = name.find('.', dot + 1))
      if (names.count(name.substr(0, dot)))
        throw CheckpointError("'" + name.substr(0, dot) + "' cannot hold data and also be the group of '" + name + "'");
  for (const auto& [name, v] : state.strings)
    if (name.empty() || kReservedAttrs.count(name) || state.ints.count(name))
      throw CheckpointError("string attribute '" + name + "': empty, reserved or also an integer attribute");
  for (const auto& [name, v] : state.ints)
    if (name.empty() || kReservedAttrs.count(name))
      throw CheckpointError("integer attribute '" + name + "': empty or reserved");
}

void checkpoint_file_write(const std::filesystem::path& path, const CheckpointState& state,
                           const RankFileHeader& header, h5::FileLocking locking, bool direct_chunks) {
  named(path.string(), [&] {
    checkpoint_state_validate(state);
    h5::File f = h5::file_create(path.string(), locking);
    const hid_t root = f.get();
    h5::attr_write_string(root, "format", kFormatName);
    h5::attr_write_int(root, "format_version", kCheckpointFormatVersion);
    h5::attr_write_string(root, "ranktune_version", RANKTUNE_VERSION);
    h5::attr_write_int(root, "step", header.step);
    h5::attr_write_int(root, "rank", header.rank);
    h5::attr_write_int(root, "world_size", header.world_size);
    h5::attr_write_string(root, "mode", header.mode);
    h5::attr_write_string(root, "topology", header.topology);
    for (const auto& [name, value] : state.strings) h5::attr_write_string(root, name, value);
    for (const auto& [name, value] : state.ints) h5::attr_write_int(root, name, value);
    // Streams the tensors to the disk while they are written (see FileWriteback): the commit's fsync then has
    // little left, instead of the whole file at page-cache write-back speed.
    FileWriteback writeback(path);
    h5::TensorWriteOptions opts;
    opts.after_write = [&writeback] { writeback.advance(); };
    opts.direct_chunks = direct_chunks;
    std::vector<std::uint8_t> scratch;  // the direct writer's buffer, for every tensor of this file
    opts.scratch = &scratch;
    for (const auto& [name, t] : state.tensors) h5::tensor_write(root, h5::path_from_dotted(name), t, opts);
    for (const auto& [name, b] : state.blobs)
      h5::bytes_write(root, h5::path_from_dotted(name), b.data(), b.size(), opts);
    h5::file_close(f);
  });
}

CheckpointState checkpoint_file_read(const std::filesystem::path& path, const RankFileHeader& expect,
                                     h5::FileLocking locking) {
  return named(path.string(), [&] { return read_impl(path, expect, locking); });
}

namespace {

CheckpointState load_impl(const std::filesystem::path& step_dir, const Manifest& manifest, int rank,
                          h5::FileLocking locking, bool keep) {
  const ManifestFile& entry = manifest.files.at(static_cast<std::size_t>(rank));
  const std::filesystem::path path = step_dir / entry.name;
  return named("checkpoint file " + path.string() + " (rank " + std::to_string(rank) + ")", [&] {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) throw CheckpointError("missing (the manifest lists it)");
    const FileDigest d = crc32c_file(path);
    if (d.size != entry.size)
      throw CheckpointError("size " + std::to_string(d.size) + " bytes differs from the manifest's " +
                            std::to_string(entry.size) + " (truncated or replaced)");
    if (d.crc32c != entry.crc32c)
      throw CheckpointError("crc32c " + hex32(d.crc32c) + " differs from the manifest's " + hex32(entry.crc32c) +
                            ": the file is damaged");
    return read_impl(path, RankFileHeader{manifest.step, rank, manifest.world_size, manifest.mode, manifest.topology},
                     locking, keep);
  });
}

}  // namespace

CheckpointState checkpoint_file_load(const std::filesystem::path& step_dir, const Manifest& manifest, int rank,
                                     h5::FileLocking locking) {
  return load_impl(step_dir, manifest, rank, locking, true);
}

void checkpoint_file_check(const std::filesystem::path& step_dir, const Manifest& manifest, int rank,
                           h5::FileLocking locking) {
  load_impl(step_dir, manifest, rank, locking, false);
}

std::filesystem::path checkpoint_step_dir(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  fs::path p = path.lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();
  std::error_code ec;
  if (!fs::exists(p, ec)) throw CheckpointError("checkpoint path " + p.string() + " does not exist");
  if (fs::exists(p / kManifestName, ec)) return p;
  if (fs::exists(p / kLatestName, ec)) {
    std::ifstream in(p / kLatestName);
    std::string name;
    std::getline(in, name);
    if (!step_from_dir_name(name))
      throw CheckpointError((p / kLatestName).string() + " does not name a step directory (holds '" + name + "')");
    return p / name;
  }
  if (step_from_dir_name(p.filename().string()))
    throw CheckpointError((p / kManifestName).string() +
                          " is missing: the step was never committed (an interrupted "
                          "save) or the manifest was deleted");
  throw CheckpointError(p.string() +
                        " holds neither a manifest.json (a step directory) nor a `latest` file "
                        "(a checkpoint root)");
}

Manifest manifest_read(const std::filesystem::path& step_dir) {
  const std::filesystem::path path = step_dir / kManifestName;
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw CheckpointError(path.string() +
                          " is missing: the step was never committed (an interrupted save) or the "
                          "manifest was deleted");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw CheckpointError(path.string() + ": read error");
  Manifest m = manifest_from_json(text.str(), path.string());
  const auto dir_step = step_from_dir_name(step_dir.filename().string());
  if (dir_step && *dir_step != m.step)
    throw CheckpointError(path.string() + ": says step " + std::to_string(m.step) + " but the directory is " +
                          step_dir.filename().string());
  return m;
}

}  // namespace ranktune

#include "ranktune/model/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "ranktune/core/error.h"

namespace ranktune {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors stores little-endian data");

constexpr std::uint64_t kMaxHeaderBytes = 100u << 20;  // the python library's limit too
const char* const kHintDamaged = "the file is damaged or truncated: re-download or re-export it";

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  std::size_t bytes;
};

// Widest first, in the order the python writer sorts them.
constexpr DtypeInfo kDtypes[] = {
    {"U64", at::kUInt64, 8}, {"I64", at::kLong, 8},  {"F64", at::kDouble, 8},    {"F32", at::kFloat, 4},
    {"U32", at::kUInt32, 4}, {"I32", at::kInt, 4},   {"BF16", at::kBFloat16, 2}, {"F16", at::kHalf, 2},
    {"U16", at::kUInt16, 2}, {"I16", at::kShort, 2}, {"I8", at::kChar, 1},       {"U8", at::kByte, 1},
    {"BOOL", at::kBool, 1},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const DtypeInfo& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const DtypeInfo& dtype_by_type(at::ScalarType t, const std::string& tensor) {
  for (const DtypeInfo& d : kDtypes) {
    if (d.type == t) return d;
  }
  throw CheckpointError("tensor " + tensor + " has dtype " + std::string(c10::toString(t)) +
                        " which safetensors cannot store");
}

std::size_t dtype_rank(at::ScalarType t) {
  for (std::size_t i = 0; i < std::size(kDtypes); ++i) {
    if (kDtypes[i].type == t) return i;
  }
  return std::size(kDtypes);
}

[[noreturn]] void damaged(const std::string& path, const std::string& what) {
  throw CheckpointError("safetensors file " + path + ": " + what, kHintDamaged);
}

std::string errno_text() { return std::strerror(errno); }

void write_all(int fd, const void* data, std::size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw CheckpointError("cannot write " + path + ": " + errno_text(), "check free space and permissions");
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

}  // namespace

const char* safetensors_dtype_name(at::ScalarType t) { return dtype_by_type(t, "?").name; }

struct SafetensorsFile::Mapping {
  void* base = MAP_FAILED;
  std::size_t size = 0;
  std::uint64_t data_offset = 0;  // 8 + header length
  ~Mapping() {
    if (base != MAP_FAILED) ::munmap(base, size);
  }
};

SafetensorsFile::SafetensorsFile(std::string path) : path_(std::move(path)), map_(std::make_shared<Mapping>()) {
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw CheckpointError("cannot open safetensors file " + path_ + ": " + errno_text(),
                          "check --model.path and the file's permissions");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string err = errno_text();
    ::close(fd);
    throw CheckpointError("cannot stat " + path_ + ": " + err);
  }
  const auto file_size = static_cast<std::uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    damaged(path_, "only " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");
  }
  // Private, writable pages: a caller writing into a returned tensor gets a copy and never changes the file.
  map_->base = ::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const std::string map_err = errno_text();
  ::close(fd);
  if (map_->base == MAP_FAILED) throw CheckpointError("cannot mmap " + path_ + ": " + map_err);
  map_->size = file_size;
  const auto* bytes = static_cast<const unsigned char*>(map_->base);

  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);
  if (header_len > kMaxHeaderBytes) {
    damaged(path_,
            "header length " + std::to_string(header_len) + " exceeds the 100 MiB limit (not a safetensors file?)");
  }
  if (8 + header_len > file_size) {
    damaged(path_, "header of " + std::to_string(header_len) + " bytes runs past the end of the " +
                       std::to_string(file_size) + "-byte file");
  }
  map_->data_offset = 8 + header_len;
  const std::uint64_t data_size = file_size - 8 - header_len;
  const std::string_view header(reinterpret_cast<const char*>(bytes + 8), header_len);

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception& e) {
    damaged(path_, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object()) damaged(path_, "header is not a JSON object");

  for (const auto& [name, value] : j.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) damaged(path_, "__metadata__ is not an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) damaged(path_, "__metadata__ value \"" + k + "\" is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor " + name;
    if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") || !value.contains("data_offsets")) {
      damaged(path_, where + ": entry lacks dtype, shape or data_offsets");
    }
    const auto& jd = value.at("dtype");
    const DtypeInfo* dt = jd.is_string() ? dtype_by_name(jd.get<std::string>()) : nullptr;
    if (!dt) damaged(path_, where + ": unsupported dtype " + jd.dump());
    SafetensorsEntry e{name, dt->type, {}, 0, 0};
    // Saturates above the file size so that a huge lying shape cannot overflow; it then mismatches below.
    unsigned __int128 nbytes = dt->bytes;
    for (const auto& dim : value.at("shape")) {
      if (!dim.is_number_unsigned())
        damaged(path_, where + ": shape " + value.at("shape").dump() + " is not a list of sizes");
      const std::uint64_t d = dim.get<std::uint64_t>();
      if (d > static_cast<std::uint64_t>(INT64_MAX))
        damaged(path_, where + ": dimension " + std::to_string(d) + " too large");
      e.shape.push_back(static_cast<std::int64_t>(d));
      nbytes = std::min<unsigned __int128>(nbytes * d, static_cast<unsigned __int128>(file_size) + 1);
    }
    const auto& off = value.at("data_offsets");
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      damaged(path_, where + ": data_offsets " + off.dump() + " is not a pair of offsets");
    }
    e.begin = off[0].get<std::uint64_t>();
    e.end = off[1].get<std::uint64_t>();
    if (e.end < e.begin) damaged(path_, where + ": data_offsets " + off.dump() + " end before they begin");
    if (e.end > data_size) {
      damaged(path_, where + ": bytes [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                         ") lie past the end of the data section (" + std::to_string(data_size) +
                         " bytes): the file is truncated");
    }
    if (nbytes != e.end - e.begin) {
      const std::string need = nbytes > file_size ? std::string("more bytes than the file holds")
                                                  : std::to_string(static_cast<std::uint64_t>(nbytes)) + " bytes";
      damaged(path_, where + ": shape " + value.at("shape").dump() + " of " + dt->name + " needs " + need +
                         " but data_offsets " + off.dump() + " give " + std::to_string(e.end - e.begin));
    }
    entries_.push_back(std::move(e));
  }
  std::sort(entries_.begin(), entries_.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t expected = 0;
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    const SafetensorsEntry& e = entries_[i];
    if (e.begin != expected) {
      damaged(path_, "tensor " + e.name + " starts at byte " + std::to_string(e.begin) +
                         " of the data section, expected " + std::to_string(expected) +
                         (e.begin < expected ? " (it overlaps the previous tensor)" : " (a gap)"));
    }
    expected = e.end;
    index_.emplace(e.name, i);
  }
  if (expected != data_size) {
    damaged(path_, std::to_string(data_size - expected) + " bytes follow the last tensor" +
                       (entries_.empty() ? std::string() : " (" + entries_.back().name + ")"));
  }
}

const SafetensorsEntry* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

at::Tensor SafetensorsFile::tensor(std::string_view name) const {
  const SafetensorsEntry* e = find(name);
  if (!e) throw CheckpointError("safetensors file " + path_ + " has no tensor " + std::string(name));
  char* data = static_cast<char*>(map_->base) + map_->data_offset + e->begin;
  const auto options = at::TensorOptions().dtype(e->dtype).device(at::kCPU);
  const std::size_t elem = at::elementSize(e->dtype);
  if (reinterpret_cast<std::uintptr_t>(data) % elem != 0) {
    // Writers need not align tensors; vectorised kernels may assume it, so unaligned data gets its own buffer.
    at::Tensor t = at::empty(e->shape, options);
    std::memcpy(t.data_ptr(), data, e->end - e->begin);
    return t;
  }
  std::shared_ptr<Mapping> keep = map_;
  return at::from_blob(
      data, e->shape, [keep](void*) {}, options);
}

void safetensors_save(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, at::Tensor>> items;
  items.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) throw CheckpointError("cannot save tensor " + name + " to " + path + ": it is undefined");
    dtype_by_type(t.scalar_type(), name);
    items.emplace_back(name, t.to(at::kCPU).contiguous());
  }
  std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
    const std::size_t ra = dtype_rank(a.second.scalar_type()), rb = dtype_rank(b.second.scalar_type());
    return ra != rb ? ra < rb : a.first < b.first;
  });
  for (std::size_t i = 1; i < items.size(); ++i) {
    if (items[i].first == items[i - 1].first) {
      throw CheckpointError("cannot save " + path + ": tensor name " + items[i].first + " given twice");
    }
  }

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  std::uint64_t offset = 0;
  for (const auto& [name, t] : items) {
    const std::uint64_t n = static_cast<std::uint64_t>(t.nbytes());
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = safetensors_dtype_name(t.scalar_type());
    entry["shape"] = t.sizes().vec();
    entry["data_offsets"] = {offset, offset + n};
    header[name] = entry;
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  const std::uint64_t header_len = text.size();

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    throw CheckpointError("cannot create " + tmp + ": " + errno_text(), "check the directory exists and is writable");
  try {
    write_all(fd, &header_len, 8, tmp);
    write_all(fd, text.data(), text.size(), tmp);
    for (const auto& [name, t] : items) write_all(fd, t.data_ptr(), t.nbytes(), tmp);
    if (::fsync(fd) != 0) throw CheckpointError("fsync of " + tmp + " failed: " + errno_text());
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw CheckpointError("close of " + tmp + " failed: " + errno_text());
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = errno_text();
    ::unlink(tmp.c_str());
    throw CheckpointError("cannot rename " + tmp + " to " + path + ": " + err);
  }
  const std::filesystem::path dir = std::filesystem::absolute(path).parent_path();
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {  // best effort: some filesystems refuse fsync on a directory
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace ranktune

// The checksum header in the user block of a token dataset file: written after HDF5 has closed the file, checked
// with plain reads before HDF5 opens it, since HDF5 can crash or hang (not fail) on one flipped bit of its metadata.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <system_error>
#include <vector>

#include "ranktune/data/data_error.h"
#include "ranktune/io/crc32c.h"
#include "ranktune/io/token_dataset.h"

namespace ranktune {
namespace {

constexpr char kMagic[16] = {'r', 'a', 'n', 'k', 't', 'u', 'n', 'e', '-', 't', 'o', 'k', 'e', 'n', 's', '\n'};
constexpr unsigned char kHdf5Signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
constexpr std::uint32_t kHeaderVersion = 1;
// Offsets in the header: magic, version (u32), user block size (u32), file size (u64), CRC32C (u32); little-endian.
constexpr std::size_t kVersionAt = 16, kBlockAt = 20, kSizeAt = 24, kCrcAt = 32;

constexpr const char* kDamagedHint =
    "re-run `ranktune prepare` to write it again (or point --data.path at the source text)";

using Header = std::array<unsigned char, kTokenDatasetUserBlock>;

template <class T>
T get_le(const Header& h, std::size_t at) {
  T v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(static_cast<T>(h[at + i]) << (8 * i));
  return v;
}

template <class T>
void put_le(Header& h, std::size_t at, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i) h[at + i] = static_cast<unsigned char>(v >> (8 * i));
}

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08" PRIx32, v);
  return buf;
}

// An open descriptor, closed on every path out.
class Fd {
 public:
  Fd(const std::string& path, int flags) : fd_(::open(path.c_str(), flags | O_CLOEXEC)), path_(path) {
    if (fd_ < 0) fail("cannot open");
  }
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  [[noreturn]] void fail(const char* verb) const {
    throw std::system_error(errno, std::generic_category(), std::string(verb) + " '" + path_ + "'");
  }
  // Fills buf from `offset` unless the file ends first; returns the bytes read.
  std::size_t pread_full(void* buf, std::size_t n, std::uint64_t offset) const {
    std::size_t got = 0;
    while (got < n) {
      const ssize_t r = ::pread(fd_, static_cast<char*>(buf) + got, n - got, static_cast<off_t>(offset + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail("cannot read");
      if (r == 0) break;
      got += static_cast<std::size_t>(r);
    }
    return got;
  }

 private:
  int fd_;
  std::string path_;
};

// CRC32C of the whole file, with the header's CRC field read as zeros.
std::uint32_t file_crc(const Fd& fd, Header header, std::uint64_t size) {
  put_le<std::uint32_t>(header, kCrcAt, 0);
  std::uint32_t crc = crc32c(header.data(), header.size());
  std::vector<unsigned char> buf(std::size_t{4} << 20);
  for (std::uint64_t at = header.size(); at < size;) {
    const std::size_t got = fd.pread_full(buf.data(), buf.size(), at);
    if (got == 0) break;
    crc = crc32c(buf.data(), got, crc);
    at += got;
  }
  return crc;
}

}  // namespace

void token_dataset_seal(const std::string& file) {
  const Fd fd(file, O_RDWR);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fd.fail("cannot stat");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  Header header{};
  if (size < header.size() || fd.pread_full(header.data(), header.size(), 0) != header.size() ||
      std::any_of(header.begin(), header.end(), [](unsigned char c) { return c != 0; }))
    throw DataError("token dataset '" + file + "' was not created with an empty " +
                    std::to_string(kTokenDatasetUserBlock) + "-byte user block");
  std::memcpy(header.data(), kMagic, sizeof kMagic);
  put_le<std::uint32_t>(header, kVersionAt, kHeaderVersion);
  put_le<std::uint32_t>(header, kBlockAt, static_cast<std::uint32_t>(kTokenDatasetUserBlock));
  put_le<std::uint64_t>(header, kSizeAt, size);
  put_le<std::uint32_t>(header, kCrcAt, file_crc(fd, header, size));
  std::size_t put = 0;
  while (put < header.size()) {
    const ssize_t w = ::pwrite(fd.get(), header.data() + put, header.size() - put, static_cast<off_t>(put));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) fd.fail("cannot write");
    put += static_cast<std::size_t>(w);
  }
}

TokenDatasetChecksum token_dataset_verify(const std::string& file, bool read_through) {
  const auto damaged = [&](const std::string& what) {
    return DataError("token dataset '" + file + "' is damaged: " + what, kDamagedHint);
  };
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
    const Fd fd(file, O_RDONLY | O_NONBLOCK);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) fd.fail("cannot stat");
    if (!S_ISREG(st.st_mode))
      throw DataError("token dataset '" + file + "' is not a regular file",
                      "point --data.path at a file or directory written by `ranktune prepare`");
    const auto size = static_cast<std::uint64_t>(st.st_size);
    Header header{};
    const std::size_t got = fd.pread_full(header.data(), header.size(), 0);
    if (got >= sizeof kHdf5Signature && std::memcmp(header.data(), kHdf5Signature, sizeof kHdf5Signature) == 0)
      return TokenDatasetChecksum::absent;
    if (got < header.size() || std::memcmp(header.data(), kMagic, sizeof kMagic) != 0)
      throw DataError("token dataset '" + file +
                          "' is not a ranktune token dataset, or its header is damaged (it starts with neither "
                          "`ranktune-tokens` nor the HDF5 signature)",
                      kDamagedHint);
    const auto version = get_le<std::uint32_t>(header, kVersionAt);
    const auto block = get_le<std::uint32_t>(header, kBlockAt);
    if (version != kHeaderVersion || block != kTokenDatasetUserBlock)
      throw damaged("its header says version " + std::to_string(version) + " with a " + std::to_string(block) +
                    "-byte user block, this build reads version " + std::to_string(kHeaderVersion) + " with " +
                    std::to_string(kTokenDatasetUserBlock) + " (or a newer ranktune wrote it)");
    const auto recorded_size = get_le<std::uint64_t>(header, kSizeAt);
    if (recorded_size != size)
      throw damaged("it is " + std::to_string(size) + " bytes, `ranktune prepare` wrote " +
                    std::to_string(recorded_size) + " (truncated, appended to or replaced)");
    if (!read_through) return TokenDatasetChecksum::header_only;
    const auto recorded_crc = get_le<std::uint32_t>(header, kCrcAt);
    const std::uint32_t crc = file_crc(fd, header, size);
    if (crc != recorded_crc)
      throw damaged("its CRC32C is " + hex32(crc) + ", `ranktune prepare` wrote " + hex32(recorded_crc) +
                    " (changed after it was written)");
    return TokenDatasetChecksum::verified;
  } catch (const std::system_error& e) {
    throw DataError(std::string("token dataset: ") + e.what(), "check that the file exists and is readable");
  }
}

}  // namespace ranktune

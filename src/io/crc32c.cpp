// CRC32C (reflected polynomial 0x82F63B78): slicing-by-8 tables in software, the crc32 instruction on x86-64.
#include "ranktune/io/crc32c.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <vector>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace ranktune {
namespace {

constexpr std::uint32_t kPoly = 0x82F63B78u;

constexpr std::array<std::array<std::uint32_t, 256>, 8> make_tables() {
  std::array<std::array<std::uint32_t, 256>, 8> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1u) ? kPoly : 0u);
    t[0][i] = c;
  }
  for (std::size_t s = 1; s < 8; ++s)
    for (std::uint32_t i = 0; i < 256; ++i) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  return t;
}
constexpr auto kTables = make_tables();

std::uint32_t crc_software(const unsigned char* p, std::size_t n, std::uint32_t c) {
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    w ^= c;  // little-endian: the running CRC meets the first four bytes
    c = kTables[7][w & 0xFF] ^ kTables[6][(w >> 8) & 0xFF] ^ kTables[5][(w >> 16) & 0xFF] ^
        kTables[4][(w >> 24) & 0xFF] ^ kTables[3][(w >> 32) & 0xFF] ^ kTables[2][(w >> 40) & 0xFF] ^
        kTables[1][(w >> 48) & 0xFF] ^ kTables[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xFF];
  return c;
}

#if defined(__x86_64__)
// The crc32 instruction gives one result per cycle but each takes three: one dependent chain runs at a third of the
// instruction's speed (~5 GB/s, the whole CRC32C pass of a checkpoint). Three chains over adjacent blocks of kBlock
// bytes run side by side, and the three block CRCs are joined after: running a CRC state through kBlock zero bytes is
// a linear map of its 32 bits, tabulated per state byte, so crc(A B) = zeros(crc(A)) ^ crc_from_0(B).
constexpr std::size_t kBlock = 8192;

using ShiftTables = std::array<std::array<std::uint32_t, 256>, 4>;

const ShiftTables& shift_tables() {
  static const ShiftTables t = [] {
    const std::vector<unsigned char> zeros(kBlock, 0);
    std::array<std::uint32_t, 32> basis{};  // the map's image of each single bit of the state
    for (int bit = 0; bit < 32; ++bit) basis[bit] = crc_software(zeros.data(), zeros.size(), 1u << bit);
    ShiftTables out{};
    for (int k = 0; k < 4; ++k)
      for (std::uint32_t b = 0; b < 256; ++b)
        for (int bit = 0; bit < 8; ++bit)
          if (b & (1u << bit)) out[k][b] ^= basis[8 * k + bit];
    return out;
  }();
  return t;
}

std::uint32_t shift_block(const ShiftTables& t, std::uint32_t c) {
  return t[0][c & 0xFF] ^ t[1][(c >> 8) & 0xFF] ^ t[2][(c >> 16) & 0xFF] ^ t[3][c >> 24];
}

__attribute__((target("sse4.2"))) std::uint32_t crc_hardware(const unsigned char* p, std::size_t n, std::uint32_t c) {
  if (n >= 3 * kBlock) {
    const ShiftTables& t = shift_tables();
    while (n >= 3 * kBlock) {
      std::uint64_t a = c, b = 0, d = 0;
      for (std::size_t i = 0; i < kBlock; i += 8) {
        std::uint64_t wa, wb, wd;
        std::memcpy(&wa, p + i, 8);
        std::memcpy(&wb, p + kBlock + i, 8);
        std::memcpy(&wd, p + 2 * kBlock + i, 8);
        a = _mm_crc32_u64(a, wa);
        b = _mm_crc32_u64(b, wb);
        d = _mm_crc32_u64(d, wd);
      }
      c = shift_block(t, static_cast<std::uint32_t>(a)) ^ static_cast<std::uint32_t>(b);
      c = shift_block(t, c) ^ static_cast<std::uint32_t>(d);
      p += 3 * kBlock;
      n -= 3 * kBlock;
    }
  }
  std::uint64_t c64 = c;
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    c64 = _mm_crc32_u64(c64, w);
    p += 8;
    n -= 8;
  }
  c = static_cast<std::uint32_t>(c64);
  while (n--) c = _mm_crc32_u8(c, *p++);
  return c;
}
bool have_hardware() {
  static const bool yes = __builtin_cpu_supports("sse4.2");
  return yes;
}
#endif

}  // namespace

std::uint32_t crc32c(const void* data, std::size_t n, std::uint32_t crc) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint32_t c = ~crc;
#if defined(__x86_64__)
  if (have_hardware()) return ~crc_hardware(p, n, c);
#endif
  return ~crc_software(p, n, c);
}

std::uint32_t crc32c_table(const void* data, std::size_t n, std::uint32_t crc) {
  return ~crc_software(static_cast<const unsigned char*>(data), n, ~crc);
}

FileDigest crc32c_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "cannot open '" + path.string() + "'");
  FileDigest d;
  std::vector<unsigned char> buf(std::size_t{4} << 20);
  while (true) {
    const ssize_t got = ::read(fd, buf.data(), buf.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw std::system_error(err, std::generic_category(), "cannot read '" + path.string() + "'");
    }
    if (got == 0) break;
    d.crc32c = crc32c(buf.data(), static_cast<std::size_t>(got), d.crc32c);
    d.size += static_cast<std::uint64_t>(got);
  }
  ::close(fd);
  return d;
}

}  // namespace ranktune

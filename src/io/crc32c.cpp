// CRC32C (reflected polynomial 0x82F63B78): slicing-by-8 tables in software, the crc32 instruction on x86-64.
#include "ranktune/io/crc32c.h"

#include <ATen/Parallel.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <vector>

#include "ranktune/core/parallel_range.h"

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

// Running a CRC state through zero bytes is linear over GF(2): a map held as the images of the state's 32 bits.
using Gf2Map = std::array<std::uint32_t, 32>;
std::uint32_t gf2_apply(const Gf2Map& m, std::uint32_t x) {
  std::uint32_t y = 0;
  for (int bit = 0; x != 0; ++bit, x >>= 1)
    if (x & 1u) y ^= m[bit];
  return y;
}
Gf2Map gf2_then(const Gf2Map& first, const Gf2Map& second) {  // second after first
  Gf2Map out{};
  for (int bit = 0; bit < 32; ++bit) out[bit] = gf2_apply(second, first[bit]);
  return out;
}

// The map of `n` more zero bytes on the state: crc(A B) = zeros(crc(A), |B|) ^ crc_from_0(B), which joins the CRCs
// of a file's segments computed apart.
Gf2Map zeros_map(std::uint64_t n) {
  Gf2Map power{}, out{};  // power: 1, 2, 4, ... zero bytes as n's bits are walked; out starts as the identity
  const unsigned char zero = 0;
  for (int bit = 0; bit < 32; ++bit) power[bit] = crc_software(&zero, 1, 1u << bit), out[bit] = 1u << bit;
  for (; n != 0; n >>= 1) {
    if (n & 1u) out = gf2_then(out, power);
    if (n > 1) power = gf2_then(power, power);
  }
  return out;
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
    const Gf2Map basis = zeros_map(kBlock);  // the map's image of each single bit of the state
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

// The raw CRC state (no inversions) continued over n bytes.
std::uint32_t crc_raw(const unsigned char* p, std::size_t n, std::uint32_t c) {
#if defined(__x86_64__)
  if (have_hardware()) return crc_hardware(p, n, c);
#endif
  return crc_software(p, n, c);
}

}  // namespace

std::uint32_t crc32c(const void* data, std::size_t n, std::uint32_t crc) {
  return ~crc_raw(static_cast<const unsigned char*>(data), n, ~crc);
}

std::uint32_t crc32c_table(const void* data, std::size_t n, std::uint32_t crc) {
  return ~crc_software(static_cast<const unsigned char*>(data), n, ~crc);
}

std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t size_b) {
  // crc(A B) inverts the state before A and after B; crc_b's own inversions cancel against those of a start from 0.
  return gf2_apply(zeros_map(size_b), crc_a) ^ crc_b;
}

FileDigest crc32c_file(const std::filesystem::path& path, int threads) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "cannot open '" + path.string() + "'");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw std::system_error(err, std::generic_category(), "cannot stat '" + path.string() + "'");
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  // Segments of at least kSegment bytes, one run of reads each; each thread CRCs its segments from a zero state and
  // the results are joined in file order.
  constexpr std::uint64_t kSegment = std::uint64_t{64} << 20, kRead = std::uint64_t{4} << 20;
  const std::int64_t segments = static_cast<std::int64_t>(std::max<std::uint64_t>(1, (size + kSegment - 1) / kSegment));
  std::vector<std::uint32_t> raw(static_cast<std::size_t>(segments), 0);
  std::vector<int> errors(static_cast<std::size_t>(segments), 0);
  parallel_range(segments, 1, threads, [&](std::int64_t first, std::int64_t end) {
    std::vector<unsigned char> buf(kRead);
    for (std::int64_t s = first; s < end; ++s) {
      std::uint64_t at = static_cast<std::uint64_t>(s) * kSegment;
      const std::uint64_t stop = std::min(size, at + kSegment);
      std::uint32_t c = 0;
      while (at < stop) {
        const ssize_t got = ::pread(fd, buf.data(), std::min(kRead, stop - at), static_cast<off_t>(at));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
          errors[static_cast<std::size_t>(s)] = got < 0 ? errno : EIO;  // 0: the file shrank while read
          break;
        }
        c = crc_raw(buf.data(), static_cast<std::size_t>(got), c);
        at += static_cast<std::uint64_t>(got);
      }
      raw[static_cast<std::size_t>(s)] = c;
    }
  });
  // Past its size: the file grew while read, and its digest would not be the one a reader finds.
  unsigned char extra = 0;
  const ssize_t more = ::pread(fd, &extra, 1, static_cast<off_t>(size));
  ::close(fd);
  for (const int err : errors)
    if (err != 0) throw std::system_error(err, std::generic_category(), "cannot read '" + path.string() + "'");
  if (more > 0)
    throw std::system_error(EIO, std::generic_category(), "'" + path.string() + "' grew while its CRC32C was read");
  static const Gf2Map segment_zeros = zeros_map(kSegment);
  std::uint32_t state = ~0u;
  for (std::int64_t s = 0; s < segments; ++s) {
    const std::uint64_t begin = static_cast<std::uint64_t>(s) * kSegment, n = std::min(size, begin + kSegment) - begin;
    state = gf2_apply(n == kSegment ? segment_zeros : zeros_map(n), state) ^ raw[static_cast<std::size_t>(s)];
  }
  return FileDigest{size, ~state};
}

FileDigest crc32c_file(const std::filesystem::path& path) { return crc32c_file(path, at::get_num_threads()); }

}  // namespace ranktune

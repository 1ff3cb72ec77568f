// defines: crc32c (the Castagnoli CRC of RFC 3720, the checksum of every checkpoint file in its manifest) over
// memory and over a file's bytes, and the join of two CRCs. Uses the SSE4.2 crc32 instruction where the CPU has it, a
// table otherwise; both give the same value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>

namespace ranktune {

// Continues `crc` (0 to start) over n bytes; crc32c("123456789") == 0xE3069283.
std::uint32_t crc32c(const void* data, std::size_t n, std::uint32_t crc = 0);

// The table implementation alone, so tests can hold both paths to the same vectors.
std::uint32_t crc32c_table(const void* data, std::size_t n, std::uint32_t crc = 0);

struct FileDigest {
  std::uint64_t size = 0;
  std::uint32_t crc32c = 0;
};
// Reads the whole file, in segments of 64 MiB spread over `threads` threads (the rank's intra-op thread count by
// default) whose CRCs are joined in order. Throws std::system_error naming the path when it cannot be opened or read,
// or changed size while read.
FileDigest crc32c_file(const std::filesystem::path& path, int threads);
FileDigest crc32c_file(const std::filesystem::path& path);

// The CRC32C of A followed by B from crc32c(A), crc32c(B) and B's size.
std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t size_b);

}  // namespace ranktune

// defines: crc32c (the Castagnoli CRC of RFC 3720, the checksum of every checkpoint file in its manifest) over
// memory and over a file's bytes. Uses the SSE4.2 crc32 instruction where the CPU has it, a table otherwise;
// both give the same value.
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
// Reads the whole file. Throws std::system_error naming the path when it cannot be opened or read.
FileDigest crc32c_file(const std::filesystem::path& path);

}  // namespace ranktune

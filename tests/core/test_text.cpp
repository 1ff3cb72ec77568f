// trim's blank set and the two byte formatters, whose output messages and tests match on.
#include <gtest/gtest.h>

#include <cstdint>

#include "ranktune/core/text.h"

namespace ranktune {
namespace {

TEST(Text, TrimBlanks) {
  EXPECT_EQ(trim("  q_proj\t"), "q_proj");
  EXPECT_EQ(trim("key = value\r"), "key = value");  // a CRLF file's line
  EXPECT_EQ(trim("\n 70GiB \n"), "70GiB");
  EXPECT_EQ(trim(" \t\r\n"), "");
  EXPECT_EQ(trim(""), "");
  EXPECT_EQ(trim("a b"), "a b");      // inner blanks stay
  EXPECT_EQ(trim("\fx\v"), "\fx\v");  // form feed and vertical tab are not blanks here
  EXPECT_EQ(trim("--x--", "-"), "x");
}

TEST(Text, FormatBytesIsAlwaysGiB) {
  constexpr std::int64_t GiB = 1024LL * 1024 * 1024;
  EXPECT_EQ(format_bytes(80 * GiB), "80.0 GiB");
  EXPECT_EQ(format_bytes(0), "0.0 GiB");
  EXPECT_EQ(format_bytes(512), "0.0 GiB");
  EXPECT_EQ(format_bytes(static_cast<std::int64_t>(79.14 * GiB)), "79.1 GiB");
  EXPECT_EQ(format_bytes(-1), "?");
}

TEST(Text, FormatBytesScaledPicksTheUnit) {
  EXPECT_EQ(format_bytes_scaled(0), "0 B");
  EXPECT_EQ(format_bytes_scaled(1023), "1023 B");
  EXPECT_EQ(format_bytes_scaled(1024), "1.0 KiB");
  EXPECT_EQ(format_bytes_scaled(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes_scaled(3355443), "3.2 MiB");
  EXPECT_EQ(format_bytes_scaled(80ULL << 30), "80.0 GiB");
  EXPECT_EQ(format_bytes_scaled(3ULL << 50), "3072.0 TiB");  // TiB is the largest unit
}

}  // namespace
}  // namespace ranktune

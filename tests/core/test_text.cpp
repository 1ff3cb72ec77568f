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

TEST(Text, LeadingSentencesOfTheFirstLine) {
  const char* torch =
      "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB. If "
      "reserved but unallocated memory is large try setting it.\nException raised from malloc";
  EXPECT_EQ(leading_sentences(torch, 2), "CUDA out of memory. Tried to allocate 2.00 GiB.");
  EXPECT_EQ(leading_sentences(torch, 1), "CUDA out of memory.");
  EXPECT_EQ(leading_sentences("one line, no stop\nsecond", 2), "one line, no stop");
  EXPECT_EQ(leading_sentences("A. B.", 2), "A. B.");  // fewer sentences than asked: the whole line
  EXPECT_EQ(leading_sentences("", 2), "");
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

// defines: trim, with one documented set of blanks for every caller (INI lines, comma lists, memory sizes),
// leading_sentences (the start of a library's long message), and the
// two byte formatters: format_bytes, always GiB ("79.1 GiB", what the planner, the mode rules and the topology table
// print, so their numbers line up), and format_bytes_scaled, in the largest binary unit that keeps the number >= 1
// ("512 B", "3.2 MiB", what checkpoint verify/inspect print for files of any size).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ranktune {

// Space, tab, CR and LF: what a hand-edited INI line (a CRLF file leaves its CR) or a shell-quoted list can carry
// around a value. Not \f or \v, and no Unicode spaces (chat templates have their own Python-compatible strip).
inline constexpr std::string_view kBlanks = " \t\r\n";

// `s` without leading and trailing characters of `blanks`; empty when it holds nothing else.
std::string trim(std::string_view s, std::string_view blanks = kBlanks);

// The first `n` sentences of the first line of `text` (a sentence ends at ". "): "CUDA out of memory. Tried to
// allocate 2.00 GiB." of LibTorch's allocator paragraph. The whole first line when it has fewer.
std::string leading_sentences(std::string_view text, int n);

// "80.0 GiB" (one decimal, GiB whatever the size); "?" for a negative (unknown) size.
std::string format_bytes(std::int64_t bytes);

// "512 B", "1.5 KiB", "3.2 MiB", ... "1.1 TiB": B without decimals, the larger units with one.
std::string format_bytes_scaled(std::uint64_t bytes);

}  // namespace ranktune

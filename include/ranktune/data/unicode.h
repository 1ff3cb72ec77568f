// defines: UTF-8 decoding/encoding and the three Unicode classes the tokenizer pre-splits use (\p{L}, \p{N}, \s as
// Oniguruma defines them for UTF-8, which is what HF `tokenizers` runs its regexes with).
// Tokenizers must see exactly the characters HF sees, so invalid UTF-8 is an error, never silently replaced.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace ranktune {

// One decoded code point and the number of bytes it took.
struct Utf8Char {
  char32_t cp = 0;
  std::size_t len = 0;
};

// Decodes the code point starting at s[pos]. Throws DataError naming the byte offset on invalid UTF-8.
Utf8Char utf8_decode(std::string_view s, std::size_t pos);

// Length of the UTF-8 sequence announced by a lead byte (1 for a stray continuation byte).
std::size_t utf8_len(unsigned char lead);

// Throws DataError (with `what` as the subject) unless s is valid UTF-8.
void utf8_validate(std::string_view s, std::string_view what);

void utf8_append(std::string& out, char32_t cp);

// s as one printable line, for a log: every byte that is not part of valid UTF-8 as \xNN, control characters as
// \n, \r, \t or \xNN, and `\` and `"` escaped, so that the escapes read back unambiguously (a C string literal's).
std::string utf8_escape(std::string_view s);

// The Unicode version of the L and N tables: HF tokenizers 0.23's Oniguruma is 16.0.0, so a letter or digit added
// in 15.0 or 16.0 splits as HF splits it (src/data/make_unicode_tables.py).
std::string_view unicode_tables_version();

bool unicode_is_letter(char32_t cp);  // general category L*
bool unicode_is_number(char32_t cp);  // general category N*
bool unicode_is_space(char32_t cp);   // \s: U+0009-000D, U+0085 and categories Zs, Zl, Zp

}  // namespace ranktune

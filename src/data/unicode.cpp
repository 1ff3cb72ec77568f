// UTF-8 and the category lookups (binary search over generated ranges, ASCII answered directly).
#include "ranktune/data/unicode.h"

#include <algorithm>
#include <cstdio>
#include <iterator>

#include "ranktune/data/data_error.h"

namespace ranktune {
namespace {

struct CodeRange {
  char32_t lo;
  char32_t hi;
};

#include "unicode_tables.inc"

template <std::size_t N>
bool in_ranges(const CodeRange (&table)[N], char32_t cp) {
  auto it =
      std::upper_bound(std::begin(table), std::end(table), cp, [](char32_t c, const CodeRange& r) { return c < r.lo; });
  return it != std::begin(table) && cp <= std::prev(it)->hi;
}

[[noreturn]] void bad_utf8(std::size_t pos) {
  throw DataError("invalid UTF-8 at byte " + std::to_string(pos),
                  "convert the text to UTF-8 (iconv -f <encoding> -t UTF-8)");
}

}  // namespace

std::size_t utf8_len(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

Utf8Char utf8_decode(std::string_view s, std::size_t pos) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) return {b0, 1};
  std::size_t len = 0;
  char32_t cp = 0;
  if ((b0 >> 5) == 0x6) {
    len = 2, cp = b0 & 0x1F;
  } else if ((b0 >> 4) == 0xE) {
    len = 3, cp = b0 & 0x0F;
  } else if ((b0 >> 3) == 0x1E) {
    len = 4, cp = b0 & 0x07;
  } else {
    bad_utf8(pos);
  }
  if (pos + len > s.size()) bad_utf8(pos);
  for (std::size_t i = 1; i < len; ++i) {
    const auto b = static_cast<unsigned char>(s[pos + i]);
    if ((b >> 6) != 0x2) bad_utf8(pos);
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) bad_utf8(pos);
  return {cp, len};
}

void utf8_validate(std::string_view s, std::string_view what) {
  try {
    for (std::size_t i = 0; i < s.size(); i += utf8_decode(s, i).len) {
    }
  } catch (const DataError& e) {
    throw DataError(std::string(what) + ": " + e.what(), e.hint());
  }
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string utf8_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  char hex[5];
  for (std::size_t i = 0; i < s.size();) {
    Utf8Char c;
    try {
      c = utf8_decode(s, i);
    } catch (const DataError&) {  // a log line, not a hot path: the decoder's own verdict, not a second copy of it
      std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(s[i]));
      out += hex;
      ++i;
      continue;
    }
    if (c.cp == '\\' || c.cp == '"') {
      out += '\\';
      out += static_cast<char>(c.cp);
    } else if (c.cp == '\n') {
      out += "\\n";
    } else if (c.cp == '\r') {
      out += "\\r";
    } else if (c.cp == '\t') {
      out += "\\t";
    } else if (c.cp < 0x20 || c.cp == 0x7F) {
      std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned>(c.cp));
      out += hex;
    } else {
      out.append(s, i, c.len);
    }
    i += c.len;
  }
  return out;
}

std::string_view unicode_tables_version() { return kUnicodeVersion; }

bool unicode_is_letter(char32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_ranges(kLetterRanges, cp);
}

bool unicode_is_number(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(kNumberRanges, cp);
}

bool unicode_is_space(char32_t cp) {
  switch (cp) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000: return true;
    default: return cp >= 0x2000 && cp <= 0x200A;
  }
}

}  // namespace ranktune

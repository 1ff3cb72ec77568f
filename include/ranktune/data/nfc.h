// defines: Unicode normalization form C (UAX #15) of UTF-8 text, for the NFC normalizer of HF tokenizer.json files
// (Qwen2/Qwen2.5). The tables are those of HF `tokenizers` (Unicode 9.0, see src/data/make_unicode_tables.py), so a
// character assigned later passes through unchanged, as in HF.
#pragma once

#include <string>
#include <string_view>

namespace ranktune {

// NFC of valid UTF-8 text (throws DataError on invalid UTF-8). Text that passes nfc_quick_check (ASCII, most
// already-composed text) is returned as given: moved, not copied.
std::string nfc_normalize(std::string text);

// True when the text is certainly NFC already: no character whose NFC quick check is No or Maybe, and the
// combining classes of each run of combining marks never decrease.
bool nfc_quick_check(std::string_view text);

// Canonical combining class (0 for starters and for characters the tables do not know).
int unicode_combining_class(char32_t cp);

}  // namespace ranktune

// NFC as UAX #15 states it: full canonical decomposition (table-driven, Hangul by arithmetic), canonical ordering
// of each run of combining marks, then canonical composition of every unblocked pair. Text that passes the quick
// check skips all three.
#include "ranktune/data/nfc.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <tuple>
#include <vector>

#include "ranktune/data/unicode.h"

namespace ranktune {
namespace {

struct CodeRange {
  char32_t lo;
  char32_t hi;
};
struct CombiningClassRange {
  char32_t lo;
  char32_t hi;
  std::uint8_t ccc;
};
struct Decomposition {
  char32_t cp;
  char32_t first;
  char32_t second;  // 0: a singleton
};
struct Composition {
  char32_t first;
  char32_t second;
  char32_t composed;
};

#include "nfc_tables.inc"

// Every character below U+0300 is a starter whose quick check is Yes.
constexpr char32_t kFirstCombining = 0x300;

// Hangul syllables (Unicode ch. 3.12): S = SBase + (L * VCount + V) * TCount + T.
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kSCount = kLCount * kVCount * kTCount;

struct Char {
  char32_t cp;
  int ccc;
};

bool quick_check_not_yes(char32_t cp) {
  auto it = std::upper_bound(std::begin(kNfcQuickCheckNotYes), std::end(kNfcQuickCheckNotYes), cp,
                             [](char32_t c, const CodeRange& r) { return c < r.lo; });
  return it != std::begin(kNfcQuickCheckNotYes) && cp <= std::prev(it)->hi;
}

void decompose(char32_t cp, std::vector<Char>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back({kLBase + s / (kVCount * kTCount), 0});
    out.push_back({kVBase + (s % (kVCount * kTCount)) / kTCount, 0});
    if (s % kTCount != 0) out.push_back({kTBase + s % kTCount, 0});
    return;
  }
  auto it = std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), cp,
                             [](const Decomposition& d, char32_t c) { return d.cp < c; });
  if (it == std::end(kDecompositions) || it->cp != cp) {
    out.push_back({cp, unicode_combining_class(cp)});
    return;
  }
  decompose(it->first, out);
  if (it->second != 0) decompose(it->second, out);
}

// The primary composite of a + b, or 0 when there is none.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  auto it = std::lower_bound(std::begin(kCompositions), std::end(kCompositions), std::make_pair(a, b),
                             [](const Composition& c, const std::pair<char32_t, char32_t>& k) {
                               return std::tie(c.first, c.second) < std::tie(k.first, k.second);
                             });
  return it != std::end(kCompositions) && it->first == a && it->second == b ? it->composed : 0;
}

// Stable sort of each maximal run of non-starters by combining class.
void canonical_order(std::vector<Char>& cs) {
  for (auto run = cs.begin(); run != cs.end();) {
    run = std::find_if(run, cs.end(), [](const Char& c) { return c.ccc != 0; });
    auto end = std::find_if(run, cs.end(), [](const Char& c) { return c.ccc == 0; });
    std::stable_sort(run, end, [](const Char& x, const Char& y) { return x.ccc < y.ccc; });
    run = end;
  }
}

// C composes with the last starter S unless blocked: some character between them is a starter or has a class
// >= C's. After ordering, only the last character kept since S needs checking.
void canonical_compose(std::vector<Char>& cs) {
  std::size_t starter = cs.size(), kept = 0;
  int last_ccc = -1;  // class of the last character kept after the starter; -1: none (C is adjacent)
  for (const Char& c : cs) {
    if (starter != cs.size() && (last_ccc == -1 || (last_ccc != 0 && last_ccc < c.ccc))) {
      if (const char32_t composed = compose(cs[starter].cp, c.cp)) {
        cs[starter].cp = composed;
        continue;
      }
    }
    if (c.ccc == 0) {
      starter = kept;
      last_ccc = -1;
    } else {
      last_ccc = c.ccc;
    }
    cs[kept++] = c;
  }
  cs.resize(kept);
}

}  // namespace

int unicode_combining_class(char32_t cp) {
  if (cp < kFirstCombining) return 0;
  auto it = std::upper_bound(std::begin(kCombiningClasses), std::end(kCombiningClasses), cp,
                             [](char32_t c, const CombiningClassRange& r) { return c < r.lo; });
  return it != std::begin(kCombiningClasses) && cp <= std::prev(it)->hi ? std::prev(it)->ccc : 0;
}

bool nfc_quick_check(std::string_view text) {
  int last_ccc = 0;
  for (std::size_t i = 0; i < text.size();) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      last_ccc = 0;
      ++i;
      continue;
    }
    const Utf8Char c = utf8_decode(text, i);
    i += c.len;
    if (c.cp < kFirstCombining) {
      last_ccc = 0;
      continue;
    }
    const int ccc = unicode_combining_class(c.cp);
    if ((ccc != 0 && last_ccc > ccc) || quick_check_not_yes(c.cp)) return false;
    last_ccc = ccc;
  }
  return true;
}

std::string nfc_normalize(std::string text) {
  if (nfc_quick_check(text)) return text;
  std::vector<Char> cs;
  cs.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const Utf8Char c = utf8_decode(text, i);
    decompose(c.cp, cs);
    i += c.len;
  }
  canonical_order(cs);
  canonical_compose(cs);
  std::string out;
  out.reserve(text.size());
  for (const Char& c : cs) utf8_append(out, c.cp);
  return out;
}

}  // namespace ranktune

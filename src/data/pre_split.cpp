// Each alternative of the patterns below is tried in order at the current position, with the backtracking outcome
// of Oniguruma worked out per alternative (see the comments on the whitespace ones).
#include "ranktune/data/pre_split.h"

#include <array>
#include <cstdint>
#include <string>

#include "ranktune/data/unicode.h"

namespace ranktune {
namespace {

constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The classes of each character, found once per character: the alternatives below test them many times over.
enum : std::uint8_t { kLetter = 1, kNumber = 2, kSpace = 4, kNewline = 8 };

std::uint8_t classify(char32_t cp) {
  return static_cast<std::uint8_t>((unicode_is_letter(cp) ? kLetter : 0) | (unicode_is_number(cp) ? kNumber : 0) |
                                   (unicode_is_space(cp) ? kSpace : 0) | (cp == '\r' || cp == '\n' ? kNewline : 0));
}

const std::array<std::uint8_t, 128> kAsciiClass = [] {
  std::array<std::uint8_t, 128> t{};
  for (char32_t c = 0; c < 128; ++c) t[c] = classify(c);
  return t;
}();

std::uint8_t class_of(char32_t cp) { return cp < 0x80 ? kAsciiClass[cp] : classify(cp); }

class Splitter {
 public:
  Splitter(PreSplit kind, std::string_view text) : kind_(kind), text_(text) {
    cps_.reserve(text.size());
    cls_.reserve(text.size());
    offs_.reserve(text.size() + 1);
    for (std::size_t i = 0; i < text.size();) {
      const auto b = static_cast<unsigned char>(text[i]);
      const Utf8Char c = b < 0x80 ? Utf8Char{b, 1} : utf8_decode(text, i);
      cps_.push_back(c.cp);
      cls_.push_back(class_of(c.cp));
      offs_.push_back(i);
      i += c.len;
    }
    offs_.push_back(text.size());
  }

  std::vector<std::string_view> run() {
    std::vector<std::string_view> out;
    const std::size_t n = cps_.size();
    for (std::size_t i = 0; i < n;) {
      const std::size_t j = match(i);
      out.push_back(text_.substr(offs_[i], offs_[j] - offs_[i]));
      i = j;
    }
    return out;
  }

 private:
  bool has(std::size_t i, std::uint8_t cls) const { return i < cls_.size() && (cls_[i] & cls) != 0; }
  bool letter(std::size_t i) const { return has(i, kLetter); }
  bool number(std::size_t i) const { return has(i, kNumber); }
  bool space(std::size_t i) const { return has(i, kSpace); }
  bool newline(std::size_t i) const { return has(i, kNewline); }
  bool other(std::size_t i) const { return i < cls_.size() && (cls_[i] & (kLetter | kNumber | kSpace)) == 0; }
  bool is(std::size_t i, char32_t c) const { return i < cps_.size() && cps_[i] == c; }

  template <class Pred>
  std::size_t run_of(std::size_t i, Pred pred) const {
    while (i < cps_.size() && pred(i)) ++i;
    return i;
  }

  // 's 't 're 've 'm 'll 'd; case-insensitive for llama3/qwen2 (Oniguruma folds U+017F LONG S to 's').
  std::size_t contraction(std::size_t i) const {
    if (!is(i, '\'')) return 0;
    const bool fold = kind_ != PreSplit::gpt2;
    auto eq = [&](std::size_t k, char lower) {
      if (k >= cps_.size()) return false;
      const char32_t c = cps_[k];
      if (c == static_cast<char32_t>(lower)) return true;
      if (!fold) return false;
      return c == static_cast<char32_t>(lower - 'a' + 'A') || (lower == 's' && c == 0x17F);
    };
    if (eq(i + 1, 's') || eq(i + 1, 't')) return 2;
    if ((eq(i + 1, 'r') || eq(i + 1, 'v')) && eq(i + 2, 'e')) return 3;
    if (eq(i + 1, 'm')) return 2;
    if (eq(i + 1, 'l') && eq(i + 2, 'l')) return 3;
    if (eq(i + 1, 'd')) return 2;
    return 0;
  }

  // \s+(?!\S) then \s+: the greedy run gives back its last character when a non-space follows, unless that would
  // leave nothing, in which case plain \s+ takes the single character.
  std::size_t trailing_space(std::size_t i) const {
    const std::size_t j = run_of(i, [&](std::size_t k) { return space(k); });
    if (j == cps_.size() || j - i == 1) return j;
    return j - 1;
  }

  std::size_t match(std::size_t i) const {
    if (const std::size_t c = contraction(i)) return i + c;
    auto letters = [&](std::size_t k) { return run_of(k, [&](std::size_t m) { return letter(m); }); };
    auto numbers = [&](std::size_t k) { return run_of(k, [&](std::size_t m) { return number(m); }); };
    auto others = [&](std::size_t k) { return run_of(k, [&](std::size_t m) { return other(m); }); };

    if (kind_ == PreSplit::gpt2) {
      const std::size_t s = is(i, ' ') ? i + 1 : i;  // ` ?` is greedy; each alternative retries without the space
      if (letter(s)) return letters(s);
      if (letter(i)) return letters(i);
      if (number(s)) return numbers(s);
      if (number(i)) return numbers(i);
      if (other(s)) return others(s);
      if (other(i)) return others(i);
      return trailing_space(i);
    }

    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!newline(i) && !letter(i) && !number(i) && letter(i + 1)) return letters(i + 1);
    if (letter(i)) return letters(i);
    // \p{N}{1,3} or \p{N}
    if (number(i)) {
      const std::size_t cap = i + (kind_ == PreSplit::llama3 ? 3 : 1);
      const std::size_t j = numbers(i);
      return j < cap ? j : cap;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    const std::size_t s = is(i, ' ') && other(i + 1) ? i + 1 : i;
    if (other(s)) return run_of(others(s), [&](std::size_t k) { return newline(k); });
    // \s*[\r\n]+: the space run backtracks to its last CR/LF and ends just after it.
    const std::size_t j = run_of(i, [&](std::size_t k) { return space(k); });
    for (std::size_t k = j; k > i; --k) {
      if (newline(k - 1)) return k;
    }
    return trailing_space(i);
  }

  PreSplit kind_;
  std::string_view text_;
  std::vector<char32_t> cps_;
  std::vector<std::uint8_t> cls_;
  std::vector<std::size_t> offs_;
};

}  // namespace

const char* pre_split_name(PreSplit kind) {
  switch (kind) {
    case PreSplit::gpt2: return "gpt2";
    case PreSplit::llama3: return "llama3";
    case PreSplit::qwen2: return "qwen2";
  }
  return "?";
}

std::optional<PreSplit> pre_split_from_pattern(std::string_view regex) {
  if (regex == kGpt2Pattern) return PreSplit::gpt2;
  if (regex == kLlama3Pattern) return PreSplit::llama3;
  if (regex == kQwen2Pattern) return PreSplit::qwen2;
  return std::nullopt;
}

std::vector<std::string_view> pre_split(PreSplit kind, std::string_view text) { return Splitter(kind, text).run(); }

}  // namespace ranktune

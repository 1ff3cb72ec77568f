// Lexer. Jinja's rules (jinja2/lexer.py) with HF's environment: trim_blocks (a block or comment tag eats one
// newline after it), lstrip_blocks (spaces and tabs before a block or comment tag on its own line are dropped),
// "-" on a tag strips all whitespace on that side, "+" turns the automatic stripping off, and one newline at the
// very end of the source is dropped (keep_trailing_newline=False).
#include <charconv>
#include <cstdlib>

#include "jinja_internal.h"
#include "ranktune/data/unicode.h"

namespace ranktune::jinja_detail {

std::string normalize_newlines(std::string_view src) {
  std::string out;
  out.reserve(src.size());
  for (std::size_t i = 0; i < src.size(); ++i) {
    if (src[i] == '\r') {
      out += '\n';
      if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
    } else {
      out += src[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

namespace {

std::size_t skip_space(const std::string& s, std::size_t i) {
  while (i < s.size()) {
    const Utf8Char c = utf8_decode(s, i);
    if (!py_space(c.cp)) break;
    i += c.len;
  }
  return i;
}

bool all_space(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const Utf8Char c = utf8_decode(s, i);
    if (!py_space(c.cp)) return false;
    i += c.len;
  }
  return true;
}

bool starts(const std::string& s, std::size_t i, std::string_view what) { return s.compare(i, what.size(), what) == 0; }

// A string literal's escapes, decoded as Python's unicode-escape codec does (what Jinja applies to literals).
std::string decode_string(const Source& src, std::string_view body, std::size_t pos) {
  std::string out;
  for (std::size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 == body.size()) {
      out += body[i];
      continue;
    }
    const char e = body[++i];
    auto hex = [&](std::size_t n) {
      std::uint32_t v = 0;
      for (std::size_t k = 1; k <= n; ++k) {
        if (i + k >= body.size()) src.syntax(pos, "truncated \\x, \\u or \\U escape");
        const char h = body[i + k];
        int digit = (h >= '0' && h <= '9')   ? h - '0'
                    : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                    : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                             : -1;
        if (digit < 0) src.syntax(pos, "bad hex digit in an escape");
        v = v * 16 + static_cast<std::uint32_t>(digit);
      }
      i += n;
      if ((v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF) src.refuse(pos, "a surrogate or out-of-range \\u escape");
      utf8_append(out, static_cast<char32_t>(v));
    };
    switch (e) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'v': out += '\v'; break;
      case '\n': break;  // a backslash-newline continues the literal
      case 'x': hex(2); break;
      case 'u': hex(4); break;
      case 'U': hex(8); break;
      case 'N': src.refuse(pos, "a \\N{...} escape");
      default:
        if (e >= '0' && e <= '7') {
          std::uint32_t v = static_cast<std::uint32_t>(e - '0');
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7'; ++k)
            v = v * 8 + static_cast<std::uint32_t>(body[++i] - '0');
          utf8_append(out, static_cast<char32_t>(v));
        } else {
          out += '\\';
          out += e;
        }
    }
  }
  return out;
}

}  // namespace

bool is_digit(char c) { return c >= '0' && c <= '9'; }
namespace {

bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

// One token of a tag at s[i]; returns the position after it.
std::size_t lex_token(const Source& src, std::size_t i, std::vector<Token>& out) {
  const std::string& s = src.text;
  Token t;
  t.pos = i;
  const char c = s[i];
  if (is_digit(c)) {
    auto digits = [&](std::size_t j) {
      while (j < s.size() && (is_digit(s[j]) || (s[j] == '_' && j + 1 < s.size() && is_digit(s[j + 1])))) ++j;
      return j;
    };
    std::size_t j = digits(i);
    bool is_float = false;
    const bool after_dot = i > 0 && s[i - 1] == '.';  // Jinja: `x.0.1` is attribute access, never a float
    if (!after_dot && j + 1 < s.size() && s[j] == '.' && is_digit(s[j + 1])) {
      j = digits(j + 1);
      is_float = true;
    }
    if (!after_dot && j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
      std::size_t k = j + 1;
      if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
      if (k < s.size() && is_digit(s[k])) {
        j = digits(k);
        is_float = true;
      }
    }
    std::string lit;
    for (std::size_t k = i; k < j; ++k)
      if (s[k] != '_') lit += s[k];
    if (is_float) {
      t.type = Token::number;
      t.d = std::strtod(lit.c_str(), nullptr);
    } else {
      t.type = Token::integer;
      const auto r = std::from_chars(lit.data(), lit.data() + lit.size(), t.i);
      if (r.ec != std::errc()) src.refuse(i, "an integer literal beyond 64 bits");
    }
    out.push_back(std::move(t));
    return j;
  }
  if (is_name_start(c)) {
    std::size_t j = i;
    while (j < s.size() && is_name_char(s[j])) ++j;
    t.type = Token::name;
    t.text = s.substr(i, j - i);
    out.push_back(std::move(t));
    return j;
  }
  if (c == '\'' || c == '"') {
    std::size_t j = i + 1;
    while (j < s.size() && s[j] != c) j += s[j] == '\\' ? 2 : 1;
    if (j >= s.size()) src.syntax(i, "unterminated string literal");
    t.type = Token::string;
    t.text = decode_string(src, std::string_view(s).substr(i + 1, j - i - 1), i);
    out.push_back(std::move(t));
    return j + 1;
  }
  for (const char* op : {"//", "**", "==", "!=", ">=", "<="}) {
    if (starts(s, i, op)) {
      t.type = Token::op;
      t.text = op;
      out.push_back(std::move(t));
      return i + 2;
    }
  }
  if (std::string_view("+-*/%~<>=()[]{},.:|").find(c) != std::string_view::npos) {
    t.type = Token::op;
    t.text = std::string(1, c);
    out.push_back(std::move(t));
    return i + 1;
  }
  if (c == ';' || c == '!' || c == '@' || c == '$' || c == '?' || c == '^' || c == '&' || c == '`')
    src.syntax(i, std::string("unexpected character '") + c + "'");
  src.syntax(i, "unexpected character");
}

}  // namespace

std::vector<Chunk> lex(const Source& src) {
  const std::string& s = src.text;
  const std::size_t n = s.size();
  std::vector<Chunk> out;
  bool line_starting = true;  // did the previous match end with a newline (Jinja's `line_starting`)
  std::size_t p = 0;
  while (p < n) {
    std::size_t q = s.find('{', p);
    while (q != std::string::npos && !(q + 1 < n && (s[q + 1] == '{' || s[q + 1] == '%' || s[q + 1] == '#')))
      q = s.find('{', q + 1);
    if (q == std::string::npos) {
      out.push_back({Chunk::data, s.substr(p), {}, p});
      break;
    }
    std::string text = s.substr(p, q - p);
    const char kind = s[q + 1];
    std::size_t r = q + 2;
    char sign = 0;
    if (r < n && (s[r] == '-' || s[r] == '+')) sign = s[r++];
    if (sign == '-') {
      text = py_strip(text, false, true);
    } else if (sign != '+' && kind != '{') {
      const std::size_t nl = text.rfind('\n');
      const std::size_t l = nl == std::string::npos ? 0 : nl + 1;
      if ((l > 0 || line_starting) && l < text.size() && all_space(std::string_view(text).substr(l))) text.resize(l);
    }
    if (!text.empty()) out.push_back({Chunk::data, std::move(text), {}, p});

    if (kind == '#') {
      const std::size_t e = s.find("#}", r);
      if (e == std::string::npos) src.syntax(q, "missing end of comment tag");
      std::size_t after = e + 2;
      if (e > r && s[e - 1] == '-') {
        after = skip_space(s, after);
      } else if (!(e > r && s[e - 1] == '+') && after < n && s[after] == '\n') {
        ++after;
      }
      line_starting = s[after - 1] == '\n';
      p = after;
      continue;
    }

    if (kind == '%') {  // Jinja matches {% raw %} before any other tag: its body is never lexed
      const std::size_t w = skip_space(s, r);
      if (starts(s, w, "raw") && (w + 3 >= n || !is_name_char(s[w + 3]))) src.refuse(q, "{% raw %}");
    }
    Chunk tag{kind == '{' ? Chunk::output : Chunk::block, {}, {}, q};
    std::vector<char> brackets;
    std::size_t i = r;
    while (true) {
      i = skip_space(s, i);
      if (i >= n) src.syntax(q, kind == '{' ? "missing '}}'" : "missing '%}'");
      if (brackets.empty()) {
        std::size_t end = 0;
        if (kind == '{') {
          if (starts(s, i, "-}}")) end = skip_space(s, i + 3);
          else if (starts(s, i, "}}")) end = i + 2;
        } else {
          if (starts(s, i, "+%}")) end = i + 3;
          else if (starts(s, i, "-%}")) end = skip_space(s, i + 3);
          else if (starts(s, i, "%}")) end = i + 2 + (i + 2 < n && s[i + 2] == '\n');
        }
        if (end) {
          Token t;
          t.type = Token::end;
          t.pos = i;
          tag.tokens.push_back(std::move(t));
          line_starting = s[end - 1] == '\n';
          p = end;
          break;
        }
      }
      i = lex_token(src, i, tag.tokens);
      const Token& t = tag.tokens.back();
      if (t.type == Token::op && t.text.size() == 1) {
        const char o = t.text[0];
        if (o == '(' || o == '[' || o == '{') {
          brackets.push_back(o == '(' ? ')' : o == '[' ? ']' : '}');
        } else if (o == ')' || o == ']' || o == '}') {
          if (brackets.empty() || brackets.back() != o) src.syntax(t.pos, std::string("unexpected '") + o + "'");
          brackets.pop_back();
        }
      }
    }
    out.push_back(std::move(tag));
  }
  return out;
}

}  // namespace ranktune::jinja_detail
